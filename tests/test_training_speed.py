import json

from benchmarks import training_speed


def test_training_speed_quick_run_writes_its_results(tmp_path):
    results = training_speed.main(["--quick", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "training_speed_quick_cpu.json").read_text())
    assert written["variants"] == results["variants"]
    peak = results["peak_flops"]["float32"]
    for name, row in results["variants"].items():
        # ZFNet at width 0.25, conv1 stride 1, 64x64: about 41 MFLOP forward, and
        # backward twice that (counted by hand from the map sizes: 0.12 GFLOP)
        assert 0.11e9 < row["flops_per_image"] < 0.13e9, name
        achieved = row["flops_per_image"] * row["images_per_s"]
        assert row["fraction_of_float32_peak"] == achieved / peak
    assert (
        "| float32, channels-last |"
        in (tmp_path / "training_speed_quick_cpu.md").read_text()
    )
