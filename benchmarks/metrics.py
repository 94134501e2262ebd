"""Scores of attribution maps: faithfulness, localisation and sanity.

Every function takes *spatial* maps ``(N, H, W)``; :func:`spatial` turns
``(N, C, H, W)`` attributions into them. Captum already computes robustness
(``sensitivity_max``) and infidelity, and SciPy the rank correlation; only what they
lack is written here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor

__all__ = [
    "deletion_insertion_auc",
    "pointing_game",
    "rank_correlation",
    "relevance_mass",
    "spatial",
]


def spatial(attribution: Tensor) -> Tensor:
    """Sum over channels: ``(N, C, H, W)`` to ``(N, H, W)``."""
    return attribution.detach().sum(dim=1)


def deletion_insertion_auc(
    score: Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    removed: Tensor,
    steps: int = 32,
) -> tuple[Tensor, Tensor]:
    """The RISE protocol (Petsiuk et al., 2018): area under the score curve while the
    pixels are removed (deletion) or added (insertion), most attributed first.

    Args:
        score: ``images -> (N,)`` score to follow, e.g. the target class probability.
        images: ``(N, C, H, W)`` inputs.
        maps: ``(N, H, W)`` attributions; ties keep raster order.
        removed: ``(N, C, H, W)`` what a removed pixel shows (deletion ends on it,
            insertion starts from it), e.g. the background or a blurred image.
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
        deletion.append(score(torch.where(first_k, removed, images)))
        insertion.append(score(torch.where(first_k, images, removed)))
    dx = 1.0 / steps
    return _trapezoid(torch.stack(deletion, 1), dx), _trapezoid(
        torch.stack(insertion, 1), dx
    )


def _trapezoid(curve: Tensor, dx: float) -> Tensor:
    return (curve[:, 1:] + curve[:, :-1]).sum(dim=1) * dx / 2


def pointing_game(maps: Tensor, boxes: Tensor) -> Tensor:
    """1 where the map's maximum lies inside the box, else 0 (ties: first in raster
    order). Boxes are ``(N, 4)`` ``(x0, y0, x1, y1)`` with exclusive ends."""
    n, _, w = maps.shape
    peak = maps.reshape(n, -1).argmax(dim=1)
    y, x = peak // w, peak % w
    return _inside(x, y, boxes).float()


def relevance_mass(maps: Tensor, boxes: Tensor) -> Tensor:
    """Share of the positive attribution that falls inside the box (Arras et al.);
    0 for a map with no positive value."""
    n, h, w = maps.shape
    ys = torch.arange(h, device=maps.device).view(1, h, 1).expand(n, h, w)
    xs = torch.arange(w, device=maps.device).view(1, 1, w).expand(n, h, w)
    inside = _inside(xs.reshape(n, -1), ys.reshape(n, -1), boxes)
    positive = maps.clamp(min=0).reshape(n, -1)
    total = positive.sum(dim=1)
    mass = (positive * inside).sum(dim=1)
    return torch.where(
        total > 0, mass / total.clamp(min=1e-30), torch.zeros_like(total)
    )


def _inside(x: Tensor, y: Tensor, boxes: Tensor) -> Tensor:
    x0, y0, x1, y1 = (boxes[:, i].view(-1, *([1] * (x.ndim - 1))) for i in range(4))
    return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)


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
