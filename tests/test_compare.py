"""The benchmark end to end: --quick on a tiny trained ZFNet and fake data, the ImageNet
track on a tiny stand-in network with ReLU6 (the extra's network and photos replaced),
the results schema, and what a newcomer meets."""

import json
import math
import sys

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from PIL import Image
from torch import nn

from benchmarks import compare, imagenet
from benchmarks.methods import METHODS
from benchmarks.track import HIGHER_IS_BETTER

ZFNET_METRICS = set(HIGHER_IS_BETTER) | {"pointing_game_strict"}
IMAGENET_METRICS = ZFNET_METRICS - {
    "pointing_game",
    "pointing_game_strict",
    "relevance_mass",
}
COST = {
    "seconds_per_image",
    "seconds_range",
    "forward_equivalents",
    "forward_passes_per_image",
    "backward_passes_per_image",
}


class StandIn(nn.Module):
    """EfficientNet-Lite0's shape in miniature: convolutions with ReLU6 (the deconvnet
    has no rule for it), a last conv stage, global pooling, 1000 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.block = nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 8, 1)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(8, 1000)

    def forward(self, x):
        x = self.act(self.head(self.act(self.block(self.act(self.stem(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def stand_in_photos(names, size=32):
    generator = torch.Generator().manual_seed(len(names))
    coarse = torch.rand(len(names), 3, 4, 4, generator=generator)
    return nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


@pytest.fixture(scope="module")
def quick_run(tiny_demo, fake_data_dir, tmp_path_factory):
    """``--quick`` (ZFNet and the centred pointing game), and ``--quick --model
    efficientnet-lite0`` with the network and photos replaced by stand-ins."""
    out = tmp_path_factory.mktemp("bench")
    checkpoint = tiny_demo[1]["checkpoint"]
    args = ["--quick", "--ckpt", checkpoint, "--data", str(fake_data_dir)]
    args += ["--subset", "2", "--centred-ckpt", checkpoint]
    results = compare.main([*args, "--out", str(out / "zfnet")])
    patch = pytest.MonkeyPatch()
    patch.setattr(imagenet, "load_network", lambda: StandIn().eval())
    patch.setattr(imagenet, "load_photos", stand_in_photos)
    try:
        imagenet_args = ["--quick", "--model", imagenet.MODEL]
        stand_in = compare.main([*imagenet_args, "--out", str(out / "imagenet")])
    finally:
        patch.undo()
    return out, results, stand_in


def check_metric(metric: dict, count: int) -> None:
    assert len(metric["per_image"]) == count
    assert math.isclose(metric["value"], sum(metric["per_image"]) / count, abs_tol=1e-9)
    assert metric["low"] <= metric["value"] <= metric["high"]


def check_track(track: dict, metrics: set, count: int, subset: int) -> None:
    assert track["config"]["images"] == count and track["config"]["subset"] == subset
    assert track["forward_seconds_per_image"] > 0
    steps = len(track["cascade"]["steps"])
    for name, row in track["methods"].items():
        assert COST <= row["cost"].keys(), name
        assert isinstance(row["warnings"], list)
        if "same_maps_as" in row:
            assert row["max_relative_difference"] <= 1e-4
            continue
        assert row["metrics"].keys() == metrics, name
        for key, metric in row["metrics"].items():
            size = (
                subset
                if key in ("sensitivity_max", "infidelity", "sanity_final")
                else count
            )
            check_metric(metric, size)
        seeds = track["config"]["reinit_seeds"]
        assert [len(c) for c in row["sanity"]] == [steps] * len(seeds)
        assert all(len(step) == subset for c in row["sanity"] for step in c)
    for test in track["comparisons"]:
        assert {"metric", "method", "against", "role", "better"} <= test.keys()
        assert 0 <= test["p"] <= 1 and 0 <= test["p_adjusted"] <= 1
        assert test["significant"] == (test["p_adjusted"] < 0.05)


def test_the_results_schema(quick_run):
    out, results, stand_in = quick_run
    for folder, run in (("zfnet", results), ("imagenet", stand_in)):
        written = json.loads((out / folder / "results.json").read_text())
        assert written == json.loads(json.dumps(run))
        assert {"torch", "captum", "device", "threads"} <= written["environment"].keys()
        assert written["settings"]["seed"] == 0 and written["settings"]["quick"]
        definitions = written["definitions"].keys()
        assert {"pointing_game", "relevance_mass", "LayerGradCam"} <= definitions
        assert set(written["tracks"]) == {"zfnet", imagenet.MODEL} or folder != "zfnet"
    check_track(results["tracks"]["zfnet"], ZFNET_METRICS, 8, 2)
    assert "--quick" in results["tracks"][imagenet.MODEL]["skipped"]
    check_track(stand_in["tracks"][imagenet.MODEL], IMAGENET_METRICS, 2, 2)
    centred = results["centred"]["methods"]
    assert "Occlusion" not in centred  # the same maps as OcclusionSensitivity
    for row in centred.values():
        for metric in row["metrics"].values():
            check_metric(metric, 8)
    findings = results["findings"] + stand_in["findings"]
    tracks = [f["track"] for f in findings]
    assert tracks.count("centred") == 1 and tracks.count(imagenet.MODEL) == 2
    assert tracks.count("zfnet") == 2
    for finding in findings:
        assert finding["verdict"] in {
            "reproduced",
            "not reproduced",
            "not testable here",
        }
        assert finding["why"]


def test_the_zfnet_track_counts_passes_and_shares_occlusion_maps(quick_run):
    _, results, _ = quick_run
    methods = results["tracks"]["zfnet"]["methods"]
    # One pass without occluder, then one (partial) pass per position, like Captum.
    ours = methods["OcclusionSensitivity"]["cost"]["forward_passes_per_image"]
    assert ours == methods["Occlusion"]["cost"]["forward_passes_per_image"] == 362
    assert methods["Occlusion"]["same_maps_as"] == "OcclusionSensitivity"
    assert methods["IntegratedGradients"]["cost"]["backward_passes_per_image"] == 50


def test_the_imagenet_track_reports_relu6_and_what_it_implies(quick_run):
    out, _, results = quick_run
    track = results["tracks"][imagenet.MODEL]
    assert track["config"]["gradcam_layer"] == "head"  # the last conv stage
    assert any("hardtanh" in w for w in track["methods"]["DeconvNet"]["warnings"])
    # Captum's rules act on nn.ReLU modules only: with ReLU6 both are the gradient.
    assert ["Deconvolution", "GuidedBackprop"] in track["identical_maps"]
    adebayo = [
        f
        for f in results["findings"]
        if f["track"] == imagenet.MODEL and f["source"].startswith("Adebayo")
    ]
    assert adebayo[0]["verdict"] == "not testable here"
    assert track["cascade"]["steps"][0] == "fc"
    predictions = track["config"]["predictions"]
    assert [p["photo"] for p in predictions] == ["chelsea", "coffee"]
    text = (out / "imagenet" / "results.md").read_text()
    assert "hardtanh" in text and "chelsea" in text


def test_the_report_says_what_ran_and_links_its_figures(quick_run, capsys):
    out, _, _ = quick_run
    text = (out / "zfnet" / "results.md").read_text()
    assert "Cost, robustness and sanity on the first 2 images" in text
    assert "on the first 16" not in text
    assert "| DeconvNet | ours | " in text
    assert "| Occlusion | captum | " in text and "= OcclusionSensitivity" in text
    assert "## Published findings, checked here" in text
    for folder, prefix in (("zfnet", ""), ("imagenet", f"{imagenet.MODEL}_")):
        text = (out / folder / "results.md").read_text()
        for picture in ("metrics.png", "randomisation.png", "attributions.png"):
            assert f"]({prefix}{picture})" in text
            with Image.open(out / folder / f"{prefix}{picture}") as image:
                assert image.size[0] > 100


def test_without_the_extra_the_imagenet_track_is_skipped_or_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install -e '\.\[bench\]'"):
        imagenet.load_network()
    args = compare.parse_args(["--model", imagenet.MODEL, "--out", "unused"])
    track, shown = compare._imagenet_track(compare.parse_args(["--out", "unused"]))
    assert "pip install -e '.[bench]'" in track["skipped"] and shown is None
    with pytest.raises(compare.Refused, match=r"\.\[bench\]"):
        compare._imagenet_track(args)


def test_a_newcomer_is_told_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no checkpoint of the default here
    with pytest.raises(SystemExit, match="make demo.*--train.*8 minutes"):
        compare.main(["--quick", "--model", "zfnet"])
    assert not (tmp_path / "runs").exists()  # nothing written, nothing trained
    fresh = compare.parse_args([]).out
    assert fresh.parent.as_posix() == "runs/benchmarks" and fresh.name.startswith(
        "compare-"
    )
    assert compare.parse_args(["--images", "8"]).subset == 8


def test_gradcam_is_rectified_as_published():
    model = StandIn().eval()
    images = stand_in_photos(["a", "b"])
    targets = torch.tensor([1, 2])
    ours = METHODS["LayerGradCam"].explain(
        model, images, targets, imagenet.setup_for(model, 32)
    )
    plain = LayerGradCam(model, model.head).attribute(images, target=targets)
    expected = LayerAttribution.interpolate(plain.clamp(min=0), (32, 32), "bilinear")
    torch.testing.assert_close(ours, expected.expand_as(images))
