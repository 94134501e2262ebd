"""How good can a coarse-to-fine drill-down be? The best quality any choice of the
positions to compute exactly reaches, against the exact map.

    python -m benchmarks.occlusion_drill_down_bound [--quick] [--device cuda]
        [--out DIR] [--checkpoint runs/demo/train/checkpoints/last.ckpt]
        [--data-dir /usr/share/datasets/fashion-mnist]

The networks, images and targets of ``benchmarks.occlusion_approximate``, at its
occluder and at half its stride. Per network and stride: every position's drop of
the target output, by plain full passes (the exact map, independently of the
library); then, for ``coarse`` 2 and 3 and shares of the other positions, the map a
drill-down gives when it computes the coarse positions and, of the others, exactly
the share whose bilinear interpolation errs most (an oracle: no rule that sees only
computed positions chooses better), the rest interpolated. The worst over the images
of SSIM and Spearman's rank correlation against the exact map (as the approximate
benchmark computes them) bounds every drill-down computing that many positions. The
rows "noise" give the quality of the exact map plus Gaussian noise of that standard
deviation, in shares of each map's range: the error per position a target SSIM
allows. Needs ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .occlusion_approximate import quality, trained_networks
from .timing import environment, write_results

SHARES = (0.0, 0.25, 0.5, 0.75)
NOISE = (0.01, 0.02)  # standard deviations, shares of each map's range
BATCH = 64  # occluded copies per forward pass


def exact_drops(model, images, window: int, stride: int) -> np.ndarray:
    """``(N, rows, cols)``: each position's drop of each image's predicted class's
    output, by full passes (Captum's positions: every ``stride``, the last clipped)."""
    _, _, height, width = images.shape
    rows = range(0, height - window + stride, stride)
    cols = range(0, width - window + stride, stride)
    corners = [(r, c) for r in rows for c in cols]
    with torch.no_grad():
        unoccluded = model(images)
        target = unoccluded.argmax(1)
        picked = unoccluded[torch.arange(len(images)), target]
        drops = []
        for start in range(0, len(corners), max(1, BATCH // len(images))):
            copies = []
            for r, c in corners[start : start + max(1, BATCH // len(images))]:
                copy = images.clone()
                copy[:, :, r : r + window, c : c + window] = 0
                copies.append(copy)
            out = model(torch.cat(copies)).reshape(len(copies), len(images), -1)
            drops.append(picked - out[:, torch.arange(len(images)), target])
    grid = torch.cat(drops).T.reshape(len(images), len(rows), len(cols))
    return grid.double().cpu().numpy()


def pixel_map(grid: np.ndarray, shape: tuple, window: int, stride: int) -> torch.Tensor:
    """``(N, 1, H, W)``: per pixel, the mean drop of the positions covering it."""
    n, rows, cols = grid.shape
    total, count = np.zeros((n, *shape)), np.zeros(shape)
    for i in range(rows):
        for j in range(cols):
            window_at = np.s_[i * stride : i * stride + window]
            across = np.s_[j * stride : j * stride + window]
            total[:, window_at, across] += grid[:, i, j, None, None]
            count[window_at, across] += 1
    return torch.from_numpy(total / count)[:, None]


def coarse_lines(count: int, step: int) -> list[int]:
    return sorted(set(range(0, count, step)) | {count - 1})


def interpolated(grid: np.ndarray, coarse: int) -> tuple[np.ndarray, np.ndarray]:
    """The grid bilinearly interpolated from its coarse positions, and which
    positions are coarse."""
    n, rows, cols = grid.shape
    row_lines, col_lines = coarse_lines(rows, coarse), coarse_lines(cols, coarse)
    known = np.zeros((rows, cols), bool)
    known[np.ix_(row_lines, col_lines)] = True
    result = np.empty_like(grid)
    for k in range(n):
        along = np.stack(
            [
                np.interp(range(cols), col_lines, grid[k, r, col_lines])
                for r in row_lines
            ]
        )
        for c in range(cols):
            result[k, :, c] = np.interp(range(rows), row_lines, along[:, c])
    return result, known


def oracle_refined(
    grid: np.ndarray, coarse: int, share: float
) -> tuple[np.ndarray, float]:
    """The grid interpolated from its coarse positions, with the ``share`` of the
    other positions whose interpolation errs most (relative to each image's range,
    the worst image) put back exactly; and the share of all positions computed."""
    guess, known = interpolated(grid, coarse)
    ranges = np.ptp(grid.reshape(len(grid), -1), axis=1)[:, None, None]
    errors = (np.abs(guess - grid) / ranges).max(0)[~known]
    others = np.flatnonzero(~known.reshape(-1))
    chosen = others[
        np.argsort(-errors, kind="stable")[: math.ceil(share * len(others))]
    ]
    refined = guess.reshape(len(grid), -1)
    refined[:, chosen] = grid.reshape(len(grid), -1)[:, chosen]
    return refined.reshape(grid.shape), (known.sum() + len(chosen)) / known.size


def bound_rows(grid: np.ndarray, shape: tuple, window: int, stride: int) -> list:
    exact = pixel_map(grid, shape, window, stride)
    ranges = np.ptp(grid.reshape(len(grid), -1), axis=1)[:, None, None]
    rows = []
    noise = np.random.default_rng(0)
    for sigma in NOISE:
        noisy = pixel_map(
            grid + noise.normal(size=grid.shape) * sigma * ranges, shape, window, stride
        )
        rows.append({"noise": sigma, **quality(noisy, exact)})
    for coarse in (2, 3):
        for share in SHARES:
            refined, computed = oracle_refined(grid, coarse, share)
            approximate = pixel_map(refined, shape, window, stride)
            rows.append(
                {"coarse": coarse, "share": share, "computed": float(computed)}
                | quality(approximate, exact)
            )
    return rows


def table(results: dict) -> str:
    lines = [
        "Drill-down's best case: coarse positions plus the share of the others "
        "whose interpolation errs most computed exactly (an oracle), the rest "
        "interpolated; worst SSIM and rank correlation over the images against the "
        "exact map. Noise rows: the exact map plus Gaussian noise of that share of "
        "each map's range.",
        "",
        "| network | occluder | setting | positions computed | SSIM | Spearman |",
        "|---|---|---|---|---|---|",
    ]
    for name, strides in results["networks"].items():
        for occluder, rows in strides.items():
            for r in rows:
                setting = (
                    f"noise {r['noise']:.0%}"
                    if "noise" in r
                    else f"coarse {r['coarse']}, {r['share']:.0%} refined"
                )
                computed = f"{r['computed']:.0%}" if "computed" in r else "all"
                lines.append(
                    f"| {name} | {occluder} | {setting} | {computed} "
                    f"| {r['ssim']:.3f} | {r['spearman']:.3f} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args, networks = trained_networks(argv, __doc__.split("\n\n")[0])
    results = {"environment": environment(args.device), "networks": {}}
    for name, (model, images, (window, stride)) in networks.items():
        model, images = model.to(args.device), images.to(args.device)
        results["networks"][name] = {}
        for step in (stride, stride // 2):
            print(f"{name}: {window}x{window} at stride {step}", flush=True)
            grid = exact_drops(model, images, window, step)
            results["networks"][name][f"{window}/{step}"] = bound_rows(
                grid, tuple(images.shape[2:]), window, step
            )
    write_results(args.out, "occlusion_drill_down_bound", args, results, table(results))
    return results


if __name__ == "__main__":
    main()
