"""One track of the benchmark: every registered method on one network and one set of
images, each score per image with its interval, and the paired comparisons."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .evaluate import (
    Cascade,
    cost,
    faithfulness,
    forward_seconds,
    localisation,
    robustness,
    sanity,
)
from .methods import METHODS, Method, Setup
from .metrics import spatial
from .stats import adjust, interval, paired_test

__all__ = ["HIGHER_IS_BETTER", "Images", "Settings", "comparisons", "evaluate_track"]

# The per-image scores, in table order, and whether higher is better. The last is
# the rank correlation once every layer is re-initialised: high means the map
# ignores what the network learned.
HIGHER_IS_BETTER = {
    "deletion_auc": False,
    "insertion_auc": True,
    "pointing_game": True,
    "relevance_mass": True,
    "sensitivity_max": False,
    "infidelity": False,
    "sanity_final": False,
}
SAME_MAPS_TOLERANCE = 1e-4  # of the largest absolute value
# Captum's notices on every gradient call, about its own mechanics, not the results.
ROUTINE_WARNINGS = (
    "did not already require gradients",
    "Setting backward hooks on ReLU activations",
)


@dataclass(frozen=True)
class Settings:
    """How much of each measurement a track runs."""

    subset: int  # images for cost, robustness and sanity (the first ones)
    repeats: int  # timed calls per method
    samples: int  # perturbations for max-sensitivity and infidelity
    seeds: tuple[int, ...]  # one cascading randomisation per seed
    seed: int  # of the bootstrap and the permutation tests


@dataclass(frozen=True)
class Images:
    """The images of a track, what to explain in them, and the RISE substrates."""

    images: Tensor  # (N, C, H, W), normalised as the network expects
    targets: Tensor  # (N,) class explained
    deleted_to: Tensor  # what deletion replaces pixels with
    inserted_from: Tensor  # what insertion starts from
    masks: Tensor | None = None  # (N, H, W) object masks, if known


def evaluate_track(
    model: nn.Module,
    data: Images,
    setup: Setup,
    cascade: Cascade,
    settings: Settings,
    device: str = "cpu",
) -> tuple[dict, dict[str, Tensor]]:
    """Every method of :data:`METHODS` on ``data``: cost, faithfulness, localisation
    (where there are masks), robustness and cascading randomisation.

    Returns:
        The track's results (JSON-ready) and each method's attributions.
    """
    forward = forward_seconds(model, data.images[: settings.subset], device)
    rows: dict[str, dict] = {}
    attributions: dict[str, Tensor] = {}
    for name, method in tqdm(METHODS.items(), desc="methods"):
        start = time.perf_counter()
        rows[name] = _measure(
            method, model, data, setup, cascade, settings, forward, attributions
        )
        rows[name]["wall_seconds"] = time.perf_counter() - start
    scored = {n: a for n, a in attributions.items() if "same_maps_as" not in rows[n]}
    results = {
        "forward_seconds_per_image": forward,
        "cascade": _cascade_summary(model, cascade),
        "methods": rows,
        "comparisons": comparisons(rows, settings.seed),
        "identical_maps": _identical_maps(scored),
    }
    return results, scored


def _measure(method, model, data, setup, cascade, settings, forward, attributions):
    """One method's row. A method documented to give another's maps is explained on
    the subset and compared; only if its maps differ is it explained and scored on
    every image."""
    k = settings.subset
    sub = Images(data.images[:k], data.targets[:k], data.deleted_to, data.inserted_from)
    attribution, warned = _explain(
        method, model, sub if method.same_as else data, setup
    )
    row = {"kind": method.kind, "warnings": warned}
    row["cost"] = cost(
        method, model, sub.images, sub.targets, setup, forward, settings.repeats
    )
    same = _same_maps(method, attribution, attributions)
    if same is not None:
        attributions[method.name] = attribution
        return row | same
    if method.same_as is not None:  # they differ: score it in full
        attribution, _ = _explain(method, model, data, setup)
    attributions[method.name] = attribution
    row["metrics"], row["sanity"] = _scores(
        method, model, data, attribution, setup, cascade, settings
    )
    return row


def _explain(method: Method, model, data: Images, setup: Setup):
    """The method's attributions (the first call also warms it up) and the warnings
    it raised, apart from Captum's routine notices."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attribution = method.explain(model, data.images, data.targets, setup)
    messages = {str(w.message) for w in caught}
    routine = {m for m in messages if any(r in m for r in ROUTINE_WARNINGS)}
    return attribution.detach(), sorted(messages - routine)


