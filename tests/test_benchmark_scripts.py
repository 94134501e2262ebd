import json

import numpy as np
import pytest
import torch

from benchmarks import deconvnet_speed, occlusion_speed


def test_deconvnet_speed_quick_run_writes_its_results(tmp_path):
    results = deconvnet_speed.main(["--quick", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "deconvnet_speed_quick_cpu.json").read_text())
    assert written["attribute"]["ratio"] == results["attribute"]["ratio"] > 0
    # The batched projections are the NeuronDeconvolution ones, scaled by the value.
    assert written["feature_maps"]["max_relative_difference"] < 1e-9
    assert (
        "| attribute, batch 8 |"
        in (tmp_path / "deconvnet_speed_quick_cpu.md").read_text()
    )


def test_occlusion_speed_quick_run_writes_its_results(tmp_path):
    results = occlusion_speed.main(["--quick", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "occlusion_speed_quick_cpu.json").read_text())
    (row,) = written["models"]["resnet18"]["occluders"]
    assert row == results["models"]["resnet18"]["occluders"][0]
    assert row["default_max_relative_difference"] < 1e-4
    assert row["full_max_relative_difference"] < 1e-4
    assert row["multiply_adds"]["limit"] > 1
    # Captum's best is the best of its sweep's run and the repeats
    assert row["repeats"] == 3
    swept = row["captum_s"][str(row["captum_best_per_eval"])]
    assert row["captum_best_s"] <= swept == min(row["captum_s"].values())
    assert row["default_first_s"] >= row["default_s"]
    table = (tmp_path / "occlusion_speed_quick_cpu.md").read_text()
    assert "| resnet18 (64) | 16/8 | 49 |" in table
    assert f"(first call {row['default_first_s']:.2f})" in table
    # rows written before the repeats existed still make a table
    del row["captum_best_s"], row["repeats"], row["default_first_s"]
    assert f"| {swept:.2f} ({row['captum_best_per_eval']}) |" in occlusion_speed.table(
        written
    )


def test_help_lists_each_scripts_own_options(capsys):
    with pytest.raises(SystemExit):
        occlusion_speed.main(["--help"])
    shown = capsys.readouterr().out
    for option in ("--models", "--occluders", "--size", "--memory", "--out"):
        assert option in shown


def test_drill_down_bound_maps_are_captums_and_interpolation_is_bilinear():
    from captum.attr import Occlusion
    from torch import nn

    from benchmarks import occlusion_drill_down_bound as bound

    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()
    images = torch.randn(2, 3, 20, 20)
    target = model(images).argmax(1).tolist()
    for stride in (4, 3):  # 3: the last positions clipped
        grid = bound.exact_drops(model, images, 8, stride)
        captum = Occlusion(model).attribute(
            images, sliding_window_shapes=(3, 8, 8), strides=stride, target=target
        )
        mine = bound.pixel_map(grid, (20, 20), 8, stride)
        assert torch.allclose(mine[:, 0], captum[:, 0].double(), atol=1e-5)
    # a plane is its own bilinear interpolation; coarse positions stay exact
    rows, cols = np.meshgrid(np.arange(7), np.arange(9), indexing="ij")
    plane = (2.0 * rows - 3.0 * cols)[None]
    guess, known = bound.interpolated(plane, 3)
    assert np.allclose(guess, plane) and known[6, 8] and known[3, 6] and not known[1, 1]
    noisy = plane + np.random.default_rng(1).normal(size=plane.shape)
    guess, known = bound.interpolated(noisy, 3)
    assert np.array_equal(guess[:, known], noisy[:, known])
    # the oracle computes first the position whose interpolation errs most
    spiked = plane.copy()
    spiked[0, 4, 4] += 10.0
    refined, computed = bound.oracle_refined(spiked, 3, 0.01)
    assert np.allclose(refined, spiked)
    assert computed == (known.sum() + 1) / known.size
