"""How features and the prediction change as an image is moved, scaled and rotated
(the paper's Fig. 5)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ._inputs import check_images, holds_integers, widened
from .layers import check_layers, guarded, layer_name, layer_outputs, model_output

__all__ = ["InvarianceCurves", "invariance_curves", "plot_invariance", "transform"]

TRANSFORMS = ("translation", "scale", "rotation")


@dataclass
class InvarianceCurves:
    """One sweep: per image, how far each layer's features move, and the
    probability of the true class, as the transformation grows.

    Attributes:
        transform: ``"translation"`` (pixels down), ``"scale"`` (factor) or
            ``"rotation"`` (degrees anticlockwise).
        amounts: ``(T,)`` the transformation's amounts, float64 (as given).
        distances: per layer name, ``(N, T)`` Euclidean distance between the
            layer's output for the transformed and for the original image.
        probabilities: ``(N, T)`` softmax probability of each image's label.
    """

    transform: str
    amounts: Tensor
    distances: dict[str, Tensor]
    probabilities: Tensor


def transform(images: Tensor, kind: str, amount: float, fill: float = 0.0) -> Tensor:
    """Move images ``amount`` pixels down, scale them by ``amount`` about their
    centre, or rotate them ``amount`` degrees anticlockwise; ``fill`` comes in
    where the image moves away (bilinear interpolation).

    Args:
        images: ``(..., H, W)``, e.g. ``(N, C, H, W)``.
        kind: one of ``"translation"``, ``"scale"``, ``"rotation"``.
        amount: pixels, factor or degrees (a number or a one-element tensor).
        fill: value where the image moves away.

    Returns:
        The moved images, of the same shape.

    Raises:
        TypeError: if ``images`` is not a tensor.
        ValueError: an unknown ``kind``, or a translation by a fraction of a pixel.
    """
    if not isinstance(images, Tensor):
        raise TypeError(
            f"images must be a tensor (..., H, W), such as a batch (N, C, H, W), got "
            f"{type(images).__name__}"
        )
    if kind not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {kind!r}")
    if isinstance(amount, Tensor):
        amount = amount.item()  # an entry of a sweep given as a tensor
    if kind == "translation" and amount != round(amount):
        raise ValueError(f"translation moves whole pixels, got {amount!r}")
    bilinear = InterpolationMode.BILINEAR
    if kind == "rotation":
        return TF.rotate(images, float(amount), bilinear, fill=fill)
    shift = round(amount) if kind == "translation" else 0
    return TF.affine(
        images,
        angle=0.0,
        translate=[0, shift],
        scale=float(amount) if kind == "scale" else 1.0,
        shear=[0.0, 0.0],
        interpolation=bilinear,
        fill=fill,
    )


def invariance_curves(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    layers: Sequence[nn.Module],
    shifts: Sequence[float] | None = None,
    scales: Sequence[float] = tuple(1.0 + 0.1 * i for i in range(9)),
    angles: Sequence[float] = tuple(range(0, 360, 10)),
    fill: float = 0.0,
) -> dict[str, InvarianceCurves]:
    """Sweep vertical translation, scale and rotation of ``images``.

    The paper uses layers 1 and 7 (first convolution, penultimate layer) and
    translations of up to a quarter of the image, scales 1 to 1.8 and a full turn;
    those are the defaults here. The model runs in eval mode without gradients and
    is returned to its mode. Distances and probabilities are in the images' dtype.

    Args:
        model: a classifier whose output is logits ``(N, classes)``.
        images: ``(N, C, H, W)``.
        labels: ``(N,)`` the true classes.
        layers: submodules whose outputs are compared.
        shifts: whole pixels to move down (negative: up); default up to 11 steps
            over ``[-H/4, H/4]``.
        scales: scale factors.
        angles: degrees anticlockwise.
        fill: input value where the image moves away (its background).

    Returns:
        ``{"translation": ..., "scale": ..., "rotation": ...}`` of
        :class:`InvarianceCurves`.

    Raises:
        TypeError: if the model does not return one tensor of logits.
        ValueError: if the images are not ``(N, C, H, W)`` with ``N >= 1``, the
            labels not ``(N,)`` class indices within the model's output, a sweep
            empty or not finite (scales: not positive), ``layers`` not a non-empty
            list (one layer alone is refused), or a layer not a submodule of the
            model or does not run.

    Example::

        >>> curves = invariance_curves(model, x, y, [model.features[0],
        ...                            model.classifier[4]])
        >>> plot_invariance(curves, "invariance.png")
    """
    images = check_images(images, "images")
    if not len(images):
        raise ValueError("images is empty: the curves need at least one image")
    labels = torch.as_tensor(labels)
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"labels must be ({images.shape[0]},), one per image, got shape "
            f"{tuple(labels.shape)}"
        )
    if not holds_integers(labels) or labels.min() < 0:
        raise ValueError(f"labels must be class indices (ints >= 0), got {labels}")
    labels = labels.long()  # uint8 and int16 labels too, for indexing
    if shifts is None:
        quarter = images.shape[-2] / 4
        steps = torch.linspace(-quarter, quarter, 11).round().int().tolist()
        shifts = sorted(set(steps))
    sweeps = dict(zip(TRANSFORMS, (shifts, scales, angles), strict=True))
    for kind, amounts in sweeps.items():
        if not len(amounts) or not all(math.isfinite(a) for a in amounts):
            raise ValueError(f"the {kind} sweep must be finite numbers, got {amounts}")
    if min(scales) <= 0:
        raise ValueError(f"scales must be positive, got {list(scales)}")
    check_layers(layers)
    curves = {}
    with guarded(model) as model, torch.no_grad():
        names = [layer_name(model, layer) for layer in layers]
        original, _ = layer_outputs(model, layers, images)
        for kind, amounts in sweeps.items():
            measured = [
                _measure(
                    model, layers, original, transform(images, kind, a, fill), labels
                )
                for a in amounts
            ]
            curves[kind] = _curves(kind, amounts, names, measured)
    return curves


def _measure(
    model: nn.Module,
    layers: Sequence[nn.Module],
    original: list[Tensor],
    moved: Tensor,
    labels: Tensor,
) -> tuple[list[Tensor], Tensor]:
    """Per layer the distance of ``moved``'s features to ``original``, and the
    probability of the labels; ``(N,)`` each."""
    outputs, logits = layer_outputs(model, layers, moved, stop_early=False)
    logits = model_output(logits, len(moved))
    if logits.ndim != 2 or labels.max() >= logits.shape[1]:
        raise ValueError(
            f"labels must index the model's classes, (N, classes) = "
            f"{tuple(logits.shape)}, got {labels.tolist()}"
        )
    distances = [
        (widened(after) - before).flatten(1).norm(dim=1).to(moved.dtype)
        for before, after in zip(original, outputs, strict=True)
    ]
    probabilities = widened(logits).softmax(dim=1)
    chosen = probabilities.gather(1, labels.view(-1, 1).to(logits.device))
    return distances, chosen[:, 0].to(moved.dtype)


def _curves(kind: str, amounts: Sequence[float], names: list[str], measured: list):
    distances = {
        name: torch.stack([d[i] for d, _ in measured], dim=1).cpu()
        for i, name in enumerate(names)
    }
    return InvarianceCurves(
        transform=kind,
        amounts=torch.tensor([float(a) for a in amounts], dtype=torch.float64),
        distances=distances,
        probabilities=torch.stack([p for _, p in measured], dim=1).cpu(),
    )


_AXES = {"translation": "pixels down", "scale": "scale", "rotation": "degrees"}


def plot_invariance(
    curves: dict[str, InvarianceCurves], path: str | os.PathLike
) -> None:
    """Save the curves as a PNG: a row per transformation; a column per layer's
    feature distance, and one for the probability of the true class; a line per
    image.

    Args:
        curves: what :func:`invariance_curves` returns, by transformation.
        path: the PNG file.

    Raises:
        TypeError: if ``curves`` is not a dict.
        ValueError: if it is empty.
    """
    if not isinstance(curves, Mapping):
        raise TypeError(
            "curves must be the dict of InvarianceCurves that invariance_curves "
            f"returns, got {type(curves).__name__}"
        )
    if not curves:
        raise ValueError(
            "curves is empty: pass what invariance_curves returns, "
            "{'translation': ..., 'scale': ..., 'rotation': ...}"
        )
    rows = list(curves.values())
    names = list(rows[0].distances)
    figure = Figure(figsize=(3.2 * (len(names) + 1), 2.6 * len(rows)))
    panels = figure.subplots(len(rows), len(names) + 1, squeeze=False)
    for row, sweep in zip(panels, rows, strict=True):
        series = [(f"distance, {n}", sweep.distances[n]) for n in names]
        series.append(("P(true class)", sweep.probabilities))
        for axes, (title, values) in zip(row, series, strict=True):
            for i, curve in enumerate(values):
                axes.plot(sweep.amounts, curve, marker=".", label=f"image {i}")
            axes.set_title(title, fontsize=9)
            axes.set_xlabel(_AXES[sweep.transform], fontsize=8)
    panels[0, -1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
