import json

import pytest

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
