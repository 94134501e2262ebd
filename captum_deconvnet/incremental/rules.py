"""How each kind of layer maps the changed boxes of its inputs to its own.

A node's value for a batch of occluded copies is held as one of three states:
:class:`Box` (the unoccluded value except inside one box per copy) or :class:`Dense`
(the copies' values in full); nodes that do not depend on the input keep their one
value. Each rule computes its node's state from its inputs' states through the
chunk of copies being computed (``forward.Chunk``); where it cannot keep a box it
computes the node in full, so every rule is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch import Tensor

from .boxes import Region, Window, cap, gather, paste, union, window_region

if TYPE_CHECKING:
    from .forward import Chunk

__all__ = [
    "Box",
    "Concat",
    "Dense",
    "Elementwise",
    "GlobalMean",
    "Identity",
    "Opaque",
    "Pointwise",
    "Rule",
    "ShapeQuery",
    "Shift",
    "SlidingWindow",
]


@dataclass
class Box:
    """The unoccluded value except inside ``region``, where it is ``values``
    ``(B, C, h, w)``."""

    region: Region
    values: Tensor


@dataclass
class Dense:
    """The copies' value in full (a tensor with the copies along its first
    dimension, or whatever the node returns)."""

    value: Any


State = Box | Dense


class Rule:
    """A layer kind. ``reads`` says which unoccluded values it needs: ``"raw"``
    of its inputs, ``"padded"`` (a window's), or ``""``; ``reads_own`` whether it
    needs its own."""

    reads = "raw"
    reads_own = False

    def region(self, node: fx.Node, regions: list[Region | None]) -> Region | None:
        """The box of the output given the inputs' boxes (``None``: everywhere)."""
        return None

    def compute(self, run: Chunk, node: fx.Node, states: dict) -> State:
        return Dense(
            run.call(node, {n: run.materialize(n, s) for n, s in states.items()})
        )

    def boxes(self, states: dict) -> list[Box] | None:
        """The inputs' boxes, or ``None`` when one input is dense."""
        boxes = list(states.values())
        return boxes if all(isinstance(b, Box) for b in boxes) else None


class Identity(Rule):
    """Leaves values as they are (an adaptive pool to the size it is given, a
    dropout in eval mode, ``contiguous``)."""

    reads = ""

    def region(self, node, regions):
        return regions[0]

    def compute(self, run, node, states):
        return next(iter(states.values()))


class Pointwise(Rule):
    """The output at a position depends on the input at that position only:
    activations, batch norm in eval mode, 1x1 convolutions of stride 1."""

    reads = ""

    def region(self, node, regions):
        return regions[0]

    def compute(self, run, node, states):
        ((source, state),) = states.items()
        if isinstance(state, Box):
            return Box(state.region, run.call(node, {source: state.values}))
        return super().compute(run, node, states)


class Shift(Rule):
    """Constant padding: the box moves by the top and left padding."""

    reads = ""

    def __init__(self, top: int, left: int) -> None:
        self.top, self.left = top, left

    def region(self, node, regions):
        region = regions[0]
        if region is None:
            return None
        shape = tuple(node.meta["incremental_shape"][2:])
        starts = region.starts + torch.tensor([self.top, self.left])
        return Region(starts, region.size, shape)

    def compute(self, run, node, states):
        (state,) = states.values()
        if isinstance(state, Box):
            return Box(self.region(node, [state.region]), state.values)
        return super().compute(run, node, states)


class SlidingWindow(Rule):
    """Convolutions and pools: the box grows by the kernel. Each copy's box runs
    on the unoccluded input around it with the input's box pasted in."""

    reads = "padded"

    def __init__(self, window: Window) -> None:
        self.window = window

    def region(self, node, regions, cap_fraction: float = 1.0):
        if regions[0] is None:
            return None
        shape = tuple(node.meta["incremental_shape"][2:])
        region = window_region(regions[0], self.window, shape)
        return cap(region, cap_fraction) if cap_fraction < 1 else region

    def compute(self, run, node, states):
        ((source, state),) = states.items()
        if not isinstance(state, Box):
            return super().compute(run, node, states)
        region = self.region(node, [state.region], run.cap_fraction)
        if not run.keep(node, region):
            return super().compute(run, node, states)
        window = self.window
        stride = torch.tensor(window.stride)
        corners = region.starts * stride  # of each piece, in the layer's padding
        span = [
            (s - 1) * st + window.extent(d)
            for d, (s, st) in enumerate(zip(region.size, window.stride, strict=True))
        ]
        padded, offset = run.padded(source, window.pad_value)
        extra = torch.tensor(offset) - torch.tensor(window.padding)
        pieces = gather(padded, run.images, corners + extra, span)
        paste(
            pieces,
            state.region.starts + torch.tensor(window.padding) - corners,
            state.values,
        )
        box = Box(region, window.apply(pieces))
        return run.trim(node, box) if run.tolerance > 0 else box


class Elementwise(Rule):
    """An elementwise layer of several inputs (a residual addition, a product):
    its box is the union of the inputs' boxes."""

    def region(self, node, regions):
        return None if any(r is None for r in regions) else union(regions)

    def compute(self, run, node, states):
        boxes = self.boxes(states)
        if boxes is None:
            return super().compute(run, node, states)
        region = self.region(node, [b.region for b in boxes])
        if not run.keep(node, region):
            return super().compute(run, node, states)
        values = {
            n: _in_region(run, n, s, region)
            for n, s in states.items()
            if isinstance(s, Box)
        }
        return Box(region, run.call(node, values))


class Concat(Elementwise):
    """``torch.cat`` along channels (Inception's branches): the union of the
    branches' boxes."""


def _in_region(run: Chunk, node: fx.Node, box: Box, region: Region) -> Tensor:
    """``box``'s values over the larger ``region``, the unoccluded ones around it."""
    if box.region.size == region.size and torch.equal(box.region.starts, region.starts):
        return box.values
    values = gather(run.base(node), run.images, region.starts, region.size)
    paste(values, box.region.starts - region.starts, box.values)
    return values


class GlobalMean(Rule):
    """A global average pool (the classifier's, or squeeze-and-excitation's): the
    unoccluded mean, plus the box's new values less its old ones over the map's
    area. The result differs everywhere, so it is dense."""

    reads_own = True

    def compute(self, run, node, states):
        ((source, state),) = states.items()
        if not isinstance(state, Box):
            return super().compute(run, node, states)
        region = state.region
        old = gather(run.base(source), run.images, region.starts, region.size)
        change = state.values.double().sum((2, 3)) - old.double().sum((2, 3))
        base = run.base(node)[run.images]
        change = change / (region.shape[0] * region.shape[1])
        return Dense((base.double() + change.reshape(base.shape)).to(base.dtype))


class ShapeQuery(Rule):
    """``x.size()``, ``x.dim()``, ``x.shape``: answered from the copies' shape."""

    reads = ""

    def compute(self, run, node, states):
        shapes = {
            n: torch.empty(
                (len(run.images), *n.meta["incremental_shape"][1:]), device="meta"
            )
            if isinstance(s, Box)
            else s.value
            for n, s in states.items()
        }
        return Dense(run.call(node, shapes))


class Opaque(Rule):
    """A layer the plan does not know: computed in full on the copies. Where its
    result still equals the unoccluded one outside a box (it was local after all),
    the plan goes on with that box."""

    reads_own = True

    def compute(self, run, node, states):
        state = super().compute(run, node, states)
        shape = node.meta.get("incremental_shape")
        value = state.value
        if (
            shape is None
            or len(shape) != 4
            or not isinstance(value, Tensor)
            or value.shape != (len(run.images), *shape[1:])
            or any(isinstance(s, Dense) for s in states.values())
        ):
            return state
        return _rebox(run, node, value) or state


def _rebox(run: Chunk, node: fx.Node, value: Tensor) -> Box | None:
    base = run.base(node)
    base = base if base.shape[0] == 1 else base[run.images]
    shape = tuple(value.shape[2:])
    whole = Region(torch.zeros(len(value), 2, dtype=torch.long), shape, shape)
    box = cut(Box(whole, value), (value != base).any(1))
    return box if run.keep(node, box.region) else None


def cut(box: Box, changed: Tensor) -> Box:
    """``box`` cut to the positions that ``changed`` ``(B, h, w)`` marks, with one
    size for every copy."""
    starts, size = [], []
    for along in (2, 1):
        line = changed.any(along)  # (B, h) then (B, w)
        index = torch.arange(line.shape[1], device=line.device)
        first = torch.where(line, index, line.shape[1]).amin(1)
        last = torch.where(line, index, -1).amax(1)
        length = int((last - first + 1).amax().clamp(min=1))
        starts.append(torch.minimum(first, torch.tensor(line.shape[1] - length)))
        size.append(length)
    offsets = torch.stack(starts, 1).cpu()
    region = Region(box.region.starts + offsets, tuple(size), box.region.shape)
    index = torch.arange(len(box.values), device=box.values.device)
    return Box(region, gather(box.values, index, offsets, region.size))
