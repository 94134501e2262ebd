"""Does a network tie the same object part together across images? The paper's
Table 1: occlude the same part in several images and compare how the features
change; a lower score than for random regions means a consistent response."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ._inputs import check_images
from ._occlusion_args import pair
from .layers import check_layers, guarded, layer_name, layer_outputs

__all__ = [
    "box_part_masks",
    "correspondence",
    "mean_hamming_distance",
    "occlude",
    "plot_correspondence",
    "random_masks_like",
]


def occlude(images: Tensor, masks: Tensor, fill: float = 0.0) -> Tensor:
    """``images`` ``(N, C, H, W)`` with ``fill`` where ``masks`` ``(N, H, W)`` is
    true, in every channel (a numpy array of masks is one too).

    Raises:
        ValueError: masks not ``(N, H, W)``.
    """
    masks = torch.as_tensor(masks)
    if masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"masks must be (N, H, W) = {(images.shape[0], *images.shape[2:])}, got "
            f"{tuple(masks.shape)}"
        )
    return images.masked_fill(masks[:, None].to(images.device, torch.bool), fill)


def mean_hamming_distance(signs: Tensor) -> float:
    """Mean over pairs ``i < j`` of the fraction of entries where rows ``i`` and
    ``j`` of ``signs`` ``(N, D)`` (a tensor, array or nested list) differ.

    Raises:
        ValueError: signs not ``(N >= 2, D >= 1)``.
    """
    signs = torch.as_tensor(signs)
    if signs.ndim != 2 or signs.shape[0] < 2 or signs.shape[1] < 1:
        raise ValueError(f"signs must be (N >= 2, D >= 1), got {tuple(signs.shape)}")
    pairs = [
        (signs[i] != signs[i + 1 :]).float().mean(dim=1)
        for i in range(signs.shape[0] - 1)
    ]
    return torch.cat(pairs).mean().item()


def correspondence(
    model: nn.Module,
    images: Tensor,
    masks: Mapping[str, Tensor],
    layers: Sequence[nn.Module],
    fill: float = 0.0,
) -> dict[str, dict[str, float]]:
    """Table 1: for every set of masks and layer, the mean Hamming distance
    between ``sign(features(x_i) - features(occluded x_i))`` over image pairs.

    Lower means the occlusion changes the features of the images alike (a feature
    the occlusion leaves unchanged has sign 0, and agrees with another 0). Compare
    each part with masks of the same size at random places
    (:func:`random_masks_like`). The model runs in eval mode without gradients and
    is returned to its mode.

    Args:
        model: the network.
        images: ``(N, C, H, W)``, N >= 2, showing the same kind of object.
        masks: per name (a part, ``"random"``), ``(N, H, W)`` booleans, true where
            image ``i`` is occluded.
        layers: submodules whose outputs are compared (the paper: layers 5, 7).
        fill: input value of the occluder.

    Returns:
        ``{mask name: {layer name: score}}``.

    Raises:
        TypeError: ``masks`` not a non-empty dict, a mask that is not an array, or
            a layer that is not a module.
        ValueError: fewer than two images, a mask not ``(N, H, W)``, or ``layers``
            not a non-empty list (one layer alone is refused).

    Example::

        >>> masks = box_part_masks(boxes, (64, 64))
        >>> masks["random"] = random_masks_like(masks["middle"])
        >>> table = correspondence(model, images, masks, [model.features[14]])
    """
    images = check_images(images, "images")
    if len(images) < 2:
        raise ValueError(
            "correspondence compares pairs of images: it needs N >= 2, got "
            f"{len(images)}"
        )
    if not isinstance(masks, Mapping) or not masks:
        raise TypeError(
            "masks must be a non-empty dict of (N, H, W) masks by name, e.g. "
            f"box_part_masks(...), got {type(masks).__name__}"
        )
    masks = {part: _as_mask(part, mask) for part, mask in masks.items()}
    expected = (images.shape[0], *images.shape[2:])
    for part, mask in masks.items():
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"masks[{part!r}] must be (N, H, W) = {expected}, got "
                f"{tuple(mask.shape)}"
            )
    check_layers(layers)
    table = {}
    with guarded(model) as model, torch.no_grad():
        names = [layer_name(model, layer) for layer in layers]
        original, _ = layer_outputs(model, layers, images)
        for part, mask in masks.items():
            occluded, _ = layer_outputs(model, layers, occlude(images, mask, fill))
            table[part] = {
                name: mean_hamming_distance((before - after).flatten(1).sign())
                for name, before, after in zip(names, original, occluded, strict=True)
            }
    return table


def _as_mask(part: str, mask: Any) -> Tensor:
    """``mask`` as a tensor (a numpy array of booleans is one too)."""
    try:
        return torch.as_tensor(mask)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"masks[{part!r}] must be (N, H, W) booleans (a tensor or an array), got "
            f"{type(mask).__name__}"
        ) from error


def box_part_masks(boxes: Tensor, image_size: tuple[int, int]) -> dict[str, Tensor]:
    """Masks of the top, middle and bottom thirds of each object's box: the same
    part in every image, relative to the object.

    Args:
        boxes: ``(N, 4)`` ``(x0, y0, x1, y1)`` with exclusive ends, as the Cluttered
            Fashion-MNIST data gives them.
        image_size: ``(H, W)``.

    Returns:
        ``{"top": ..., "middle": ..., "bottom": ...}``, each ``(N, H, W)`` bool.

    Raises:
        ValueError: boxes not ``(N, 4)`` whole pixels (a float ``5.9`` is not cut
            to ``5``), a box with no area, or one that leaves a
            third (or all) of itself outside the image, or is under 3 rows high:
            that part's mask would be empty, and occluding nothing would change
            no feature.
    """
    boxes = torch.as_tensor(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got {tuple(boxes.shape)}")
    if boxes.is_floating_point():
        fractional = (boxes != boxes.round()).any(1)
        if fractional.any():
            raise ValueError(
                f"boxes must be whole pixels, got {boxes[fractional].tolist()}; "
                "round them first, e.g. floor x0 and y0 and ceil x1 and y1"
            )
    boxes = boxes.long()
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if empty.any():
        raise ValueError(
            f"boxes must have x1 > x0 and y1 > y0, got {boxes[empty].tolist()}"
        )
    height, width = pair("image_size", image_size)
    rows = torch.arange(height, device=boxes.device)[None, :, None]
    cols = torch.arange(width, device=boxes.device)[None, None, :]
    x0, y0, x1, y1 = (v[:, None, None] for v in boxes.unbind(1))
    within = (cols >= x0) & (cols < x1)
    edges = [y0 + torch.div((y1 - y0) * i, 3, rounding_mode="floor") for i in range(4)]
    names = ("top", "middle", "bottom")
    masks = {
        name: within & (rows >= edges[i]) & (rows < edges[i + 1])
        for i, name in enumerate(names)
    }
    blank = torch.stack([~m.flatten(1).any(1) for m in masks.values()], 1)  # (N, 3)
    if blank.any():
        i, part = blank.nonzero()[0].tolist()
        where = (
            "has no pixel in"
            if blank[i].all()
            else f"leaves its {names[part]} third without a pixel of"
        )
        raise ValueError(
            f"box {boxes[i].tolist()} (boxes[{i}]) {where} the {height}x{width} "
            "image: boxes are (x0, y0, x1, y1) in pixels of the image, each third "
            "with a row in it (so at least 3 rows high)"
        )
    return masks


def random_masks_like(
    masks: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Each mask moved to a random place where it fits in the image: the same shape
    and size, anywhere (the control of Table 1).

    Args:
        masks: ``(N, H, W)`` booleans.
        generator: for repeatable places.

    Raises:
        TypeError: masks not a tensor.
        ValueError: masks not ``(N, H, W)``.
    """
    if not isinstance(masks, Tensor):
        raise TypeError(
            f"masks must be a tensor (N, H, W) of booleans, got {type(masks).__name__}"
        )
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got {tuple(masks.shape)}")
    moved = torch.zeros_like(masks, dtype=torch.bool)
    height, width = masks.shape[1:]
    for i, mask in enumerate(masks.bool()):
        ys, xs = mask.nonzero(as_tuple=True)
        if len(ys) == 0:
            continue
        dy = _uniform(-int(ys.min()), height - 1 - int(ys.max()), generator)
        dx = _uniform(-int(xs.min()), width - 1 - int(xs.max()), generator)
        moved[i, ys + dy, xs + dx] = True
    return moved


def _uniform(low: int, high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(low, high + 1, (), generator=generator))


def plot_correspondence(
    table: Mapping[str, Mapping[str, float]], path: str | os.PathLike
) -> None:
    """Save the table as a PNG bar chart: a group per layer, a bar per mask set.

    Raises:
        TypeError: ``table`` not a dict.
        ValueError: ``table`` empty.
    """
    if not isinstance(table, Mapping):
        raise TypeError(
            "table must be the dict that correspondence returns, got "
            f"{type(table).__name__}"
        )
    if not table:
        raise ValueError(
            "table is empty: pass what correspondence returns, "
            "{mask name: {layer name: score}}"
        )
    parts = list(table)
    layers = list(next(iter(table.values())))
    figure = Figure(figsize=(1.5 + 1.2 * len(layers) * len(parts) / 2, 3.2))
    axes = figure.subplots()
    width = 0.8 / len(parts)
    for i, part in enumerate(parts):
        places = [j + i * width for j in range(len(layers))]
        axes.bar(places, [table[part][name] for name in layers], width, label=part)
    axes.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))], layers)
    axes.set_ylabel("mean Hamming distance")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
