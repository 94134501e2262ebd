"""Occlusion maps as pictures: at image size, over the image, the paper's Fig. 7."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib
import matplotlib.patches
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor

from .display import normalize_projection
from .occlusion import SensitivityMaps

__all__ = ["occlusion_figure", "save_overlay", "upsample_grid"]


def upsample_grid(
    grid: Tensor,
    image_size: tuple[int, int],
    window: tuple[int, int],
    stride: tuple[int, int],
) -> Tensor:
    """A map over occluder positions ``(..., rows, cols)`` at image size ``(H, W)``.

    Each pixel takes the value of the position whose square is centred nearest to
    it, so class maps (``top_class``) stay classes.
    """
    rows, cols = grid.shape[-2:]
    counts = (rows, cols)
    index = [
        ((torch.arange(size) - (w - 1) / 2) / s).round().clamp(0, count - 1).long()
        for size, w, s, count in zip(image_size, window, stride, counts, strict=True)
    ]
    return grid[..., index[0], :][..., index[1]]


def _picture(image: Tensor) -> Tensor:
    """``(C, H, W)`` scaled into ``[0, 1]`` as ``(H, W, C)`` (or ``(H, W)``)."""
    image = image.detach().cpu().float()
    image = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-12)
    return image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)


def save_overlay(
    path: str | os.PathLike,
    image: Tensor,
    heatmap: Tensor,
    alpha: float = 0.5,
    cmap: str = "jet",
    title: str | None = None,
) -> None:
    """Save ``heatmap`` ``(H, W)`` over ``image`` ``(C, H, W)`` as a PNG."""
    if heatmap.shape != image.shape[-2:]:
        raise ValueError(
            f"heatmap {tuple(heatmap.shape)} and image {tuple(image.shape)} differ in "
            "size; bring a position grid to image size with upsample_grid"
        )
    figure = Figure(figsize=(3, 3))
    ax = figure.subplots()
    ax.imshow(_picture(image).numpy(), cmap="gray")
    shown = ax.imshow(heatmap.detach().cpu().float().numpy(), cmap=cmap, alpha=alpha)
    figure.colorbar(shown, ax=ax, fraction=0.046)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    figure.savefig(path, bbox_inches="tight", dpi=120)


def occlusion_figure(
    image: Tensor,
    maps: SensitivityMaps,
    index: int = 0,
    projection: Tensor | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """One row of the paper's Fig. 7 for image ``index`` of ``maps``.

    Panels: (a) the image with the occluder's size, (b) the total activation of the
    watched feature map per occluder position, (c) ``projection``, that feature map
    projected to pixels (e.g. by ``FeatureMapDeconvNet``), (d) the probability of
    the target class, (e) the most probable class. Panels without data are left out.

    Args:
        image: ``(C, H, W)``, the image the maps were computed on.
        maps: from :meth:`OcclusionSensitivity.sensitivity_maps`.
        projection: ``(C, H, W)`` projection of the watched feature map.
        class_names: names for the class indices.
    """
    size = tuple(image.shape[-2:])

    def upsampled(grid: Tensor) -> Tensor:
        return upsample_grid(grid[index].cpu(), size, maps.window, maps.stride)

    def name(k: int) -> str:
        return class_names[k] if class_names is not None else str(k)

    # (title, picture, colour map, with a colour bar)
    panels = [("(a) input", _picture(image), "gray", False)]
    if maps.activation is not None:
        title = f"(b) total activation,\nmap {int(maps.channel[index])}"
        panels.append((title, upsampled(maps.activation), "viridis", True))
    if projection is not None:
        picture = _picture(normalize_projection(projection[None])[0])
        panels.append(("(c) projection", picture, "gray", False))
    target = int(maps.target[index])
    title = f"(d) p({name(target)})"
    panels.append((title, upsampled(maps.probability), "jet", True))
    top = upsampled(maps.top_class)
    classes = sorted(set(top.flatten().tolist()))
    colours = matplotlib.colormaps["tab10"].resampled(max(len(classes), 1))
    palette = ListedColormap([colours(i) for i in range(len(classes))])
    codes = torch.searchsorted(torch.tensor(classes), top)
    panels.append(("(e) most probable class", codes, palette, False))

    figure = Figure(figsize=(2.4 * len(panels), 2.8))
    axes = figure.subplots(1, len(panels))
    for ax, (title, picture, cmap, colour_bar) in zip(axes, panels, strict=True):
        shown = ax.imshow(picture.numpy(), cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
        if colour_bar:
            figure.colorbar(shown, ax=ax, fraction=0.046)
    h, w = maps.window
    axes[0].add_patch(
        matplotlib.patches.Rectangle((0, 0), w, h, fill=False, color="red", lw=1)
    )
    handles = [
        matplotlib.patches.Patch(color=palette(i), label=name(k))
        for i, k in enumerate(classes)
    ]
    axes[-1].legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1, 1), fontsize=7
    )
    figure.tight_layout()
    return figure
