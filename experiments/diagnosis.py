"""Sec. 4.1 and Fig. 6: Krizhevsky et al.'s first layer against ZFNet's.

Both networks are trained with one recipe (:mod:`experiments.sources`); here their
first two layers are measured on test images and drawn side by side.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor, nn
from torchvision.utils import make_grid

from captum_deconvnet import (
    feature_atlas,
    filter_images,
    firing_rates,
    high_frequency_fraction,
    normalize_projection,
    radial_spectrum,
    receptive_field,
    shift_variation,
    shifted_activity,
)
from captum_deconvnet.layers import layer_name

SHIFT_IMAGES = 200  # test images moved for the aliasing measure
CUTOFF = 0.25  # cycles per pixel: the Nyquist frequency of a stride-2 layer


def measure(model: nn.Module, images: Tensor, background: float) -> dict:
    """The diagnosis of one trained ZFNet's layers 1 and 2.

    Args:
        model: the network, in eval mode.
        images: ``(N, 1, H, W)`` test images.
        background: the input value of a black pixel (fills moved images).

    Returns:
        The measures (floats and lists) and, under ``"figure"``, tensors for the
        pictures (not for JSON).
    """
    conv1, relu1, conv2, relu2 = (model.features[i] for i in (0, 1, 4, 5))
    stride = conv1.stride[0]
    rates = firing_rates(model, relu1, images)
    shape = tuple(images.shape[1:])
    field = receptive_field(model, relu2, shape)
    jump = field.jump[0]
    shifts = [(0, t) for t in range(jump)] + [(t, 0) for t in range(1, jump)]
    pad = jump + field.size[0]
    activity = shifted_activity(
        model, relu2, images[:SHIFT_IMAGES], shifts, pad, background
    )
    edges, rings = radial_spectrum(conv1.weight, bins=8, relative=True)
    atlas = feature_atlas(model, [conv2], images, k=1)[layer_name(model, conv2)]
    high = high_frequency_fraction(conv1.weight, CUTOFF)
    aliased = high_frequency_fraction(conv1.weight, 1 / (2 * stride))
    return {
        "kernel": conv1.kernel_size[0],
        "filters": conv1.out_channels,
        "stride": stride,
        "high_frequency": high.mean().item(),
        "above_own_nyquist": aliased.mean().item(),
        "dead": (rates == 0).double().mean().item(),
        "dead_filters": (rates == 0).nonzero().flatten().tolist(),
        "firing_rate_median": rates.median().item(),
        "shift_variation": shift_variation(activity).item(),
        "layer2_jump": jump,
        "ring_edges": edges.tolist(),
        "ring_energy": rings.mean(dim=0).tolist(),
        "activity_by_shift": (
            activity.sum(dim=(1, 2)) / activity.sum(dim=(1, 2)).mean()
        ).tolist(),
        "figure": {
            "filters": filter_images(conv1),
            "projections": atlas.projections[:, 0],
            "values": atlas.values[:, 0],
        },
    }


def fig6(results: dict[str, dict], labels: dict[str, str], path: Path) -> None:
    """Fig. 6 for two networks: layer-1 filters above, layer-2 projections below
    (each network's 16 strongest maps, their strongest test activation each)."""
    figure = Figure(figsize=(5 * len(results), 9.5))
    axes = figure.subplots(2, len(results))
    for column, (key, result) in enumerate(results.items()):
        pictures = result["figure"]
        filters = _enlarge(pictures["filters"], 4)
        axes[0, column].imshow(_grid(filters, 6), cmap="gray", vmin=0, vmax=1)
        dead = result["dead_filters"]
        axes[0, column].set_title(
            f"{labels[key]}\nlayer 1 ({len(dead)} dead of {len(filters)})", fontsize=10
        )
        _outline(axes[0, column], filters.shape[-1], 6, dead)
        strongest = pictures["values"].argsort(descending=True)[:16]
        projections = normalize_projection(pictures["projections"][strongest])
        axes[1, column].imshow(
            _grid(_enlarge(projections, 3), 4), cmap="gray", vmin=0, vmax=1
        )
        axes[1, column].set_title("layer 2: deconvnet projections", fontsize=10)
    for axis in axes.flat:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _enlarge(images: Tensor, zoom: int) -> Tensor:
    return images.repeat_interleave(zoom, -2).repeat_interleave(zoom, -1)


def _grid(images: Tensor, per_row: int) -> Tensor:
    return make_grid(images.float(), nrow=per_row, padding=2, pad_value=1.0)[0]


def _outline(axis: Axes, side: int, per_row: int, marked: list[int]) -> None:
    """Red squares around the marked pictures of a ``_grid``."""
    for index in marked:
        row, col = divmod(index, per_row)
        corner = (2 + col * (side + 2) - 1, 2 + row * (side + 2) - 1)
        axis.add_patch(
            Rectangle(corner, side + 1, side + 1, fill=False, color="red", lw=1.5)
        )


def measures_figure(
    results: dict[str, dict], labels: dict[str, str], path: Path
) -> None:
    """Left: the filters' mean energy per frequency ring. Right: layer 2's total
    activity as the input moves, relative to its mean over the shifts."""
    figure = Figure(figsize=(11, 3.8))
    spectrum, shift = figure.subplots(1, 2)
    for key, result in results.items():
        edges = torch.tensor(result["ring_edges"])
        centres = ((edges[1:] + edges[:-1]) / 2).tolist()
        spectrum.plot(centres, result["ring_energy"], marker="o", label=labels[key])
        curve = result["activity_by_shift"]
        jump = result["layer2_jump"]
        shift.plot(range(jump), curve[:jump], marker="o", label=f"{labels[key]}, right")
        shift.plot(
            range(jump),
            curve[:1] + curve[jump:],
            marker="s",
            ls="--",
            label=f"{labels[key]}, down",
        )
    spectrum.axvline(CUTOFF, color="grey", lw=0.8)
    spectrum.set(
        xlabel="frequency (cycles per pixel)",
        ylabel="energy against a flat spectrum's",
        title="layer-1 filters: energy per frequency ring",
    )
    shift.set(
        xlabel="input shift (pixels)",
        ylabel="layer-2 activity / its mean",
        title="layer 2's total activity as the image moves",
    )
    spectrum.legend(fontsize=8)
    shift.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
