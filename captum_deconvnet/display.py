"""Turning projections into pictures the paper's way."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from ._inputs import widened

__all__ = ["normalize_projection", "save_grid"]


def normalize_projection(projection: Tensor, eps: float = 1e-12) -> Tensor:
    """Contrast-normalise each example around zero into ``[0, 1]``.

    Each example (all its channels together) is divided by twice its largest absolute
    value and shifted by one half, so zero is mid-grey and the sign is kept, as in the
    paper's figures. An all-zero projection becomes uniform grey.

    Args:
        projection: ``(N, C, H, W)`` (or any ``(N, ...)``) projections.

    Returns:
        ``projection``'s shape and dtype, values in ``[0, 1]``.

    Raises:
        TypeError: ``projection`` not a tensor.
        ValueError: ``projection`` without a batch dimension.
    """
    if not isinstance(projection, Tensor):
        raise TypeError(
            f"projection must be a tensor (N, ...), got {type(projection).__name__}"
        )
    if projection.ndim < 1:
        raise ValueError(
            "projection needs a batch dimension (N, ...), got a 0-d tensor; "
            "pass projection[None] for a single one"
        )
    # in float32 at least: eps is 0 in float16
    flat = widened(projection.detach().reshape(projection.shape[0], -1))
    scale = flat.abs().amax(dim=1).clamp(min=eps) * 2
    return (flat / scale[:, None] + 0.5).reshape(projection.shape).to(projection.dtype)


def save_grid(
    images: Tensor | Sequence[Tensor],
    path: str | os.PathLike,
    nrow: int = 8,
    padding: int = 2,
    normalize: bool = True,
) -> None:
    """Save images as one PNG grid, ``nrow`` per row.

    Args:
        images: ``(N, C, H, W)`` with C 1 or 3, or a sequence of ``(C, H, W)`` tensors
            of one size.
        path: the PNG file.
        nrow: images per row.
        padding: pixels between images.
        normalize: apply :func:`normalize_projection` first; otherwise the images
            must already lie in ``[0, 1]``.
    """
    batch = images if isinstance(images, Tensor) else torch.stack(list(images))
    if batch.ndim != 4 or batch.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(batch.shape)}")
    if normalize:
        batch = normalize_projection(batch)
    grid = make_grid(batch.float().cpu(), nrow=nrow, padding=padding, pad_value=1.0)
    save_image(grid, path)
