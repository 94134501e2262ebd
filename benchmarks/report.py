"""The benchmark's outputs a person reads: results.md and PNG figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

__all__ = [
    "COLUMNS",
    "PUBLISHED",
    "attribution_grid",
    "bar_charts",
    "markdown",
    "sanity_plot",
    "spatial_maps",
]

# Column key, header, and whether higher is better.
COLUMNS = [
    ("seconds_per_image", "s / image", False),
    ("forward_equivalents", "x forward", False),
    ("forward_passes_per_image", "fwd / image", False),
    ("backward_passes_per_image", "bwd / image", False),
    ("deletion_auc", "deletion AUC", False),
    ("insertion_auc", "insertion AUC", True),
    ("pointing_game", "pointing game", True),
    ("relevance_mass", "relevance mass", True),
    ("sensitivity_max", "max-sensitivity", False),
    ("infidelity", "infidelity", False),
    ("sanity_final", "rank corr., all random", False),
]

PUBLISHED = """\
### Published figures, on other data (context only, not comparable cell by cell)

- Pointing game, PASCAL VOC07 test, VGG16 (TorchRay, Fong et al. 2019): deconvnet
  67.5 %, *below* the centre baseline's 69.6 %; Grad-CAM 86.6 %; guided backprop 75.9 %.
- Deletion / insertion AUC, ImageNet, ResNet-50 (RISE, Petsiuk et al. 2018): Grad-CAM
  0.123 / 0.677; sliding-window occlusion 0.142 / 0.662.
- Cascading randomisation (Adebayo et al. 2018): guided backprop (and deconvnet-like
  methods) barely change as layers are randomised; gradients and Grad-CAM do.
"""


def _cell(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def markdown(results: dict) -> str:
    """One table, methods x metrics, with the settings and the published anchors."""
    config = results["config"]
    lines = [
        "# Attribution methods side by side",
        "",
        f"Model: {config['model']}. Images: {config['images']} of {config['data']}, "
        f"target = true class. Device: {results['environment']['device']}, "
        f"{results['environment']['threads']} threads, {config['dtype']}, seed "
        f"{config['seed']}. Cost, robustness and sanity on the first "
        f"{config['subset']}.",
        "",
        "Lower is better for cost, deletion AUC, max-sensitivity and infidelity; "
        "higher "
        "for insertion AUC, pointing game and relevance mass. The last column is the "
        "rank correlation with the trained model's maps once every layer is "
        "re-initialised: near 1 means the map ignores the model.",
        "",
        "| method | kind | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for name, row in results["methods"].items():
        cells = [_cell(row[key]) for key, _, _ in COLUMNS]
        lines.append(f"| {name} | {row['kind']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "![metrics](metrics.png)",
        "",
        "![cascading randomisation](randomisation.png)",
        "",
        "![attributions](attributions.png)",
        "",
        PUBLISHED,
    ]
    return "\n".join(lines)


_COLOURS = {"ours": "tab:red", "captum": "tab:blue", "control": "tab:grey"}


def bar_charts(results: dict, path: Path) -> None:
    """One bar chart per metric, bars coloured by kind (ours, Captum, control)."""
    names = list(results["methods"])
    colours = [_COLOURS[results["methods"][n]["kind"]] for n in names]
    columns = [c for c in COLUMNS if c[0] not in ("forward_passes_per_image",)]
    fig, axes = plt.subplots(2, (len(columns) + 1) // 2, figsize=(22, 9))
    for ax, (key, header, higher) in zip(axes.flat, columns, strict=False):
        values = [results["methods"][n][key] for n in names]
        ax.barh(names, values, color=colours)
        ax.set_title(header + (" (higher better)" if higher else " (lower better)"))
        ax.invert_yaxis()
        if key in ("seconds_per_image", "forward_equivalents"):
            ax.set_xscale("log")
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def sanity_plot(results: dict, path: Path) -> None:
    """Rank correlation with the trained maps as layers are randomised, top down."""
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, row in results["methods"].items():
        steps = row["sanity"]
        style = "--" if row["kind"] == "control" else "-"
        ax.plot(
            range(len(steps) + 1),
            [1.0] + [s["spearman"] for s in steps],
            style,
            marker="o",
            label=name,
            color=None,
        )
    layers = [s["layer"] for s in next(iter(results["methods"].values()))["sanity"]]
    ax.set_xticks(range(len(layers) + 1), ["trained", *layers], rotation=45, ha="right")
    ax.set_ylabel("Spearman correlation with trained maps")
    ax.set_title("Cascading randomisation (Adebayo et al. 2018)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def attribution_grid(
    images: Tensor, maps: dict[str, Tensor], boxes: Tensor, path: Path
):
    """One row per image, one column per method: spatial maps, the item's box drawn."""
    rows, cols = len(images), len(maps) + 1
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False
    )
    for r in range(rows):
        panels = [("image", images[r].mean(0))] + [(n, m[r]) for n, m in maps.items()]
        for c, (name, panel) in enumerate(panels):
            ax = axes[r, c]
            scale = panel.abs().max().clamp(min=1e-12)
            cmap, vmin = ("gray", None) if c == 0 else ("bwr", -scale)
            ax.imshow(panel.cpu(), cmap=cmap, vmin=vmin, vmax=None if c == 0 else scale)
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


def spatial_maps(attributions: dict[str, Tensor], count: int) -> dict[str, Tensor]:
    return {name: a[:count].detach().sum(1) for name, a in attributions.items()}
