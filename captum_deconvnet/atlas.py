"""The feature atlas of the paper's Fig. 2: each channel's top-k activations over a
dataset, each projected to pixel space on its own, beside the image patch it saw."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision.utils import make_grid, save_image

from ._inputs import as_int, holds_integers, positive_int
from .deconvnet import FeatureMapDeconvNet
from .display import normalize_projection
from .layers import guarded, layer_outputs, model_device, outside_stacklevel
from .receptive_field import ReceptiveField, receptive_field
from .topk import TopKActivations, first_item, top_activations

__all__ = [
    "LayerAtlas",
    "cut_patches",
    "feature_atlas",
    "project_top_activations",
    "save_atlas",
]


@dataclass
class LayerAtlas:
    """One layer's atlas: per channel ``c`` and rank ``j`` (strongest first).

    Slots that no activation filled (fewer than k in the data) have image ``-1``
    and zero projection and patch.

    Attributes:
        layer: the layer's name in the model.
        field: the layer's receptive field.
        values: ``(C, k)`` the activations.
        images: ``(C, k)`` their dataset indices.
        positions: ``(C, k, 2)`` their ``(row, col)`` in the layer's map.
        projections: ``(C, k, channels, h, w)`` each activation's deconvnet
            projection, cut to its receptive field.
        patches: ``(C, k, channels, h, w)`` the image under the receptive field.
    """

    layer: str
    field: ReceptiveField
    values: Tensor
    images: Tensor
    positions: Tensor
    projections: Tensor
    patches: Tensor


def cut_patches(
    images: Tensor,
    field: ReceptiveField,
    positions: Tensor,
    fill: float | Tensor = 0.0,
) -> Tensor:
    """Cut from ``images[i]`` the receptive field of map position ``positions[i]``.

    Each patch is the field clipped to the image, on a canvas of the field's size
    (at most the image's): where the field reaches past the border, the canvas
    keeps ``fill`` on that side, so a patch's pixels sit where they do in the field.

    Args:
        images: ``(K, C, H, W)``.
        field: the receptive field of the map the positions index.
        positions: ``(K, 2)`` rows and columns in the map.
        fill: value outside the image; one for all, or ``(K,)``.

    Returns:
        ``(K, C, h, w)`` with ``h = min(field.size[0], H)``, likewise ``w``.

    Raises:
        TypeError: ``images`` not a tensor.
        ValueError: ``images`` not ``(K, C, H, W)``, ``positions`` not ``(K, 2)``
            ints, or a position whose field lies wholly outside the image.

    Example::

        >>> patches = cut_patches(images, receptive_field(model, layer, (1, 64, 64)),
        ...                       torch.tensor([[3, 4], [0, 0]]))
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a tensor (K, C, H, W), got {type(images)}")
    if images.ndim != 4:
        raise ValueError(f"images must be (K, C, H, W), got {tuple(images.shape)}")
    positions = torch.as_tensor(positions)
    if positions.shape != (len(images), 2) or not holds_integers(positions):
        raise ValueError(
            f"positions must be ({len(images)}, 2) ints, a (row, col) per image, "
            f"got {positions.dtype} of shape {tuple(positions.shape)}"
        )
    k, channels, height, width = images.shape
    side = (min(field.size[0], height), min(field.size[1], width))
    fills = torch.as_tensor(fill, dtype=images.dtype).expand(k)
    patches = fills.to(images.device)[:, None, None, None].repeat(1, channels, *side)
    for i, (row, col) in enumerate(positions.tolist()):
        x0, y0, x1, y1 = field.box(row, col, (height, width))
        if x1 <= x0 or y1 <= y0:
            raise ValueError(
                f"position {(row, col)} sees nothing of a {height}x{width} image "
                f"(field {field}): it is not a position of this layer's map"
            )
        top = _offset(field.start[0] + row * field.jump[0], y0, y1 - y0, side[0])
        left = _offset(field.start[1] + col * field.jump[1], x0, x1 - x0, side[1])
        patches[i, :, top : top + y1 - y0, left : left + x1 - x0] = images[
            i, :, y0:y1, x0:x1
        ]
    return patches


def _offset(field_start: int, start: int, length: int, side: int) -> int:
    """Where the stretch ``start`` to ``start + length`` of a field beginning at
    ``field_start`` goes on a canvas of ``side``: where it lies in the field, or as
    near as the canvas allows (a field larger than the image, cut off at its
    start, ends at the canvas's end). The stretch may be cut off at the start by
    the image's border or by the pixels the layer reads (a crop, say)."""
    return min(start - field_start, side - length)


def project_top_activations(
    model: nn.Module,
    top: TopKActivations,
    dataset: Dataset | Tensor,
    batch_size: int = 64,
    normalization: str = "skip",
    channels: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, LayerAtlas]:
    """Project every entry of ``top`` with :class:`FeatureMapDeconvNet` and cut the
    patches under them; the model runs in eval mode (and returns to its mode).
    Projections and patches are in the images' dtype.

    Args:
        model: the network ``top`` was scanned with.
        top: the state of :func:`~captum_deconvnet.top_activations` (or of
            ``lightning_zfnet.scan_top_activations``).
        dataset: the dataset it was scanned over.
        batch_size: projections per forward and reverse pass.
        normalization: as for :class:`FeatureMapDeconvNet`.
        channels: per layer name, the only channels to project (a layer not named:
            all). The others keep their values, images and positions, with zero
            projections and patches: a picture of a few channels needs only theirs.

    Returns:
        One :class:`LayerAtlas` per layer of ``top``, by name.

    Raises:
        TypeError: if ``top`` is not a :class:`TopKActivations`.
        ValueError: ``channels`` naming a layer ``top`` does not hold, a channel
            out of range, or ``top`` holding images past the end of ``dataset``
            (it was scanned over another dataset).

    Warns:
        UserWarning: when the images loaded again do not give the activations
            ``top`` stored (beyond 5 %, as a scan under bf16 autocast may differ):
            a dataset with random transforms shows other pixels than it scanned.
    """
    if not isinstance(top, TopKActivations):
        raise TypeError(
            "top must be the TopKActivations of top_activations or "
            f"scan_top_activations, got {type(top).__name__}"
        )
    channels = channels or {}
    unknown = sorted(set(channels) - set(top.layers))
    if unknown:
        raise ValueError(
            f"channels names layers the scan has not seen: {unknown}; it has "
            f"{sorted(top.layers)}"
        )
    _check_images_in(top, len(dataset))
    image_shape = tuple(first_item(dataset[0]).shape)
    atlases = {}
    with guarded(model) as plain:
        for name in top.layers:
            layer = plain.get_submodule(name)
            field = receptive_field(plain, layer, image_shape)
            atlases[name] = _project_layer(
                FeatureMapDeconvNet(plain, layer, normalization),
                top,
                name,
                field,
                dataset,
                batch_size,
                channels.get(name),
            )
    return atlases


def _check_images_in(top: TopKActivations, size: int) -> None:
    """Raise unless every image ``top`` holds is one of a dataset of ``size``."""
    for name in top.layers:
        last = int(top.entries(name).images.max())
        if last >= size:
            raise ValueError(
                f"top holds activations of image {last} (layer {name!r}), but the "
                f"dataset has {size} items: pass the dataset top was scanned over"
            )


def _project_layer(
    explainer: FeatureMapDeconvNet,
    top: TopKActivations,
    name: str,
    field: ReceptiveField,
    dataset: Dataset | Tensor,
    batch_size: int,
    chosen: Sequence[int] | None = None,
) -> LayerAtlas:
    values, images, rows, cols = top.entries(name)
    channels, k = values.shape
    device = model_device(explainer.model)
    positions = torch.stack([rows, cols], dim=-1)
    wanted = images >= 0
    if chosen is not None:
        picked = torch.zeros(channels, dtype=torch.bool)
        picked[_checked_channels(chosen, channels, f"channels of {name}")] = True
        wanted &= picked[:, None]
    filled = wanted.flatten().nonzero().flatten().tolist()
    projections, patches, reloaded = [], [], []
    for start in range(0, len(filled), batch_size):
        entries = filled[start : start + batch_size]
        sources = images.flatten()[entries].tolist()
        x = torch.stack([first_item(dataset[i]) for i in sources]).to(device)
        where = positions.flatten(0, 1)[entries]
        channel = torch.tensor(entries) // k
        projection = explainer.attribute(x, channel, positions=where).detach()
        reloaded.append(_activations_at(explainer, x, channel, where))
        projections.append(cut_patches(projection, field, where).cpu())
        minima = x.flatten(1).amin(dim=1)  # outside the image: its darkest value
        patches.append(cut_patches(x, field, where, fill=minima).cpu())
    if filled:
        _warn_if_reloaded_differ(name, torch.cat(reloaded), values.flatten()[filled])
    return LayerAtlas(
        layer=name,
        field=field,
        values=values,
        images=images,
        positions=positions,
        projections=_scatter(projections, filled, channels, k),
        patches=_scatter(patches, filled, channels, k),
    )


def _activations_at(
    explainer: FeatureMapDeconvNet, x: Tensor, channel: Tensor, where: Tensor
) -> Tensor:
    """``(K,)`` the explained layer's activations of ``channel`` at ``where``."""
    with torch.no_grad():
        (activation,), _ = layer_outputs(explainer.model, [explainer.layer], x)
    index = torch.arange(len(x))
    values = activation[index, channel.to(activation.device)]
    if values.ndim == 3:  # (K, H, W) maps: the value at the stored position
        values = values[index, where[:, 0], where[:, 1]]
    return values.float().cpu()


def _warn_if_reloaded_differ(name: str, now: Tensor, scanned: Tensor) -> None:
    """Warn when images loaded again do not give the activations the scan stored:
    a dataset with random transforms gives other pixels each time."""
    scanned = scanned.float()
    # loose enough for a scan under bf16 autocast or another batch size
    if torch.allclose(now, scanned, rtol=0.05, atol=1e-3 * scanned.abs().max()):
        return
    worst = int((now - scanned).abs().argmax())
    warnings.warn(
        f"layer {name!r}: images loaded again give other activations than the scan "
        f"stored ({float(now[worst]):.4g} against {float(scanned[worst]):.4g}), so "
        "their projections and patches show other pixels than those scanned; a "
        "dataset with random transforms does this: scan and project one without",
        UserWarning,
        stacklevel=outside_stacklevel(),
    )


def _checked_channels(chosen: Sequence[int], count: int, what: str) -> list[int]:
    """``chosen`` as a list of ints, if it is some of the channels ``0..count - 1``
    (numpy ints and the entries of an integer tensor count as ints)."""
    ints = [as_int(c) for c in chosen]
    if not ints or any(c is None or not 0 <= c < count for c in ints):
        raise ValueError(
            f"{what} must be a non-empty list of channels in 0..{count - 1}, "
            f"got {chosen!r}"
        )
    return ints


def _scatter(parts: list[Tensor], filled: list[int], channels: int, k: int) -> Tensor:
    """``(C, k, ...)`` holding the filled entries' results, zeros elsewhere."""
    if not parts:
        raise ValueError("the top-k state holds no activations")
    done = torch.cat(parts)
    out = done.new_zeros(channels * k, *done.shape[1:])
    out[filled] = done
    return out.view(channels, k, *done.shape[1:])


def feature_atlas(
    model: nn.Module,
    layers: Sequence[nn.Module],
    dataset: Dataset | Tensor,
    k: int = 9,
    batch_size: int = 64,
    normalization: str = "skip",
    distinct_images: bool = False,
) -> dict[str, LayerAtlas]:
    """Fig. 2: scan ``dataset`` for each channel's top-``k`` activations of
    ``layers``, then project each and cut its patch.

    Args:
        model: the network.
        layers: submodules of ``model`` whose output maps are shown.
        dataset: images ``(N, C, H, W)``, or a dataset of images or of tuples
            starting with one.
        k: activations per channel (the paper shows 9).
        batch_size: images per scanning pass and projections per reverse pass.
        normalization: as for :class:`FeatureMapDeconvNet`.
        distinct_images: each channel's ``k`` activations from ``k`` different
            images, each at its strongest position, as in the paper's Fig. 2 (see
            :class:`~captum_deconvnet.TopKActivations`). Default ``False``: the
            ``k`` strongest (image, position) pairs, which may repeat an image.

    Returns:
        One :class:`LayerAtlas` per layer, by its name in ``model``. For a dataset
        that outgrows one process, scan it with ``lightning_zfnet.scan_top_activations``
        (DDP over GPUs and nodes) and pass the state to
        :func:`project_top_activations`.

    Warns:
        UserWarning: a ``dataset`` that gives other pixels each time it loads an
            image (random transforms): see :func:`project_top_activations`.

    Example::

        >>> atlas = feature_atlas(
        ...     model, [model.features[4]], val_set, distinct_images=True
        ... )
        >>> save_atlas(atlas["features.4"], "conv2.png", channels=range(16))
    """
    with guarded(model) as plain:  # one guard, one warning, for both steps
        top = top_activations(
            plain, layers, dataset, k, batch_size, distinct_images=distinct_images
        )
        return project_top_activations(plain, top, dataset, batch_size, normalization)


def save_atlas(
    atlas: LayerAtlas,
    path: str | os.PathLike,
    channels: Sequence[int] | None = None,
    per_row: int | None = None,
    min_side: int = 24,
) -> None:
    """Save a layer's atlas as a PNG: per channel, its projections (each scaled
    around zero, zero mid-grey) beside the image patches under them.

    Args:
        atlas: from :func:`feature_atlas` or :func:`project_top_activations`.
        path: the PNG file.
        channels: the channels to show (default all).
        per_row: channels per row of the picture (default about a square).
        min_side: patches smaller than this are enlarged by a whole factor.

    Raises:
        TypeError: if ``atlas`` is not one layer's :class:`LayerAtlas` (the dict
            of all layers, say).
        ValueError: if ``channels`` is empty or holds a channel out of range,
            ``per_row`` is not a positive int, or the images have other than 1 or
            3 channels.
    """
    if isinstance(atlas, Mapping):
        raise TypeError(
            f"atlas must be one layer's LayerAtlas, got the dict of layers "
            f"{list(atlas)}: pass one of its entries, e.g. "
            f"atlas[{next(iter(atlas), 'name')!r}]"
        )
    if not isinstance(atlas, LayerAtlas):
        raise TypeError(f"atlas must be a LayerAtlas, got {type(atlas).__name__}")
    colours = atlas.patches.shape[2]
    if colours not in (1, 3):
        raise ValueError(
            f"save_atlas draws images of 1 or 3 channels, but the atlas holds "
            f"{colours}: keep one or three, e.g. dataclasses.replace(atlas, "
            "projections=atlas.projections[:, :, :3], "
            "patches=atlas.patches[:, :, :3])"
        )
    count = atlas.values.shape[0]
    chosen = range(count) if channels is None else channels
    chosen = _checked_channels(chosen, count, "channels")
    projections = atlas.projections[chosen]
    patches = atlas.patches[chosen]
    low, high = patches.amin(), patches.amax()
    patches = (patches - low) / (high - low).clamp(min=1e-12)
    zoom = max(1, math.ceil(min_side / projections.shape[-2]))
    blocks = [_block(p, q, zoom) for p, q in zip(projections, patches, strict=True)]
    square = math.ceil(math.sqrt(len(blocks)))
    per_row = square if per_row is None else positive_int("per_row", per_row)
    grid = make_grid(blocks, nrow=per_row, padding=6, pad_value=1.0)
    save_image(grid, path)


def _block(projections: Tensor, patches: Tensor, zoom: int) -> Tensor:
    """A channel's ``k`` projections in a square, beside its ``k`` patches."""
    side = math.ceil(math.sqrt(projections.shape[0]))
    pictures = []
    for images in (normalize_projection(projections), patches):
        images = images.repeat_interleave(zoom, -2).repeat_interleave(zoom, -1)
        grid = make_grid(images.float().cpu(), nrow=side, padding=1, pad_value=1.0)
        pictures.append(grid)
    gap = torch.ones(3, pictures[0].shape[1], 2)
    return torch.cat([pictures[0], gap, pictures[1]], dim=2)