def _same_maps(method: Method, ours: Tensor, attributions: dict) -> dict | None:
    """For a method documented to equal another: its maps' largest difference from
    that one's, when within tolerance; otherwise None (then it is scored itself)."""
    if method.same_as is None:
        return None
    theirs = attributions[method.same_as][: len(ours)]
    scale = theirs.abs().max().clamp(min=1e-12)
    difference = float((ours - theirs).abs().max() / scale)
    if difference > SAME_MAPS_TOLERANCE:
        return None
    return {"same_maps_as": method.same_as, "max_relative_difference": difference}


def _scores(method, model, data: Images, attribution, setup, cascade, settings):
    k = settings.subset
    values = faithfulness(
        model,
        data.images,
        data.targets,
        attribution,
        data.deleted_to,
        data.inserted_from,
    )
    if data.masks is not None:
        values |= localisation(attribution, data.masks)
    sub = data.images[:k], data.targets[:k], attribution[:k]
    values |= robustness(method, model, *sub, setup, settings.samples)
    curves = sanity(method, model, *sub, setup, cascade, settings.seeds)
    values["sanity_final"] = torch.tensor([c[-1] for c in curves]).mean(dim=0)
    metrics = {
        key: interval(v.tolist(), settings.seed) | {"per_image": v.tolist()}
        for key, v in values.items()
    }
    return metrics, curves


def _cascade_summary(model: nn.Module, cascade: Cascade) -> dict:
    """The steps' names, and the step after which every linear (classifier) layer
    is re-initialised: 'the top layers' of Adebayo et al."""
    linear = [
        i
        for i, (_, layers) in enumerate(cascade)
        if any(isinstance(model.get_submodule(n), nn.Linear) for n in layers)
    ]
    return {
        "steps": [name for name, _ in cascade],
        "layers": [list(layers) for _, layers in cascade],
        "classifier_step": max(linear, default=0),
    }


def comparisons(rows: dict[str, dict], seed: int) -> list[dict]:
    """Paired tests per metric: each method against the best (non-control) one, and
    each non-control method against each control; Benjamini-Hochberg adjusted over
    all of them, significant below 0.05."""
    scored = {n: r for n, r in rows.items() if "metrics" in r}
    tests = []
    for metric, higher in HIGHER_IS_BETTER.items():
        have = [n for n, r in scored.items() if metric in r["metrics"]]
        methods = [n for n in have if scored[n]["kind"] != "control"]
        controls = [n for n in have if scored[n]["kind"] == "control"]
        if not methods:
            continue
        sign = 1.0 if higher else -1.0
        best = max(methods, key=lambda n: sign * scored[n]["metrics"][metric]["value"])
        pairs = [(n, best, "best") for n in methods if n != best]
        pairs += [(n, c, "control") for n in methods for c in controls]
        for method, against, role in pairs:
            a = scored[method]["metrics"][metric]["per_image"]
            b = scored[against]["metrics"][metric]["per_image"]
            test = paired_test(a, b, seed)
            better = sign * test["difference"]["value"] > 0
            tests.append(
                {"metric": metric, "method": method, "against": against}
                | {"role": role, "better": better}
                | test
            )
    for test, p in zip(tests, adjust([t["p"] for t in tests]), strict=True):
        test["p_adjusted"] = p
        test["significant"] = p < 0.05
    return tests


def _identical_maps(attributions: dict[str, Tensor]) -> list[list[str]]:
    """Pairs of methods whose spatial maps agree to 1e-4 of their largest value on
    every image."""
    names = list(attributions)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            x, y = spatial(attributions[a]), spatial(attributions[b])
            scale = torch.maximum(x.abs().max(), y.abs().max()).clamp(min=1e-12)
            if (x - y).abs().max() <= SAME_MAPS_TOLERANCE * scale:
                pairs.append([a, b])
    return pairs
