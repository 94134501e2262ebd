"""Each measurement of one method on one model and image set: one value per image
(per-image tensors), so that every mean can carry an interval and every difference a
paired test."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
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
    published_tolerance,
    rank_correlation,
    relevance_mass,
    spatial,
)
from .timing import median_seconds

__all__ = [
    "Cascade",
    "cost",
    "faithfulness",
    "forward_seconds",
    "localisation",
    "randomisation_layers",
    "robustness",
    "sanity",
]

# Adebayo et al.'s cascade: named steps, each re-initialising a group of layers.
Cascade = Sequence[tuple[str, Sequence[str]]]


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


def forward_seconds(model: nn.Module, images: Tensor, device: str = "cpu") -> float:
    """Median seconds of one inference forward pass per image (warmed up, 5 runs):
    the unit in which every method's cost is also given."""

    def forward() -> None:
        with torch.inference_mode():
            model(images)

    return median_seconds(forward, repeats=5, device=device) / len(images)


def cost(
    method: Method,
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    setup: Setup,
    forward: float,
    repeats: int = 3,
) -> dict:
    """Median seconds per image over ``repeats`` calls (and their range), the same in
    forward passes of ``forward`` seconds, and passes per image. Call it after a
    first, warm-up call of the method.

    The passes are counted in a separate call on two images: the counting hook
    would send incremental occlusion to full passes, so the timed calls run
    without it."""
    with count_passes(model.get_submodule(setup.output_layer)) as counts:
        method.explain(model, images[:2], targets[:2], setup)
    counted = len(images[:2])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        method.explain(model, images, targets, setup)
        times.append((time.perf_counter() - start) / len(images))
    seconds = sorted(times)[len(times) // 2]
    return {
        "seconds_per_image": seconds,
        "seconds_range": [min(times), max(times)],
        "forward_equivalents": seconds / forward,
        "forward_passes_per_image": counts["forward"] / counted,
        "backward_passes_per_image": counts["backward"] / counted,
    }


def _target_probability(model: nn.Module, targets: Tensor):
    def score(images: Tensor) -> Tensor:
        with torch.no_grad():
            probabilities = model(images).softmax(dim=1)
        return probabilities.gather(1, targets[:, None])[:, 0]

    return score


def faithfulness(
    model, images, targets, attribution, deleted_to, inserted_from
) -> dict[str, Tensor]:
    """RISE deletion (towards ``deleted_to``) and insertion (from ``inserted_from``)
    AUC of the target class probability, per image."""
    score = _target_probability(model, targets)
    deletion, insertion = deletion_insertion_auc(
        score, images, spatial(attribution), deleted_to, inserted_from
    )
    return {"deletion_auc": deletion, "insertion_auc": insertion}


def localisation(attribution: Tensor, masks: Tensor) -> dict[str, Tensor]:
    """Per image: the pointing game by TorchRay's protocol (15 pixels at 224,
    scaled; the first maximum), the strict one (no tolerance), relevance mass."""
    maps = spatial(attribution)
    tolerance = published_tolerance(min(maps.shape[-2:]))
    return {
        "pointing_game": pointing_game(maps, masks, tolerance),
        "pointing_game_strict": pointing_game(maps, masks),
        "relevance_mass": relevance_mass(maps, masks),
    }


def robustness(
    method: Method, model, images, targets, attribution, setup, samples
) -> dict[str, Tensor]:
    """Captum's max-sensitivity and (normalised) infidelity, per image."""

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
    return {"sensitivity_max": sensitivity.detach(), "infidelity": fidelity.detach()}


def randomisation_layers(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Every layer with weights, one cascade step each, from the output down
    (Adebayo et al.'s order)."""
    named = [
        name
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    return [(name, [name]) for name in named[::-1]]


def sanity(
    method: Method,
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    attribution: Tensor,
    setup: Setup,
    cascade: Cascade,
    seeds: Sequence[int],
) -> list[list[list[float]]]:
    """Cascading randomisation (Adebayo et al. 2018): re-initialise the cascade's
    layers from the top down (``reset_parameters``, seeded); after each step, the
    Spearman rank correlation of each image's absolute map with the trained model's.

    Returns:
        ``[seed][step][image]`` correlations.
    """
    reference = spatial(attribution).abs()
    curves = []
    for seed in seeds:
        torch.manual_seed(seed)
        randomised = copy.deepcopy(model)
        curve = []
        for _, layers in cascade:
            for name in layers:
                randomised.get_submodule(name).reset_parameters()
            maps = method.explain(randomised, images, targets, setup)
            curve.append(rank_correlation(reference, spatial(maps).abs()).tolist())
        curves.append(curve)
    return curves
