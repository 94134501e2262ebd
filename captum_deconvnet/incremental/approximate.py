"""Approximate occlusion: Krypton's projective-field threshold and coarse-to-fine
drill-down (Nakandala et al., SIGMOD 2019, Sec. 4), opt-in."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Approximation", "check_grid", "drill_down"]


@dataclass(frozen=True)
class Approximation:
    """How far occlusion may depart from exact results, for speed.

    Attributes:
        projective_field: Krypton's threshold: each changed box is cut to at most
            this fraction of its map's side, about its centre; what it cuts keeps
            its unoccluded value. 1 keeps boxes whole.
        coarse: first compute every ``coarse``-th occluder position along each
            axis (and the last ones), the coarse map; 1 computes every position.
        refine: then compute exactly this share of the other positions, those
            between coarse positions whose scores differ most (the target's output
            for ``attribute``, its probability for ``sensitivity_maps``); for the
            rest the model's outputs (and a watched layer's sums) are interpolated
            bilinearly from the coarse ones, so ``attribute``'s drops are
            interpolated drops, and ``sensitivity_maps``' probability and top class
            are the softmax and the best class of interpolated outputs.
        tolerance: after each convolution or pool, cut the changed box to where
            the change exceeds this fraction of the layer's mean absolute
            unoccluded value (changes fade towards the edge of the projective
            field); 0 keeps boxes whole.

    With ``projective_field`` or ``tolerance``, each pass holds one occluder
    position (``perturbations_per_eval`` is not used), so that each position's box
    is cut on its own: the copies of a pass share one box. ``tolerance`` keeps
    where any of the ``N`` images changes.

    Raises:
        TypeError: a value that is not a number (``coarse``: not an int).
        ValueError: a value out of range.
    """

    projective_field: float = 1.0
    coarse: int = 1
    refine: float = 1.0
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        for name in ("projective_field", "refine", "tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number, got {value!r}")
        if isinstance(self.coarse, bool) or not isinstance(
            self.coarse, numbers.Integral
        ):
            raise TypeError(f"coarse must be an int, got {self.coarse!r}")
        if not 0 < self.projective_field <= 1:
            raise ValueError(
                f"projective_field must be in (0, 1], got {self.projective_field!r}"
            )
        if self.coarse < 1:
            raise ValueError(f"coarse must be a positive int, got {self.coarse!r}")
        if not 0 <= self.refine <= 1:
            raise ValueError(f"refine must be in [0, 1], got {self.refine!r}")
        if not 0 <= self.tolerance < math.inf:
            raise ValueError(
                f"tolerance must be a finite number of at least 0, got "
                f"{self.tolerance!r}"
            )

    @property
    def needs_plan(self) -> bool:
        """Whether it changes how each copy is computed (which needs the
        incremental plan), not only which copies are."""
        return self.projective_field < 1 or self.tolerance > 0

    @property
    def drills_down(self) -> bool:
        return self.coarse > 1 and self.refine < 1


def check_grid(
    approximation: Approximation | None,
    regions: list[list],
    windows: list[tuple[int, ...]],
    dims: list[tuple[int, ...]],
) -> None:
    """Refuse, before any pass, occluder positions that ``approximation``'s
    drill-down cannot interpolate between: per input, its ``regions`` from the
    window ``windows[i]`` over an input of shape ``dims[i]`` (after the batch).

    Raises:
        ValueError: naming the window and the input, for positions that are not
            a grid over the last two dimensions (see :func:`_grid`).
    """
    if approximation is None or not approximation.drills_down:
        return
    for input_regions, window, shape in zip(regions, windows, dims, strict=True):
        _grid(input_regions, f"sliding_window_shapes {window!r} on inputs {shape}")


def _grid(regions: list, what: str = "these positions") -> tuple[int, int]:
    """``(rows, cols)`` of occluder positions that form a row-major grid over the
    last two dimensions (one position along the others); ``what`` names where
    they come from in the error."""
    # positions along one dimension: no grid
    on_grid = regions if len(regions[0]) >= 2 else []
    rows = sorted({r[-2].start for r in on_grid})
    cols = sorted({r[-1].start for r in on_grid})
    others = {tuple(s.start for s in r[:-2]) for r in on_grid}
    grid = len(others) == 1 and len(on_grid) == len(rows) * len(cols)
    if grid:
        grid = all(
            (r[-2].start, r[-1].start) == (rows[p // len(cols)], cols[p % len(cols)])
            for p, r in enumerate(on_grid)
        )
    if not grid:
        counts = tuple(
            len({r[d].start for r in regions}) for d in range(len(regions[0]))
        )
        raise ValueError(
            "approximate occlusion with coarse > 1 and refine < 1 interpolates "
            "between occluder positions on a grid over the last two dimensions "
            f"(height and width), but {what} give {counts} positions along the "
            "dimensions after the batch: pass a window over all of every other "
            "dimension (images (N, C, H, W): (C, h, w)), or coarse=1 or refine=1"
        )
    return len(rows), len(cols)


def _coarse_lines(count: int, step: int) -> list[int]:
    return sorted(set(range(0, count, step)) | {count - 1})


def _corners(lines: list[int], count: int) -> list[tuple[int, int, float]]:
    """Per line index: the coarse lines around it and the weight of the second."""
    result = []
    for i in range(count):
        high = next(line for line in lines if line >= i)
        low = max(line for line in lines if line <= i)
        weight = 0.0 if high == low else (i - low) / (high - low)
        result.append((low, high, weight))
    return result


def drill_down(scan: Any, approximation: Approximation) -> Iterator[tuple]:
    """``scan``'s chunks (see ``OcclusionScan``), with the positions between the
    coarse ones computed only where the coarse outputs differ most."""
    rows, cols = _grid(scan.regions)
    row_lines = _coarse_lines(rows, approximation.coarse)
    col_lines = _coarse_lines(cols, approximation.coarse)
    coarse = [r * cols + c for r in row_lines for c in col_lines]
    outputs, watched = _run(scan, coarse)
    row_corners, col_corners = _corners(row_lines, rows), _corners(col_lines, cols)
    rest, scores = [], []
    for p in range(rows * cols):
        if p in outputs:
            continue
        (r0, r1, wr), (c0, c1, wc) = row_corners[p // cols], col_corners[p % cols]
        corners = [r0 * cols + c0, r0 * cols + c1, r1 * cols + c0, r1 * cols + c1]
        weights = [(1 - wr) * (1 - wc), (1 - wr) * wc, wr * (1 - wc), wr * wc]
        outputs[p] = sum(w * outputs[c] for w, c in zip(weights, corners, strict=True))
        if watched:
            watched[p] = sum(
                w * watched[c] for w, c in zip(weights, corners, strict=True)
            )
        rest.append(p)
        scores.append(_spread([scan.score(outputs[c]) for c in corners]))
    chosen = math.ceil(approximation.refine * len(rest))
    if chosen:
        order = torch.tensor(scores).argsort(descending=True)[:chosen]
        exact, exact_watched = _run(scan, sorted(rest[i] for i in order.tolist()))
        outputs.update(exact)
        watched.update(exact_watched)
    for start in range(0, rows * cols, scan.positions):
        chunk = range(start, min(start + scan.positions, rows * cols))
        yield (
            [scan.regions[p] for p in chunk],
            torch.cat([outputs[p] for p in chunk]),
            torch.cat([watched[p] for p in chunk]) if watched else None,
        )


def _run(scan: Any, positions: list[int]) -> tuple[dict, dict]:
    """Each position's outputs ``(N, ...)`` and watched sums, computed."""
    outputs, watched = {}, {}
    index = iter(positions)
    n = len(scan.tensors[0])
    for chunk, out, sums in scan.run([scan.regions[p] for p in positions]):
        for k in range(len(chunk)):
            p = next(index)
            outputs[p] = out[k * n : (k + 1) * n]
            if sums is not None:
                watched[p] = sums[k * n : (k + 1) * n]
    return outputs, watched


def _spread(values: list[Tensor]) -> float:
    """How far apart the scores at the corners of a cell are: the largest distance
    between two of them, over the images."""
    stacked = torch.stack([v.reshape(len(v), -1).double() for v in values])
    distances = (stacked[:, None] - stacked[None]).norm(dim=-1)
    return float(distances.amax())
