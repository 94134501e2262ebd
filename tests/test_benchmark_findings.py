"""The verdicts on published findings, from hand-made per-image values; and the real
ImageNet network on real photos, where the bench extra is installed."""

import pytest
import torch

from benchmarks import imagenet
from benchmarks.findings import check_findings

N = 12


def scored(values: list[float]) -> dict:
    return {"value": sum(values) / len(values), "per_image": values}


def track(sanity_top: dict[str, float], deletion: dict[str, float], identical=()):
    """Every image gets the same value per method, plus a small per-image wobble."""
    wobble = [0.01 * ((i * 7) % 5 - 2) for i in range(N)]
    methods = {}
    for name, level in sanity_top.items():
        curve = [[level + w for w in wobble], [level / 2 + w for w in wobble]]
        metrics = {
            "deletion_auc": scored([deletion[name] + w for w in wobble]),
            "insertion_auc": scored([1 - deletion[name] + w for w in wobble]),
        }
        methods[name] = {"kind": "x", "sanity": [curve, curve], "metrics": metrics}
    return {
        "methods": methods,
        "cascade": {"steps": ["fc", "conv1"], "classifier_step": 0},
        "identical_maps": [list(p) for p in identical],
    }


NAMES = [
    "GuidedBackprop",
    "DeconvNet",
    "Saliency",
    "LayerGradCam",
    "OcclusionSensitivity",
]


def by_source(findings) -> dict:
    return {f["source"].split()[0]: f for f in findings if f["track"] == "t"}


def test_findings_reproduced_when_every_test_agrees():
    sanity = dict(zip(NAMES, [0.9, 0.8, 0.2, 0.1, 0.5], strict=True))
    deletion = dict(zip(NAMES, [0.3, 0.3, 0.4, 0.35, 0.1], strict=True))
    found = by_source(check_findings({"t": track(sanity, deletion)}, None, seed=0))
    assert found["Adebayo"]["verdict"] == "reproduced"
    assert found["Adebayo"]["at_step"] == "fc"
    assert found["RISE"]["verdict"] == "reproduced"
    assert len(found["RISE"]["tests"]) == 4


def test_findings_not_reproduced_name_the_failing_comparison():
    sanity = dict(zip(NAMES, [0.9, 0.2, 0.2, 0.1, 0.5], strict=True))  # deconvnet low
    deletion = dict(zip(NAMES, [0.3, 0.3, 0.05, 0.35, 0.1], strict=True))
    found = by_source(check_findings({"t": track(sanity, deletion)}, None, seed=0))
    assert found["Adebayo"]["verdict"] == "not reproduced"
    assert "DeconvNet vs Saliency" in found["Adebayo"]["why"]
    assert found["RISE"]["verdict"] == "not reproduced"
    assert "Saliency deletion_auc" in found["RISE"]["why"]


def test_findings_that_cannot_be_tested_here_say_why():
    sanity = dict.fromkeys(NAMES, 0.5)
    identical = [("Deconvolution", "GuidedBackprop")]
    found = check_findings({"t": track(sanity, sanity, identical)}, None, seed=0)
    adebayo = by_source(found)["Adebayo"]
    assert adebayo["verdict"] == "not testable here"
    assert "no ReLU" in adebayo["why"]
    assert [f for f in found if f["track"] == "centred"] == []  # not asked for
    skipped = {"skipped": "no checkpoint; make one with `zfnet fit ...`"}
    centred = check_findings({}, skipped, seed=0)[0]
    assert centred["verdict"] == "not testable here"
    assert centred["why"] == skipped["skipped"]


def test_the_pointing_game_claim_is_at_or_below_the_centre():
    def centred(deconvnet: float) -> dict:
        hits = [1.0] * 9 + [0.0] * 3  # the centre: 0.75
        ours = [1.0] * round(deconvnet * N) + [0.0] * (N - round(deconvnet * N))
        return {
            "methods": {
                "DeconvNet": {"metrics": {"pointing_game": scored(ours)}},
                "centre Gaussian": {"metrics": {"pointing_game": scored(hits)}},
            }
        }

    below = check_findings({}, centred(0.5), seed=0)[0]
    assert below["verdict"] == "reproduced"  # at or below
    above = check_findings({}, centred(1.0), seed=0)[0]
    assert above["tests"][0]["difference"]["value"] == pytest.approx(0.25)
    # 3 images of 12 differ, all in the deconvnet's favour: p = 2 / 2**3 = 0.25,
    # not significant: the claim "at or below" stands at this size.
    assert above["tests"][0]["p"] == pytest.approx(0.25)
    assert above["verdict"] == "reproduced"


def test_the_real_network_knows_the_real_photos():
    pytest.importorskip("efficientnet_lite_pytorch", reason="the bench extra")
    pytest.importorskip("skimage", reason="the bench extra")
    model = imagenet.load_network()
    photos = imagenet.load_photos(["chelsea", "coffee"])
    assert photos.shape == (2, 3, 224, 224)
    with torch.no_grad():
        top = model(imagenet.normalise(photos)).topk(3, dim=1).indices
    names = imagenet.class_names()
    assert {"tabby", "tiger cat", "Egyptian cat"} & {names[i] for i in top[0]}
    assert names[top[1, 0]] == "espresso"


def test_too_few_images_test_nothing():
    centred = {
        "methods": {
            "DeconvNet": {"metrics": {"pointing_game": scored([1.0] * 5)}},
            "centre Gaussian": {"metrics": {"pointing_game": scored([0.0] * 5)}},
        }
    }
    found = check_findings({}, centred, seed=0)[0]
    assert found["verdict"] == "not testable here"
    assert "2/2^5" in found["why"]
