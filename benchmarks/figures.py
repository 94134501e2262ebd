"""The benchmark's figures: metrics with their intervals, cascading randomisation, and
the attributions of the images shown."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402

from .report import COLUMNS  # noqa: E402

__all__ = ["attribution_grid", "bar_charts", "sanity_plot", "track_figures"]

_COLOURS = {"ours": "tab:red", "captum": "tab:blue", "control": "tab:grey"}
SHOWN = 6  # images in the attribution figure of a track with boxes


def track_figures(name: str, track: dict, shown: dict, out: Path) -> None:
    """metrics.png, randomisation.png and attributions.png of one track (prefixed by
    the track's name, except for the ZFNet track)."""
    prefix = "" if name == "zfnet" else f"{name}_"
    bar_charts(track, out / f"{prefix}metrics.png")
    sanity_plot(track, out / f"{prefix}randomisation.png")
    images = shown["images"]
    count = len(images) if shown["boxes"] is None else min(SHOWN, len(images))
    maps = {
        n: a[:count].detach().sum(1).cpu() for n, a in shown["attributions"].items()
    }
    boxes = None if shown["boxes"] is None else shown["boxes"][:count]
    titles = [p["class"] for p in track["config"].get("predictions", [])]
    attribution_grid(
        images[:count].cpu(), maps, boxes, out / f"{prefix}attributions.png", titles
    )


def bar_charts(track: dict, path: Path) -> None:
    """One bar chart per metric with its interval, bars coloured by kind."""
    rows = {n: r for n, r in track["methods"].items() if "metrics" in r}
    columns = [(k, h) for k, h in COLUMNS if k in next(iter(rows.values()))["metrics"]]
    columns.insert(0, ("forward_equivalents", "cost, x forward ↓"))
    fig, axes = plt.subplots(2, (len(columns) + 1) // 2, figsize=(20, 8))
    names = list(rows)
    colours = [_COLOURS[rows[n]["kind"]] for n in names]
    for ax, (key, header) in zip(axes.flat, columns, strict=False):
        if key == "forward_equivalents":
            values = [rows[n]["cost"][key] for n in names]
            ax.barh(names, values, color=colours)
            ax.set_xscale("log")
        else:
            m = [rows[n]["metrics"][key] for n in names]
            values = np.array([x["value"] for x in m])
            errors = np.abs(np.array([[x["low"], x["high"]] for x in m]).T - values)
            ax.barh(names, values, xerr=errors, color=colours, capsize=2)
        ax.set_title(header)
        ax.invert_yaxis()
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def sanity_plot(track: dict, path: Path) -> None:
    """Rank correlation with the trained maps as layers are re-initialised from the
    top (mean over images and re-initialisations; the band spans the seeds)."""
    fig, ax = plt.subplots(figsize=(9, 5))
    steps = track["cascade"]["steps"]
    for name, row in track["methods"].items():
        if "sanity" not in row:
            continue
        per_seed = np.array(row["sanity"]).mean(axis=2)  # seeds x steps
        x = range(len(steps) + 1)
        style = "--" if row["kind"] == "control" else "-"
        ax.plot(x, [1.0, *per_seed.mean(0)], style, marker="o", label=name)
        ax.fill_between(x, [1.0, *per_seed.min(0)], [1.0, *per_seed.max(0)], alpha=0.15)
    ax.set_xticks(range(len(steps) + 1), ["trained", *steps], rotation=45, ha="right")
    ax.set_ylabel("Spearman correlation with trained maps")
    ax.set_title("Cascading randomisation (Adebayo et al. 2018)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def attribution_grid(
    images: Tensor,
    maps: dict[str, Tensor],
    boxes: Tensor | None,
    path: Path,
    titles: list[str] | None = None,
) -> None:
    """One row per image, one column per method: spatial maps (zero white), the
    object's box drawn where known, the row's title (e.g. the class) on the image."""
    rows, cols = len(images), len(maps) + 1
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False
    )
    for r in range(rows):
        picture = images[r].permute(1, 2, 0) if images.shape[1] == 3 else images[r, 0]
        panels = [("image", picture)] + [(n, m[r]) for n, m in maps.items()]
        for c, (name, panel) in enumerate(panels):
            ax = axes[r, c]
            if c == 0:
                ax.imshow(
                    panel.clamp(0, 1) if images.shape[1] == 3 else panel, cmap="gray"
                )
                if titles:
                    ax.set_ylabel(titles[r], fontsize=7)
            else:
                scale = float(panel.abs().max().clamp(min=1e-12))
                ax.imshow(panel, cmap="bwr", vmin=-scale, vmax=scale)
            if boxes is not None:
                x0, y0, x1, y1 = boxes[r].tolist()
                ax.add_patch(
                    plt.Rectangle(
                        (x0 - 0.5, y0 - 0.5),
                        x1 - x0,
                        y1 - y0,
                        fill=False,
                        color="lime",
                        linewidth=1,
                    )
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
