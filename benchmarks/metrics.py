"""Scores of attribution maps: faithfulness, localisation and sanity, one per image.

Every function takes *spatial* maps ``(N, H, W)``; :func:`spatial` turns
``(N, C, H, W)`` attributions into them. Captum already computes robustness
(``sensitivity_max``) and infidelity, and SciPy the rank correlation; only what they
lack is written here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor

__all__ = [
    "PUBLISHED_TOLERANCE",
    "box_masks",
    "deletion_insertion_auc",
    "pointing_game",
    "published_tolerance",
    "rank_correlation",
    "relevance_mass",
    "spatial",
]

# TorchRay's pointing game (Fong et al. 2019, after Zhang et al. 2016): a hit when
# the maximum lies within 15 pixels of the object, for images of 224 pixels.
PUBLISHED_TOLERANCE = (15.0, 224)


def spatial(attribution: Tensor) -> Tensor:
    """Sum over channels: ``(N, C, H, W)`` to ``(N, H, W)``."""
    return attribution.detach().sum(dim=1)


def deletion_insertion_auc(
    score: Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    deleted_to: Tensor,
    inserted_from: Tensor,
    steps: int = 32,
) -> tuple[Tensor, Tensor]:
    """The RISE protocol (Petsiuk et al., 2018): area under the score curve while the
    pixels are removed (deletion) or added (insertion), most attributed first. Each
    curve is computed once: ``steps + 1`` scored batches per curve.

    Args:
        score: ``images -> (N,)`` score to follow, e.g. the target class probability.
        images: ``(N, C, H, W)`` inputs.
        maps: ``(N, H, W)`` attributions; ties keep raster order.
        deleted_to: ``(N, C, H, W)`` what a deleted pixel shows (deletion ends on
            it), e.g. a black canvas.
        inserted_from: ``(N, C, H, W)`` what insertion starts from, e.g. a blurred
            copy of the images.
        steps: number of equal steps from no pixel to all pixels.

    Returns:
        ``(deletion_auc, insertion_auc)``, each ``(N,)``, the trapezoid area over the
        fraction of pixels in ``[0, 1]``.
    """
    n, _, h, w = images.shape
    order = maps.reshape(n, -1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(h * w, device=order.device).expand(n, -1)
    )
    deletion, insertion = [], []
    for k in np.linspace(0, h * w, steps + 1).round().astype(int):
        first_k = (rank < k).view(n, 1, h, w)  # the k most attributed pixels
        deletion.append(score(torch.where(first_k, deleted_to, images)))
        insertion.append(score(torch.where(first_k, images, inserted_from)))
    dx = 1.0 / steps
    return _trapezoid(torch.stack(deletion, 1), dx), _trapezoid(
        torch.stack(insertion, 1), dx
    )


def _trapezoid(curve: Tensor, dx: float) -> Tensor:
    return (curve[:, 1:] + curve[:, :-1]).sum(dim=1) * dx / 2


def box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """``(N, 4)`` boxes ``(x0, y0, x1, y1)``, exclusive ends, as ``(N, H, W)`` masks."""
    ys = torch.arange(height, device=boxes.device).view(1, height, 1)
    xs = torch.arange(width, device=boxes.device).view(1, 1, width)
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)


def published_tolerance(size: int) -> float:
    """TorchRay's 15-pixel tolerance at 224 pixels, scaled to images of ``size``."""
    pixels, reference = PUBLISHED_TOLERANCE
    return pixels * size / reference


def pointing_game(
    maps: Tensor, masks: Tensor, tolerance: float = 0.0, ties: str = "first"
) -> Tensor:
    """1 where the map's maximum points at the object, else 0 (Zhang et al. 2016).

    Args:
        maps: ``(N, H, W)`` attributions.
        masks: ``(N, H, W)`` boolean object masks (see :func:`box_masks`).
        tolerance: pixels; a hit when the maximum lies on the object or closer than
            ``tolerance`` to one of its pixels (TorchRay's strict ``<``). 0 asks for
            the maximum on the object itself.
        ties: which maxima count when several pixels share the largest value:
            ``"first"`` the first in raster order (TorchRay's ``argmax``),
            ``"any"`` a hit when any of them hits (Quantus).

    Returns:
        ``(N,)`` float hits.

    Raises:
        ValueError: an unknown ``ties``, a negative ``tolerance`` or mismatched shapes.
    """
    if ties not in ("first", "any"):
        raise ValueError(f"ties must be 'first' or 'any', got {ties!r}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    if maps.shape != masks.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)}")
    accept = _dilate(masks.bool(), tolerance).reshape(len(maps), -1)
    flat = maps.reshape(len(maps), -1)
    if ties == "first":
        return accept.gather(1, flat.argmax(dim=1, keepdim=True))[:, 0].float()
    peaks = flat == flat.max(dim=1, keepdim=True).values
    return (peaks & accept).any(dim=1).float()


def _dilate(masks: Tensor, tolerance: float) -> Tensor:
    """Pixels on a mask or closer than ``tolerance`` to one of its pixels."""
    radius = int(np.ceil(tolerance)) - 1 if tolerance > 0 else 0
    if radius < 1:
        return masks
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2) < tolerance**2
    hits = F.conv2d(
        masks[:, None].float(),
        disk[None, None].float().to(masks.device),
        padding=radius,
    )
    return hits[:, 0] > 0


def relevance_mass(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of the positive attribution that falls on the object (Arras et al.
    2022, CLEVR-XAI's relevance mass accuracy):
    ``sum(max(a, 0) on mask) / sum(max(a, 0))``. Negative attribution counts for
    nothing, and a map with no positive value scores 0. (Quantus divides signed sums
    instead.)"""
    n = len(maps)
    positive = maps.clamp(min=0).reshape(n, -1)
    total = positive.sum(dim=1)
    mass = (positive * masks.reshape(n, -1)).sum(dim=1)
    return torch.where(
        total > 0, mass / total.clamp(min=1e-30), torch.zeros_like(total)
    )


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation between matching maps of ``a`` and ``b``, ``(N,)``.

    A constant map has no ranking; its correlation is 0.
    """
    values = []
    for x, y in zip(a.reshape(len(a), -1), b.reshape(len(b), -1), strict=True):
        if x.unique().numel() < 2 or y.unique().numel() < 2:
            values.append(0.0)
        else:
            values.append(float(spearmanr(x.cpu().numpy(), y.cpu().numpy()).statistic))
    return torch.tensor(values)
