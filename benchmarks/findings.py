"""Published findings checked on this run's own numbers: each is reproduced, not
reproduced, or not testable here, with the paired tests that say so."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .stats import adjust, paired_test

__all__ = ["EXPECTATIONS", "check_findings"]

# How a test's outcome satisfies the claim: method significantly higher or lower
# than the other, or not significantly higher.
EXPECTATIONS = ("higher", "lower", "not higher")


def check_findings(tracks: dict[str, dict], centred: dict | None, seed: int) -> list:
    """The three findings, on every track that ran (the pointing game's where the
    centred items were asked for: ``centred`` is None when they were not)."""
    found = [] if centred is None else [_pointing_vs_centre(centred, seed)]
    for name, track in tracks.items():
        if "methods" in track:
            found.append(_randomisation(name, track, seed))
            found.append(_deletion_insertion(name, track, seed))
    return found


def _pointing_vs_centre(centred: dict, seed: int) -> dict:
    finding = {
        "claim": "The deconvnet's pointing game is at or below a centre baseline's.",
        "source": "TorchRay (Fong et al. 2019), PASCAL VOC07 test, VGG16: deconvnet "
        "67.5 %, centre 69.6 %",
        "track": "centred",
    }
    if "methods" not in centred:
        return finding | {"verdict": "not testable here", "why": centred["skipped"]}
    values = {
        n: r["metrics"]["pointing_game"]["per_image"]
        for n, r in centred["methods"].items()
    }
    tests = [("DeconvNet", "centre Gaussian", "not higher")]
    return finding | _judge(tests, values, "pointing_game", seed)


def _randomisation(track_name: str, track: dict, seed: int) -> dict:
    step = track["cascade"]["classifier_step"]
    finding = {
        "claim": "Once the top layers are re-initialised, guided backprop's and the "
        "deconvnet's maps change less (rank correlation with the trained maps stays "
        "higher) than the gradient's and Grad-CAM's.",
        "source": "Adebayo et al. 2018, cascading randomisation (Inception v3, "
        "ImageNet)",
        "track": track_name,
        "at_step": track["cascade"]["steps"][step],
    }
    if ["Deconvolution", "GuidedBackprop"] in track["identical_maps"]:
        why = (
            "guided backprop's maps equal Captum's Deconvolution's: the network has no "
            "ReLU module for either rule to act on, so both are the plain gradient"
        )
        return finding | {"verdict": "not testable here", "why": why}
    values = {
        name: np.mean([curve[step] for curve in row["sanity"]], axis=0).tolist()
        for name, row in track["methods"].items()
        if "sanity" in row
    }
    tests = [
        (guided, gradient, "higher")
        for guided in ("GuidedBackprop", "DeconvNet")
        for gradient in ("Saliency", "LayerGradCam")
    ]
    return finding | _judge(tests, values, "rank correlation after the step", seed)


def _deletion_insertion(track_name: str, track: dict, seed: int) -> dict:
    finding = {
        "claim": "Occlusion orders pixels better than gradient maps: lower deletion "
        "and higher insertion AUC.",
        "source": "RISE (Petsiuk et al. 2018), deletion/insertion on ImageNet",
        "track": track_name,
    }
    tests, values = [], {}
    for metric, expect in (("deletion_auc", "lower"), ("insertion_auc", "higher")):
        for name, row in track["methods"].items():
            if "metrics" in row:
                values[f"{name} {metric}"] = row["metrics"][metric]["per_image"]
        tests += [
            (f"OcclusionSensitivity {metric}", f"{other} {metric}", expect)
            for other in ("Saliency", "LayerGradCam")
        ]
    return finding | _judge(tests, values, "AUC", seed)


def _judge(
    tests: Sequence[tuple[str, str, str]], values: dict, metric: str, seed: int
) -> dict:
    """Paired tests (Benjamini-Hochberg adjusted within the finding); the claim is
    reproduced when every test comes out as it expects. With fewer than 6 images no
    sign-flip test can reach p < 0.05 (its smallest p is 2 / 2**n): not testable."""
    count = len(values[tests[0][0]])
    if 2 / 2**count >= 0.05:
        why = (
            f"{count} images: no paired difference can reach p < 0.05 (a sign-flip "
            f"test's smallest p is 2/2^{count}); run with more"
        )
        return {"verdict": "not testable here", "why": why}
    results = []
    for method, against, expect in tests:
        result = paired_test(values[method], values[against], seed)
        results.append(
            {"method": method, "against": against, "expect": expect, "metric": metric}
            | {"mean": float(np.mean(values[method]))}
            | {"mean_against": float(np.mean(values[against]))}
            | result
        )
    for result, p in zip(results, adjust([r["p"] for r in results]), strict=True):
        result["p_adjusted"] = p
        result["satisfied"] = _satisfied(
            result["difference"]["value"], p, result["expect"]
        )
    failed = [r for r in results if not r["satisfied"]]
    verdict = "reproduced" if not failed else "not reproduced"
    why = (
        "every test as the claim expects"
        if not failed
        else "; ".join(
            f"{r['method']} vs {r['against']}: expected {r['expect']}, difference "
            f"{r['difference']['value']:+.3g}, adjusted p {r['p_adjusted']:.2g}"
            for r in failed
        )
    )
    return {"verdict": verdict, "why": why, "tests": results}


def _satisfied(difference: float, p: float, expect: str) -> bool:
    significant = p < 0.05
    if expect == "higher":
        return significant and difference > 0
    if expect == "lower":
        return significant and difference < 0
    return not (significant and difference > 0)
