"""Occlusion maps as pictures: at image size, over the image, the paper's Fig. 7."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.patches
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor

from ._inputs import as_int
from ._occlusion_args import pair, position_counts
from .display import normalize_projection
from .occlusion import SensitivityMaps

__all__ = ["occlusion_figure", "save_overlay", "upsample_grid"]


def upsample_grid(
    grid: Tensor,
    image_size: int | tuple[int, int],
    window: int | tuple[int, int],
    stride: int | tuple[int, int],
) -> Tensor:
    """A map over occluder positions ``(..., rows, cols)`` at image size ``(H, W)``.

    Each pixel takes the value of the position whose square is centred nearest to
    it, so class maps (``top_class``) stay classes.

    Args:
        grid: ``(..., rows, cols)``, a map of :class:`SensitivityMaps`.
        image_size: ``(H, W)`` of the images the maps were made on (an int for a
            square).
        window, stride: the occluder's size and step the maps were made with
            (``maps.window``, ``maps.stride``), each an int or ``(height, width)``.

    Returns:
        ``(..., H, W)``, in the grid's dtype.

    Raises:
        TypeError: ``grid`` not a tensor, or a size that is not an int or two ints.
        ValueError: a size that is not positive, a window larger than the image, or
            a grid whose rows and columns are not the positions that ``window``
            and ``stride`` give on the image, ``(H - window[0]) // stride[0] + 1``
            rows and likewise columns, as
            :meth:`OcclusionSensitivity.sensitivity_maps` lays them out.
    """
    if not isinstance(grid, Tensor):
        raise TypeError(
            f"grid must be a tensor (..., rows, cols) of occluder positions, got "
            f"{type(grid).__name__}"
        )
    image_size = pair("image_size", image_size)
    window, stride = pair("window", window), pair("stride", stride)
    if window[0] > image_size[0] or window[1] > image_size[1]:
        raise ValueError(f"window {window} is larger than the image {image_size}")
    counts = position_counts(image_size, window, stride)
    if grid.ndim < 2 or tuple(grid.shape[-2:]) != counts:
        raise ValueError(
            f"grid of shape {tuple(grid.shape)} is not a map of the {counts[0]}x"
            f"{counts[1]} positions of window {window} at stride {stride} on a "
            f"{image_size[0]}x{image_size[1]} image: pass the image size, window "
            "and stride the maps were made with (maps.window, maps.stride)"
        )
    index = [
        ((torch.arange(size) - (w - 1) / 2) / s).round().clamp(0, count - 1).long()
        for size, w, s, count in zip(image_size, window, stride, counts, strict=True)
    ]
    return grid[..., index[0], :][..., index[1]]


def _one_image(image: Any, name: str) -> Tensor:
    """``image`` if it is one picture ``(C, H, W)`` of 1 or 3 channels."""
    if not isinstance(image, Tensor):
        raise TypeError(
            f"{name} must be a tensor (C, H, W), got {type(image).__name__}"
        )
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"{name} must be one image (C, H, W) with C 1 or 3, got shape "
            f"{tuple(image.shape)}; take image i of a batch as images[i]"
        )
    return image


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
    """Save ``heatmap`` ``(H, W)`` over ``image`` ``(C, H, W)`` as a PNG.

    Raises:
        TypeError: ``image`` or ``heatmap`` not a tensor.
        ValueError: ``image`` not one image ``(C, H, W)`` of 1 or 3 channels, or a
            heatmap of another size.
    """
    image = _one_image(image, "image")
    if not isinstance(heatmap, Tensor):
        raise TypeError(
            f"heatmap must be a tensor (H, W), got {type(heatmap).__name__}"
        )
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
        index: the image's index in the maps' batch.
        projection: ``(C, H, W)`` projection of the watched feature map.
        class_names: names for the class indices.

    Raises:
        TypeError: ``maps`` not a :class:`SensitivityMaps`, ``image`` or
            ``projection`` not a tensor, or ``index`` not an int (a numpy int or
            a 0-d integer tensor is one).
        ValueError: ``image`` or ``projection`` not one image ``(C, H, W)`` of 1 or
            3 channels, an ``index`` out of the maps' batch, an image of another
            size than the maps were made on, a projection of another size than
            the image, or ``class_names`` without a name for a class shown.
    """
    image, index, projection = _figure_inputs(image, maps, index, projection)
    _check_names(maps, index, class_names)
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


def _figure_inputs(
    image: Any, maps: Any, index: Any, projection: Any
) -> tuple[Tensor, int, Tensor | None]:
    """``(image, index, projection)`` of :func:`occlusion_figure`, after checking
    them and ``maps``; ``index`` as an int."""
    if not isinstance(maps, SensitivityMaps):
        raise TypeError(
            "maps must be the SensitivityMaps that "
            "OcclusionSensitivity.sensitivity_maps returns, got "
            f"{type(maps).__name__}: pass the whole maps, not one of their tensors"
        )
    count = len(maps.target)
    number = as_int(index)
    if number is None:
        raise TypeError(f"index must be an int, got {index!r}")
    index = number
    if not -count <= index < count:
        raise ValueError(
            f"index {index} is out of range for maps of {count} images "
            f"(0 to {count - 1})"
        )
    image = _one_image(image, "image")
    size, grid = tuple(image.shape[-2:]), tuple(maps.probability.shape[-2:])
    if position_counts(size, maps.window, maps.stride) != grid:
        raise ValueError(
            f"image of {size[0]}x{size[1]} is not the size the maps were made on: "
            f"their {grid[0]}x{grid[1]} positions of window {maps.window} at stride "
            f"{maps.stride} do not fit it; pass the image the maps were made on"
        )
    if projection is not None:
        projection = _one_image(projection, "projection")
        if projection.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"projection {tuple(projection.shape)} and image "
                f"{tuple(image.shape)} differ in size: pass the projection of image "
                f"{index}"
            )
    return image, index, projection


def _check_names(maps: SensitivityMaps, index: int, names: Any) -> None:
    """Raise unless ``names`` (if given) names every class of image ``index``."""
    classes = max(int(maps.top_class[index].max()), int(maps.target[index])) + 1
    if names is not None and len(names) < classes:
        raise ValueError(
            f"class_names has {len(names)} names, but the maps of image {index} "
            f"hold class {classes - 1}: pass a name for every class"
        )
