import json

import pytest

from benchmarks import training_speed


def test_training_speed_quick_run_writes_its_results(tmp_path):
    results = training_speed.main(["--quick", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "training_speed_quick_cpu.json").read_text())
    assert written["variants"] == results["variants"]
    peak = results["peak_flops"]["float32"]
    for name, row in results["variants"].items():
        assert row["flops_per_image"] == _hand_count(), name
        achieved = row["flops_per_image"] * row["images_per_s"]
        assert row["fraction_of_float32_peak"] == pytest.approx(achieved / peak)
    assert (
        "| float32, channels-last |"
        in (tmp_path / "training_speed_quick_cpu.md").read_text()
    )


def _hand_count():
    """Multiply-adds x 2 of ZFNet at width 0.25, conv1 stride 1, 64x64 input, from
    its map sizes (60, 30, 13, 7, 7, 7, 7, 3): forward, then backward twice that
    (input and weight gradients) but for conv1, whose input needs no gradient."""
    convs = [  # in, kernel, out, output side
        (1, 7, 24, 60),
        (24, 5, 64, 13),
        (64, 3, 96, 7),
        (96, 3, 96, 7),
        (96, 3, 64, 7),
    ]
    conv = [2 * c * k * k * o * side * side for c, k, o, side in convs]
    linear = [2 * a * b for a, b in ((64 * 3 * 3, 1024), (1024, 1024), (1024, 10))]
    forward = sum(conv) + sum(linear)
    return 3 * forward - conv[0]
