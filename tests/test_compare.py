"""The benchmark's --quick run, end to end, on a tiny trained model and fake data."""

import json
import math

from PIL import Image

from benchmarks import compare

METRICS = [
    "seconds_per_image",
    "forward_equivalents",
    "forward_passes_per_image",
    "backward_passes_per_image",
    "deletion_auc",
    "insertion_auc",
    "pointing_game",
    "relevance_mass",
    "sensitivity_max",
    "infidelity",
    "sanity_final",
]


def test_quick_run_fills_every_cell_and_writes_its_files(
    tiny_demo, fake_data_dir, tmp_path
):
    checkpoint = tiny_demo[1]["checkpoint"]
    out = tmp_path / "bench"
    args = ["--quick", "--ckpt", checkpoint, "--data", str(fake_data_dir)]
    results = compare.main([*args, "--out", str(out)])

    written = json.loads((out / "results.json").read_text())
    assert written["methods"].keys() == results["methods"].keys()
    assert {"torch", "captum", "device"} <= written["environment"].keys()
    assert {"seed", "dtype", "batch"} <= written["config"].keys()
    for name, row in written["methods"].items():
        for metric in METRICS:
            assert math.isfinite(row[metric]), (name, metric, row[metric])
    # One pass without occluder, then one (partial) pass per position, like Captum.
    ours = written["methods"]["OcclusionSensitivity"]["forward_passes_per_image"]
    assert ours == written["methods"]["Occlusion"]["forward_passes_per_image"] == 362
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in written["methods"])
    for picture in ("metrics.png", "randomisation.png", "attributions.png"):
        with Image.open(out / picture) as image:
            assert image.size[0] > 100
