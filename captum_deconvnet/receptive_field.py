"""Receptive fields: which input pixels each position of a layer's output sees.

The model is traced with ``torch.fx`` and a dry run records every tensor's shape. The
field then flows through the graph from the input: convolutions and pools widen it
(kernel, stride, padding, dilation), operations known to compute each position from
the same position (activations, normalisation, dropout) pass it on, and where
branches meet (a residual sum, a concatenation) the fields are united; any other
operation ends the field. So ResNet-style models get their real fields, not those of
a chain of their modules. A field is the usual hull; its boxes are clipped to the
extent of the pixels the layer reads, which leaves out the last rows and columns a
strided layer drops. In a chain of undilated windows the box of a position is then
the hull of the pixels it reads; otherwise, at borders, it may also hold pixels the
position skips (holes of a dilated window, the far side of a branch that reads
less, or the neighbourhood of a position that reads only padding).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ._inputs import as_int
from ._windows import Pair, map_size, node_shape, sliding_window
from .incremental.classify import (
    ELEMENTWISE_FUNCTIONS,
    ELEMENTWISE_METHODS,
    IDENTITY_MODULES,
    POINTWISE_FUNCTIONS,
    POINTWISE_METHODS,
    POINTWISE_MODULES,
)
from .incremental.graph import symbolic_trace
from .layers import guarded, layer_name

__all__ = ["ReceptiveField", "receptive_field"]

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ReceptiveField:
    """Where the positions of an activation map look in the input, per axis.

    Position ``(row, col)`` sees input rows ``start[0] + row * jump[0]`` up to
    ``size[0]`` rows further (exclusive), and likewise columns; near the border part
    of that lies in the padding, outside the image, or past the last rows and
    columns, which a strided layer may leave unread.

    Attributes:
        size: side of the field in input pixels, ``(rows, cols)``.
        jump: input pixels between neighbouring positions (the total stride).
        start: input row and column where position ``(0, 0)``'s field begins.
        image_size: ``(height, width)`` of the input the field was traced on, or
            ``None`` (a field built by hand).
        extent: ``(x0, y0, x1, y1)`` of the pixels that the layer's positions read
            in an input of ``image_size`` (ends exclusive), or ``None``.
        map_size: ``(rows, cols)`` of the layer's map in an input of
            ``image_size``, or ``None``.

    Fields compare by ``size``, ``jump`` and ``start``.
    """

    size: Pair
    jump: Pair
    start: Pair
    image_size: Pair | None = dataclasses.field(default=None, compare=False)
    extent: Box | None = dataclasses.field(default=None, compare=False)
    map_size: Pair | None = dataclasses.field(default=None, compare=False)

    def box(self, row: int, col: int, image_size: Pair) -> Box:
        """``(x0, y0, x1, y1)`` of position ``(row, col)``'s field, clipped to an image
        of ``image_size`` ``(height, width)``; ends are exclusive, as in the data
        modules' boxes (``image[..., y0:y1, x0:x1]``). A traced field is clipped to
        its ``extent``, so it holds no pixel that the layer (all its positions
        together) does not read; near a border a position's box may still hold
        pixels only its neighbours read (see the module's notes at borders). A
        position that reads only padding may get an empty box (``x1 <= x0`` or
        ``y1 <= y0``).

        Raises:
            TypeError: ``row`` or ``col`` not an int (or a 0-d integer tensor).
            ValueError: a negative ``row`` or ``col``, or one outside a traced
                field's ``map_size``; or if a traced field's ``image_size`` is
                another: what the layer reads near the border depends on the
                image's size.
        """
        row, col = self._position(row, col)
        height, width = image_size
        bounds = (0, 0, width, height)
        if self.image_size is not None:
            if tuple(image_size) != self.image_size:
                raise ValueError(
                    f"image_size {tuple(image_size)} is not the {self.image_size} "
                    "this field was traced for; call receptive_field with an "
                    "input_shape of that height and width"
                )
            bounds = self.extent
        y0 = self.start[0] + row * self.jump[0]
        x0 = self.start[1] + col * self.jump[1]
        y1, x1 = y0 + self.size[0], x0 + self.size[1]
        left, top, right, bottom = bounds
        return (max(x0, left), max(y0, top), min(x1, right), min(y1, bottom))

    def _position(self, row: Any, col: Any) -> tuple[int, int]:
        """``(row, col)`` as ints (a numpy or 0-d integer tensor one, as an
        ``argmax`` gives, too), if they are a position of the map."""
        for name, value in (("row", row), ("col", col)):
            if as_int(value) is None:
                raise TypeError(f"{name} must be an int, got {value!r}")
        row, col = int(row), int(col)
        if row < 0 or col < 0:
            raise ValueError(
                f"position {(row, col)} is outside the layer's map: rows and "
                "columns count from 0 at its top left"
            )
        if self.map_size is not None:
            rows, cols = self.map_size
            if row >= rows or col >= cols:
                raise ValueError(
                    f"position {(row, col)} is outside the layer's {rows}x{cols} "
                    f"map: pass a row in 0..{rows - 1} and a column in 0..{cols - 1}"
                )
        return row, col


@dataclass(frozen=True)
class _Unbounded:
    """A value whose positions do not have a field of the kind above, and why."""

    reason: str

    def __str__(self) -> str:
        return self.reason


Field = ReceptiveField | _Unbounded | None  # None: does not depend on the input


def receptive_field(
    model: nn.Module, layer: nn.Module, input_shape: Sequence[int]
) -> ReceptiveField:
    """The receptive field of the output of ``layer`` (its first run) in ``model``.

    Args:
        model: a network that ``torch.fx`` can trace, taking one image batch.
        layer: a submodule whose output is an ``(N, C, H, W)`` map.
        input_shape: ``(C, H, W)`` of one input image, for the dry run.

    A compiled or ``DataParallel`` model is read through the module it wraps. The
    field comes from the traced structure: hooks on the model itself are not run
    (those on its submodules are), so a hook that resizes the input is not seen.

    Raises:
        ValueError: if the layer's output is not one map with a bounded field (it
            follows a flatten, a linear layer, a resampling, reflection or
            replication padding, or an operation not known to keep positions
            apart; constant padding and a crop by indexing, ``x[:, :, 1:, 2:]``,
            move the field), if the model cannot be traced, or if ``input_shape``
            is not ``(C, H, W)`` or the model does not run on it.
        TypeError: if ``input_shape`` is an image (a tensor) rather than its shape,
            or not a sequence (one int, say).

    Example::

        >>> field = receptive_field(model, model.features[4], (3, 224, 224))
        >>> field.size, field.jump  # conv2 of ZFNet
        ((27, 27), (8, 8))
    """
    if isinstance(input_shape, Tensor) and input_shape.ndim > 1:
        raise TypeError(
            "input_shape is the (C, H, W) shape of one image, got a tensor of shape "
            f"{tuple(input_shape.shape)}: pass image.shape for one image (C, H, W), "
            "images.shape[1:] for a batch"
        )
    if not isinstance(input_shape, Sequence) and getattr(input_shape, "ndim", 0) != 1:
        raise TypeError(
            f"input_shape must be one image's (C, H, W), got {input_shape!r}"
        )
    shape = tuple(as_int(s) for s in input_shape)  # numpy ints as ints
    if len(shape) != 3 or not all(s is not None and s > 0 for s in shape):
        # the shape of a batch (N, C, H, W) has 4 entries; images.shape[1:] of an
        # unbatched image (C, H, W) has 2
        batched = ", for a batch (N, C, H, W) images.shape[1:]" * (len(shape) != 3)
        raise ValueError(
            f"input_shape must be one image's (C, H, W) of positive ints{batched}; "
            f"got {input_shape!r}"
        )
    with guarded(model, warn=False) as plain:  # shapes do not depend on the mode
        name = layer_name(plain, layer)
        if name == "":
            raise ValueError("layer must be a submodule of the model, not the model")
        graph = _shaped_graph(plain, shape, layer)
    fields: dict[fx.Node, Field] = {}
    for node in graph.graph.nodes:
        fields[node] = _node_field(graph, node, fields)
    output = graph.meta["watched"]  # what the layer returns from its first call
    if output is None:
        stacks = [node.meta.get("nn_module_stack", {}) for node in graph.graph.nodes]
        if not any(name in stack for stack in stacks):
            raise ValueError(f"layer {name!r} does not run in the model's forward pass")
        raise ValueError(f"layer {name!r} returns no single tensor (a tuple, say)")
    found = fields[output]
    if isinstance(found, _Unbounded):
        raise ValueError(f"layer {name!r} has no bounded receptive field: {found}")
    if found is None:
        raise ValueError(f"layer {name!r} does not see the input in the forward pass")
    return dataclasses.replace(found, map_size=map_size(output))


def _shaped_graph(
    model: nn.Module, input_shape: Sequence[int], layer: nn.Module
) -> fx.GraphModule:
    try:
        graph = symbolic_trace(model, watch=layer)
    except Exception as error:  # fx raises many kinds on untraceable code
        raise ValueError(
            f"receptive_field needs a model torch.fx can trace: {error}"
        ) from error
    parameter = next(model.parameters(), torch.zeros(()))
    example = torch.zeros(1, *input_shape, dtype=parameter.dtype)
    # The traced graph shares the model's modules, which the caller's guard keeps
    # in eval mode: batch-norm statistics stay untouched by the dry run.
    try:
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(graph).propagate(example.to(parameter.device))
    except Exception as error:  # noqa: BLE001 - whatever the model raises on it
        raise ValueError(
            f"the model does not run on an input of shape {tuple(input_shape)} "
            f"(input_shape): {error}"
        ) from error
    return graph


def _node_field(graph: fx.GraphModule, node: fx.Node, fields: dict) -> Field:
    if node.op == "placeholder":
        if node is not next(iter(graph.graph.nodes)):
            return None
        height, width = map_size(node)
        return ReceptiveField(
            (1, 1), (1, 1), (0, 0), (height, width), (0, 0, width, height)
        )
    inputs = [fields[n] for n in node.all_input_nodes]
    merged = _union(inputs, node)
    if node.op == "output" or not isinstance(merged, ReceptiveField):
        return merged
    window = sliding_window(graph, node)
    if window is not None:
        source = node.args[0] if node.args else node.kwargs["input"]
        return _widen(merged, window, map_size(source), map_size(node))
    return _same_size(graph, node, merged)


def _union(fields: list[Field], node: fx.Node) -> Field:
    """The field of a value computed from several: the hull of theirs."""
    known = [f for f in fields if f is not None]
    unbounded = [f for f in known if isinstance(f, _Unbounded)]
    if unbounded or not known:
        return unbounded[0] if unbounded else None
    if len({f.jump for f in known}) > 1:
        return _Unbounded(f"branches of different strides meet at {node.name}")
    start = tuple(min(f.start[a] for f in known) for a in (0, 1))
    end = tuple(max(f.start[a] + f.size[a] for f in known) for a in (0, 1))
    size = tuple(e - s for s, e in zip(start, end, strict=True))
    extent = tuple(min(f.extent[i] for f in known) for i in (0, 1))
    extent += tuple(max(f.extent[i] for f in known) for i in (2, 3))
    return ReceptiveField(size, known[0].jump, start, known[0].image_size, extent)


def _widen(
    field: ReceptiveField, window: tuple, in_size: Pair, out_size: Pair
) -> ReceptiveField:
    """The field after a sliding window ``(kernel, stride, padding, dilation)``
    from a map of ``in_size`` to one of ``out_size``."""
    kernel, stride, padding, dilation = window
    size, jump, start = [], [], []
    for a in (0, 1):
        span = dilation[a] * (kernel[a] - 1)
        size.append(field.size[a] + span * field.jump[a])
        start.append(field.start[a] - padding[a] * field.jump[a])
        jump.append(field.jump[a] * stride[a])
    (y0, y1), (x0, x1) = (
        _extent(field, a, [w[a] for w in window], in_size[a], out_size[a])
        for a in (0, 1)
    )
    return ReceptiveField(
        tuple(size), tuple(jump), tuple(start), field.image_size, (x0, y0, x1, y1)
    )


def _extent(
    field: ReceptiveField, axis: int, window: list[int], in_size: int, out_size: int
) -> Pair:
    """Along ``axis``, the pixels that the input positions some output position
    reads see: not those that only padding stands for, nor those past the last
    window of a stride."""
    kernel, stride, padding, dilation = window
    read = [
        q
        for j in range(out_size)
        for t in range(kernel)
        if 0 <= (q := j * stride - padding + t * dilation) < in_size
    ]
    low, high = field.extent[1 - axis], field.extent[3 - axis]  # (x0, y0, x1, y1)
    if not read:
        return low, low
    low = max(low, field.start[axis] + min(read) * field.jump[axis])
    end = field.start[axis] + max(read) * field.jump[axis] + field.size[axis]
    return low, max(low, min(high, end))


def _same_size(graph: fx.GraphModule, node: fx.Node, field: ReceptiveField) -> Field:
    """Pass the field on through an operation known to compute each position from
    the same position of its inputs (ReLU, normalisation, dropout, a sum, a
    concatenation of channels); anything else has no bounded field."""
    if node.target is operator.getitem and node_shape(node.args[0]) is None:
        return field  # a map taken out of a tuple, as max_pool2d's with indices
    out = node_shape(node)
    source = next((node_shape(n) for n in node.all_input_nodes if node_shape(n)), None)
    if _leading_dims_only(node, source, out):
        return field
    if out is not None and len(out) == 4 and source is not None and len(source) == 4:
        if out[-2:] != source[-2:]:
            return _Unbounded(f"{_describe(graph, node)} resamples the map")
        if _keeps_positions(graph, node):
            return field
        return _Unbounded(
            f"{_describe(graph, node)} is not known to keep each position's field"
        )
    return _Unbounded(f"{_describe(graph, node)} does not keep a spatial map")


def _leading_dims_only(node: fx.Node, source: tuple | None, out: tuple | None) -> bool:
    """Whether ``node`` picks or adds dimensions before the map's height and width
    alone: ``x[:, 0]`` and ``x.unsqueeze(1)``, as torchvision's ``transform_input``
    does per channel."""
    if source is None or out is None or out[-2:] != source[-2:]:
        return False
    if node.target is operator.getitem:
        index = node.args[1]  # ints and slices from the first dimension on
        return (
            isinstance(index, tuple)
            and len(index) <= len(source) - 2
            and all(isinstance(i, (int, slice)) for i in index)
        )
    if node.target in (torch.unsqueeze, "unsqueeze"):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return isinstance(dim, int) and 0 <= dim <= len(source) - 2
    return False


def _keeps_positions(graph: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` computes each position of its map from that position alone
    (the operations incremental occlusion knows as pointwise or elementwise)."""
    if node.op == "call_module":
        module = graph.get_submodule(node.target)
        return isinstance(module, _SAME_POSITION_MODULES)
    if node.op == "call_function":
        return node.target in _SAME_POSITION_FUNCTIONS
    return node.op == "call_method" and node.target in _SAME_POSITION_METHODS


def _describe(graph: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(graph.get_submodule(node.target)).__name__})"
    return f"{node.name}"


_SAME_POSITION_MODULES = (
    *POINTWISE_MODULES, *IDENTITY_MODULES, nn.modules.batchnorm._BatchNorm,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,  # to the same size: no change
)  # fmt: skip
_SAME_POSITION_FUNCTIONS = (
    POINTWISE_FUNCTIONS | ELEMENTWISE_FUNCTIONS
    | {torch.cat, F.batch_norm, F.local_response_norm, F.dropout, F.dropout2d}
    | {F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
)  # fmt: skip
_SAME_POSITION_METHODS = POINTWISE_METHODS | ELEMENTWISE_METHODS | {"contiguous"}
