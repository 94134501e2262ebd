"""Each measurement of one method on one model and image set, as plain dictionaries."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from captum.metrics import (
    infidelity,
    infidelity_perturb_func_decorator,
    sensitivity_max,
)
from torch import Tensor, nn

from .methods import Method, Setup
from .metrics import (
    deletion_insertion_auc,
    pointing_game,
    rank_correlation,
    relevance_mass,
    spatial,
)

__all__ = [
    "cost",
    "faithfulness",
    "localisation",
    "randomisation_layers",
    "robustness",
    "sanity",
]


@contextmanager
def count_passes(output_layer: nn.Module) -> Iterator[dict[str, int]]:
    """Count the examples that reach the model's output layer, and come back through
    it, within the context. (The output layer, not the model: incremental occlusion
    runs the model's layers without calling its ``forward``.)"""
    counts = {"forward": 0, "backward": 0}

    def backward_hook(grad: Tensor) -> None:
        counts["backward"] += grad.shape[0]

    def forward_hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        counts["forward"] += output.shape[0]
        if output.requires_grad:
            output.register_hook(backward_hook)

    handle = output_layer.register_forward_hook(forward_hook)
    try:
        yield counts
    finally:
        handle.remove()


def cost(
    method: Method, model, images, targets, setup: Setup, repeats: int = 3
) -> dict:
    """Median seconds per image over ``repeats`` calls, and passes per image. Call it
    after a first, warm-up call of the method on the same images."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with count_passes(setup.output_layer) as counts:
            method.explain(model, images, targets, setup)
        times.append(time.perf_counter() - start)
    n = len(images)
    with torch.no_grad():
        start = time.perf_counter()
        model(images)
        forward = (time.perf_counter() - start) / n
    seconds = sorted(times)[len(times) // 2] / n
    return {
        "seconds_per_image": seconds,
        "forward_equivalents": seconds / forward,
        "forward_passes_per_image": counts["forward"] / n,
        "backward_passes_per_image": counts["backward"] / n,
    }


def _target_probability(model: nn.Module, targets: Tensor):
    def score(images: Tensor) -> Tensor:
        with torch.no_grad():
            probabilities = model(images).softmax(dim=1)
        return probabilities.gather(1, targets[:, None])[:, 0]

    return score


def faithfulness(model, images, targets, attribution, background, blurred) -> dict:
    """RISE deletion (towards ``background``) and insertion (from ``blurred``) AUC."""
    score = _target_probability(model, targets)
    maps = spatial(attribution)
    deletion, _ = deletion_insertion_auc(score, images, maps, background)
    _, insertion = deletion_insertion_auc(score, images, maps, blurred)
    return {
        "deletion_auc": deletion.mean().item(),
        "insertion_auc": insertion.mean().item(),
    }


def localisation(attribution: Tensor, boxes: Tensor) -> dict:
    maps = spatial(attribution)
    return {
        "pointing_game": pointing_game(maps, boxes).mean().item(),
        "relevance_mass": relevance_mass(maps, boxes).mean().item(),
    }


def robustness(
    method: Method, model, images, targets, attribution, setup, samples
) -> dict:
    """Captum's max-sensitivity and (normalised) infidelity."""

    def explain(inputs, target):
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        return (method.explain(model, x, target, setup),)

    generator = torch.Generator().manual_seed(0)

    @infidelity_perturb_func_decorator(method.multiplies_by_inputs)
    def perturb(inputs: Tensor) -> Tensor:
        noise = torch.randn(inputs.shape, generator=generator).to(inputs) * 0.1
        return inputs - noise

    sensitivity = sensitivity_max(
        explain, images, target=targets, n_perturb_samples=samples, perturb_radius=0.05
    )
    fidelity = infidelity(
        model,
        perturb,
        images,
        attribution,
        target=targets,
        n_perturb_samples=samples,
        normalize=True,
    )
    return {
        "sensitivity_max": sensitivity.mean().item(),
        "infidelity": fidelity.mean().item(),
    }


def randomisation_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers with weights, from the output down (Adebayo et al.'s cascade order)."""
    named = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    return named[::-1]


def sanity(
    method: Method, model, images, targets, attribution, setup_for
) -> list[dict]:
    """Cascading randomisation: re-initialise layers from the top down; after each step,
    the Spearman rank correlation of the absolute maps with the trained model's."""
    torch.manual_seed(0)
    randomised = copy.deepcopy(model)
    reference = spatial(attribution).abs()
    curve = []
    for name, layer in randomisation_layers(randomised):
        layer.reset_parameters()
        maps = method.explain(randomised, images, targets, setup_for(randomised))
        correlation = rank_correlation(reference, spatial(maps).abs())
        curve.append({"layer": name, "spearman": correlation.mean().item()})
    return curve
