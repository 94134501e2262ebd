"""The sliding window of a traced node: a 2-D convolution, pool or constant pad, as
its kernel, stride, padding and dilation (for :mod:`.receptive_field`)."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["Pair", "map_size", "node_shape", "sliding_window"]

Pair = tuple[int, int]

_POOL_FUNCTIONS = {
    F.max_pool2d, F.max_pool2d_with_indices, F.avg_pool2d, torch.max_pool2d,
}  # fmt: skip
_CONV_FUNCTIONS = {F.conv2d, torch.conv2d}


def node_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The shape of the tensor ``node`` computes in the dry run (``None`` for
    anything else)."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def map_size(node: fx.Node) -> Pair:
    """Height and width of the map ``node`` computes (the first of a tuple, as
    ``max_pool2d`` with indices returns)."""
    meta = node.meta["tensor_meta"]
    if not hasattr(meta, "shape"):
        meta = meta[0]
    return tuple(meta.shape[-2:])


def sliding_window(
    graph: fx.GraphModule, node: fx.Node
) -> tuple[Pair, Pair, Pair, Pair] | None:
    """``(kernel, stride, padding, dilation)`` of a 2-D conv or pool (or constant
    padding, as a 1x1 window), else None."""
    if node.op == "call_module":
        module = graph.get_submodule(node.target)
        if isinstance(module, nn.Conv2d):
            if module.padding_mode == "circular":
                raise ValueError(f"circular padding wraps the field around: {module}")
            return _conv_window(
                module.kernel_size, module.stride, module.padding, module.dilation
            )
        if isinstance(module, (nn.ZeroPad2d, nn.ConstantPad2d)):
            return _pad_window(module.padding)
        if isinstance(module, (nn.ReflectionPad2d, nn.ReplicationPad2d)):
            raise ValueError(f"{module} copies pixels across the border: no window")
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            dilation = getattr(module, "dilation", 1)
            kernel, stride = module.kernel_size, module.stride or module.kernel_size
            return tuple(_pair(v) for v in (kernel, stride, module.padding, dilation))
        return None
    if node.op != "call_function":
        return None
    if node.target is operator.getitem:
        return _crop_window(node)
    if node.target in _CONV_FUNCTIONS:
        args = _bind(node, ("input", "weight", "bias", "stride", "padding", "dilation"))
        kernel = node_shape(args["weight"])[-2:]
        stride, dilation = args.get("stride", 1), args.get("dilation", 1)
        return _conv_window(kernel, stride, args.get("padding", 0), dilation)
    if node.target is F.pad:
        args = _bind(node, ("input", "pad", "mode", "value"))
        if args.get("mode", "constant") != "constant":
            raise ValueError(f"{node.name} pads with mode {args['mode']!r}: no window")
        return _pad_window(args["pad"])
    if node.target in _POOL_FUNCTIONS:
        args = _bind(node, ("input", "kernel_size", "stride", "padding", "dilation"))
        kernel = args["kernel_size"]
        stride = args.get("stride") or kernel
        dilation = args.get("dilation", 1) if node.target is not F.avg_pool2d else 1
        padding = args.get("padding", 0)
        return tuple(_pair(v) for v in (kernel, stride, padding, dilation))
    return None


def _pad_window(pad: Sequence[int]) -> tuple[Pair, Pair, Pair, Pair]:
    """Constant padding ``(left, right[, top, bottom, ...])`` as a 1x1 window: it
    moves the map's origin by the leading pads (negative ones crop)."""
    left, top = pad[0], pad[2] if len(pad) > 2 else 0
    return (1, 1), (1, 1), (top, left), (1, 1)


def _crop_window(node: fx.Node) -> tuple[Pair, Pair, Pair, Pair] | None:
    """A crop of a map, ``x[:, :, y0:y1, x0:x1]`` (or ``x[..., y0:y1, x0:x1]``) in
    steps of 1, as a 1x1 window that moves the origin by the rows and columns cut
    at the start; None for any other indexing."""
    source, index = node.args
    shape = node_shape(source) if isinstance(source, fx.Node) else None
    if shape is None or len(shape) != 4 or not isinstance(index, tuple):
        return None
    if index[:1] == (Ellipsis,):
        index = (slice(None),) * (5 - len(index)) + index[1:]
    whole = slice(None)
    if len(index) != 4 or index[:2] != (whole, whole):
        return None
    starts = []
    for part, size in zip(index[2:], shape[2:], strict=True):
        if not isinstance(part, slice) or not all(
            b is None or type(b) is int for b in (part.start, part.stop, part.step)
        ):
            return None
        start, _, step = part.indices(size)
        if step != 1:
            return None
        starts.append(start)
    return (1, 1), (1, 1), (-starts[0], -starts[1]), (1, 1)


def _conv_window(kernel, stride, padding, dilation) -> tuple[Pair, Pair, Pair, Pair]:
    kernel, stride, dilation = _pair(kernel), _pair(stride), _pair(dilation)
    if padding == "valid":
        padding = 0
    elif padding == "same":  # PyTorch puts the odd pixel of padding at the end
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
    return kernel, stride, _pair(padding), dilation


def _bind(node: fx.Node, names: Sequence[str]) -> dict:
    bound = dict(zip(names, node.args, strict=False))  # args may stop early
    bound.update(node.kwargs)
    return bound


def _pair(value: int | Sequence[int]) -> Pair:
    if isinstance(value, int):
        return (value, value)
    return tuple(value) if len(value) == 2 else (value[0], value[0])
