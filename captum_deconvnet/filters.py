"""The first layer's filters as pictures (the paper's Fig. 6)."""

from __future__ import annotations

import math
import os

from torch import Tensor, nn
from torchvision.utils import make_grid, save_image

from ._inputs import positive_int
from .display import normalize_projection

__all__ = ["filter_images", "save_filters"]


def filter_images(layer: nn.Conv2d) -> Tensor:
    """The filters of ``layer`` as images, each contrast-normalised on its own.

    Each filter is divided by twice its largest absolute weight and shifted by one
    half: zero is mid-grey, the sign is kept, and a weak filter is as visible as a
    strong one (compare their norms to find dominating or dead filters).

    Args:
        layer: a convolution taking 1 or 3 channels (an image).

    Returns:
        ``(out_channels, in_channels, kh, kw)`` in ``[0, 1]``.

    Example::

        >>> pictures = filter_images(model.features[0])
    """
    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"layer must be an nn.Conv2d, got {type(layer).__name__}")
    weight = layer.weight.detach().float().cpu()
    if weight.shape[1] not in (1, 3):
        raise ValueError(
            f"filters over {weight.shape[1]} channels are not images; pass a layer "
            "that takes 1 or 3 channels (the first layer)"
        )
    return normalize_projection(weight)


def save_filters(
    layer: nn.Conv2d,
    path: str | os.PathLike,
    per_row: int | None = None,
    min_side: int = 28,
) -> None:
    """Save the filters of ``layer`` as one PNG grid.

    Args:
        layer: a convolution taking 1 or 3 channels.
        path: the PNG file.
        per_row: filters per row (default about a square).
        min_side: filters smaller than this are enlarged by a whole factor
            (nearest neighbour, so each weight stays a visible square).

    Raises:
        TypeError, ValueError: as :func:`filter_images`; ValueError for a
            ``per_row`` that is not a positive int.
    """
    images = filter_images(layer)
    zoom = max(1, math.ceil(min_side / images.shape[-2]))
    images = images.repeat_interleave(zoom, -2).repeat_interleave(zoom, -1)
    square = math.ceil(math.sqrt(len(images)))
    per_row = square if per_row is None else positive_int("per_row", per_row)
    save_image(make_grid(images, nrow=per_row, padding=2, pad_value=1.0), path)
