"""Box arithmetic: where each occluded copy differs from the unoccluded input.

An occluder changes one box of the input. Every layer maps the boxes of its inputs
to the box of its output that can differ (a window layer grows it by its kernel, an
elementwise layer takes the union, ...). A :class:`Region` holds the boxes of a batch
of copies: one top-left corner per copy and one size for all of them, so their
values stack into one ``(B, C, h, w)`` tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Region", "Window", "cap", "gather", "paste", "union", "window_region"]


@dataclass(frozen=True)
class Region:
    """One box per copy in a map of ``shape`` ``(H, W)``.

    Attributes:
        starts: ``(B, 2)`` int64 on the CPU, each box's top-left ``(row, col)``.
        size: ``(h, w)``, the same for every copy; boxes lie inside the map.
        shape: ``(H, W)`` of the map.
    """

    starts: Tensor
    size: tuple[int, int]
    shape: tuple[int, int]

    @property
    def everywhere(self) -> bool:
        return self.size == self.shape

    @property
    def area(self) -> int:
        return self.size[0] * self.size[1]


@dataclass(frozen=True)
class Window:
    """A sliding-window layer (convolution or pooling), as it runs on a slice of
    its input that it must not pad: ``apply`` is the layer with padding 0."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]  # top, left (the layer pads bottom and right alike)
    dilation: tuple[int, int]
    pad_value: float
    apply: Callable[[Tensor], Tensor]

    def extent(self, dim: int) -> int:
        return self.dilation[dim] * (self.kernel[dim] - 1) + 1

    def padding_needed(self, in_shape, out_shape) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` padding that holds every window (the
        bottom and right as far as the last window reaches, at least 0)."""
        far = [
            (out_shape[d] - 1) * self.stride[d] + self.extent(d)
            - in_shape[d] - self.padding[d]
            for d in (0, 1)
        ]  # fmt: skip
        top, left = self.padding
        return top, max(far[0], 0), left, max(far[1], 0)


def _tensor(values, like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def window_region(region: Region, window: Window, out_shape) -> Region:
    """The outputs of ``window`` whose window meets each copy's box."""
    starts, box = region.starts, _tensor(region.size, region.starts)
    stride, padding = _tensor(window.stride, starts), _tensor(window.padding, starts)
    extent = _tensor([window.extent(0), window.extent(1)], starts)
    out = _tensor(out_shape, starts)
    low = (starts + padding - extent + stride).div(stride, rounding_mode="floor")
    high = (starts + box - 1 + padding).div(stride, rounding_mode="floor") + 1
    low, high = low.clamp(min=0), torch.minimum(high, out)
    size = torch.minimum((high - low).amax(0).clamp(min=1), out)
    return Region(torch.minimum(low, out - size), _size(size), tuple(out_shape))


def union(regions: list[Region]) -> Region:
    """Per copy, the smallest box that holds every region's box."""
    low = torch.stack([r.starts for r in regions]).amin(0)
    ends = [r.starts + _tensor(r.size, r.starts) for r in regions]
    high = torch.stack(ends).amax(0)
    shape = _tensor(regions[0].shape, low)
    size = (high - low).amax(0)
    return Region(torch.minimum(low, shape - size), _size(size), regions[0].shape)


def cap(region: Region, fraction: float) -> Region:
    """Krypton's projective-field threshold: each box at most ``fraction`` of the
    map's side, about the box's centre (an approximation: what lies outside keeps
    its unoccluded value)."""
    limit = [max(1, math.ceil(fraction * s)) for s in region.shape]
    size = [min(s, m) for s, m in zip(region.size, limit, strict=True)]
    if list(region.size) == size:
        return region
    shift = _tensor(
        [(s - n) // 2 for s, n in zip(region.size, size, strict=True)], region.starts
    )
    return Region(region.starts + shift, tuple(size), region.shape)


def _size(size: Tensor) -> tuple[int, int]:
    return int(size[0]), int(size[1])


def gather(source: Tensor, images: Tensor, corners: Tensor, size) -> Tensor:
    """``(B, C, h, w)``: the ``size`` window at ``corners[b]`` of image
    ``images[b]`` of ``source`` ``(N, C, H, W)``, for every copy ``b`` at once."""
    if source.device.type == "cpu":
        return _gather_each(source, images, corners, size)
    return _gather_indexed(source, images, corners, size)


def _gather_each(source: Tensor, images: Tensor, corners: Tensor, size) -> Tensor:
    """A slice per copy: on the CPU several times cheaper than one indexing."""
    (h, w), pairs = size, zip(images.tolist(), corners.tolist(), strict=True)
    return torch.stack([source[i, :, y : y + h, x : x + w] for i, (y, x) in pairs])


def _gather_indexed(source: Tensor, images: Tensor, corners: Tensor, size) -> Tensor:
    """One indexing of every window: on a GPU one kernel, not one per copy."""
    h, w = size
    windows = source.unfold(2, h, 1).unfold(3, w, 1).permute(0, 2, 3, 1, 4, 5)
    corners = corners.to(source.device)
    return windows[images, corners[:, 0], corners[:, 1]]


def paste(target: Tensor, offsets: Tensor, values: Tensor) -> None:
    """Write ``values[b]`` into ``target[b]`` with its top-left at ``offsets[b]``,
    in place, leaving out what falls outside ``target``."""
    if bool((offsets == offsets[0]).all()):
        into, out_of = _overlap(offsets[0].tolist(), target, values)
        if into is not None:
            target[:, :, into[0], into[1]] = values[:, :, out_of[0], out_of[1]]
    elif target.device.type == "cpu":
        _paste_each(target, offsets, values)
    else:
        _paste_grouped(target, offsets, values)


def _paste_each(target: Tensor, offsets: Tensor, values: Tensor) -> None:
    """A slice per copy: on the CPU several times cheaper than grouping."""
    for b, offset in enumerate(offsets.tolist()):
        into, out_of = _overlap(offset, target, values)
        if into is not None:
            target[b, :, into[0], into[1]] = values[b, :, out_of[0], out_of[1]]


def _paste_grouped(target: Tensor, offsets: Tensor, values: Tensor) -> None:
    """One write per distinct offset, of every copy that has it: on a GPU fewer
    kernels than one per copy."""
    unique, inverse = torch.unique(offsets, dim=0, return_inverse=True)
    for k, offset in enumerate(unique.tolist()):
        into, out_of = _overlap(offset, target, values)
        if into is not None:
            members = (inverse == k).nonzero().flatten().to(target.device)
            part = values[members][:, :, out_of[0], out_of[1]]
            target[:, :, into[0], into[1]].index_copy_(0, members, part)


def _overlap(offset, target: Tensor, values: Tensor):
    """The slices of ``target`` and of ``values`` where ``values`` placed at
    ``offset`` ``(row, col)`` meets ``target``; ``(None, None)`` where it misses."""
    into, out_of = [], []
    for o, size, length in zip(offset, target.shape[2:], values.shape[2:], strict=True):
        start, stop = max(o, 0), min(o + length, size)
        if start >= stop:
            return None, None
        into.append(slice(start, stop))
        out_of.append(slice(start - o, stop - o))
    return into, out_of


def pad(source: Tensor, sides: tuple[int, int, int, int], value: float) -> Tensor:
    """``source`` padded by ``(top, bottom, left, right)`` with ``value``."""
    top, bottom, left, right = sides
    return F.pad(source, (left, right, top, bottom), value=value)
