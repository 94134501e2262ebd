"""Which rule serves each node of the traced model, decided from the node and the
values it took and gave on the unoccluded batch. Anything not recognised for certain
is :class:`~.rules.Opaque` (computed in full), so an unknown layer costs speed,
never exactness."""

from __future__ import annotations

import inspect
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .boxes import Window
from .rules import (
    Concat,
    Elementwise,
    GlobalMean,
    Identity,
    Opaque,
    Pointwise,
    Rule,
    ShapeQuery,
    Shift,
    SlidingWindow,
)

__all__ = [
    "ELEMENTWISE_FUNCTIONS",
    "ELEMENTWISE_METHODS",
    "IDENTITY_MODULES",
    "POINTWISE_FUNCTIONS",
    "POINTWISE_METHODS",
    "POINTWISE_MODULES",
    "rule_for",
]

POINTWISE_MODULES = {
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh,
    nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid,
    nn.Hardshrink, nn.Softshrink, nn.LocalResponseNorm, nn.BatchNorm2d,
    nn.ChannelShuffle,
}  # fmt: skip
IDENTITY_MODULES = {
    nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout,
}  # fmt: skip
POINTWISE_FUNCTIONS = {
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.hardtanh, F.leaky_relu,
    F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
    torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, torch.clamp, torch.clip,
    F.softplus, torch.abs, torch.neg, torch.exp,
    # in-place forms (run on a copy, see graph.node_runner)
    torch.sigmoid_, torch.tanh_, torch.clamp_, torch.clip_, torch.abs_, torch.neg_,
    torch.exp_, F.leaky_relu_, F.elu_, F.hardtanh_, F.celu_, F.selu_,
}  # fmt: skip
POINTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_",
    "clip", "clip_", "abs", "abs_", "neg", "neg_", "exp", "exp_",
}  # fmt: skip
ELEMENTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
    operator.isub, operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul,
    torch.div, torch.maximum, torch.minimum,
}  # fmt: skip
ELEMENTWISE_METHODS = {
    "add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_", "maximum", "minimum",
}  # fmt: skip


def rule_for(
    gm: fx.GraphModule,
    node: fx.Node,
    args: tuple,
    kwargs: dict,
    inputs: dict[fx.Node, Any],
    out: Any,
) -> Rule:
    """The rule for ``node``, which ran as ``node(*args, **kwargs)`` and gave
    ``out``; ``inputs`` holds the values of the nodes it takes that depend on the
    input."""
    if node.op == "call_method" and node.target in ("size", "dim"):
        return ShapeQuery()
    if node.op == "call_function" and node.target is getattr and args[1] == "shape":
        return ShapeQuery()
    if not isinstance(out, Tensor) or not inputs:
        return Opaque()
    if not all(isinstance(v, Tensor) and v.ndim == 4 for v in inputs.values()):
        return Opaque()
    several = len(inputs) > 1 or node.target in ELEMENTWISE_FUNCTIONS | {torch.cat}
    if several or node.target in ELEMENTWISE_METHODS:
        if not _uniform_constants(args, kwargs, inputs):
            return Opaque()
        return _several(node, args, inputs, out)
    if not node.args or node.args[0] not in inputs:
        return Opaque()  # the one input that changes is not the first argument
    x = inputs[node.args[0]]
    if node.op == "call_module":
        return _module_rule(gm.get_submodule(node.target), x, out)
    if node.op == "call_function":
        return _function_rule(node, args, kwargs, x, out)
    if node.target in POINTWISE_METHODS and _uniform_constants(args, kwargs, inputs):
        return Pointwise()
    if node.target == "contiguous":
        return Identity()
    if node.target == "mean":
        return _global_mean(args, kwargs, x, out)
    return Opaque()


def _uniform_constants(args: tuple, kwargs: dict, inputs: dict) -> bool:
    """Whether every constant tensor argument is the same at every position of a
    map (it broadcasts over height and width)."""
    leaves = []
    fx.node.map_aggregate((args, kwargs), leaves.append)
    changing = {id(v) for v in inputs.values()}
    return all(
        all(s == 1 for s in leaf.shape[-2:])
        for leaf in leaves
        if isinstance(leaf, Tensor) and id(leaf) not in changing
    )


def _several(node: fx.Node, args: tuple, inputs: dict, out: Tensor) -> Rule:
    """An elementwise layer, or ``torch.cat`` along channels, of maps of one size
    (the inputs that change; constants broadcast over the map)."""
    if out.ndim != 4 or any(v.shape[2:] != out.shape[2:] for v in inputs.values()):
        return Opaque()
    if node.target in ELEMENTWISE_FUNCTIONS or (
        node.op == "call_method" and node.target in ELEMENTWISE_METHODS
    ):
        return Elementwise()
    if node.target is torch.cat:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if dim % 4 == 1 and all(t in inputs for t in tensors):
            return Concat()
    return Opaque()


def _module_rule(module: nn.Module, x: Tensor, out: Tensor) -> Rule:
    kind = type(module)
    if kind is nn.BatchNorm2d and module.running_mean is None:
        return Opaque()  # normalises by the batch's statistics even in eval mode
    if kind in POINTWISE_MODULES:
        return Pointwise()
    if kind in IDENTITY_MODULES:
        return Identity()
    if kind in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d) and out.shape == x.shape:
        return Identity()
    if kind is nn.AdaptiveAvgPool2d and out.shape[2:] == (1, 1):
        return GlobalMean()
    if kind in (nn.ZeroPad2d, nn.ConstantPad2d):
        left, right, top, bottom = module.padding
        return _shift(top, bottom, left, right)
    if kind is nn.Conv2d and module.padding_mode == "zeros":
        return _convolution(module.weight, module.bias, vars(module))
    if kind is nn.MaxPool2d:
        return _max_pool(vars(module))
    if kind is nn.AvgPool2d:
        return _avg_pool(vars(module))
    return Opaque()


_FUNCTION_PARAMETERS = {
    F.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    F.max_pool2d: (
        "input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
        "return_indices",
    ),
    F.avg_pool2d: (
        "input", "kernel_size", "stride", "padding", "ceil_mode",
        "count_include_pad", "divisor_override",
    ),
}  # fmt: skip
_DEFAULTS = {
    "bias": None, "stride": None, "padding": 0, "dilation": 1, "groups": 1,
    "ceil_mode": False, "return_indices": False, "count_include_pad": True,
    "divisor_override": None,
}  # fmt: skip


def _function_rule(
    node: fx.Node, args: tuple, kwargs: dict, x: Tensor, out: Tensor
) -> Rule:
    target = node.target
    if target in POINTWISE_FUNCTIONS:
        return Pointwise() if _uniform_constants(args, kwargs, {0: x}) else Opaque()
    if target in _FUNCTION_PARAMETERS:
        names = _FUNCTION_PARAMETERS[target]
        arguments = {**_DEFAULTS, **dict(zip(names, args, strict=False)), **kwargs}
        if target is F.conv2d:
            return _convolution(arguments["weight"], arguments["bias"], arguments)
        if target is F.max_pool2d:
            return _max_pool(arguments)
        return _avg_pool(arguments)
    if target is F.adaptive_avg_pool2d:
        if out.shape == x.shape:
            return Identity()
        return GlobalMean() if out.shape[2:] == (1, 1) else Opaque()
    if target is F.pad:
        return _function_pad(args, kwargs)
    if target is torch.mean:
        return _global_mean(args, kwargs, x, out)
    if target is torch.narrow and not kwargs and args[1] % 4 == 1:
        return Pointwise()  # a part of the channels, position by position
    if target is operator.getitem and _picks_channels(args[1]):
        return Pointwise()  # x[:, [2, 0, 1]]: channels, position by position
    if _not_training(target, args, kwargs):
        return Identity()
    return Opaque()


def _picks_channels(index: Any) -> bool:
    """Whether ``index`` is ``(:, [c0, c1, ...])``: a list of channels."""
    return (
        isinstance(index, tuple)
        and len(index) == 2
        and index[0] == slice(None)
        and isinstance(index[1], list)
        and all(type(c) is int for c in index[1])
    )


def _not_training(target, args: tuple, kwargs: dict) -> bool:
    """A dropout or stochastic depth called with ``training=False``: the identity."""
    from torchvision.ops import stochastic_depth

    if target not in (F.dropout, F.dropout2d, stochastic_depth):
        return False
    try:
        bound = inspect.signature(target).bind(*args, **kwargs)
    except TypeError:
        return False
    bound.apply_defaults()
    return bound.arguments["training"] is False


def _global_mean(args: tuple, kwargs: dict, x: Tensor, out: Tensor) -> Rule:
    """``x.mean((2, 3))`` with or without ``keepdim``."""
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
    whole_map = len(dims) == 2 and {d % 4 for d in dims} == {2, 3}
    if whole_map and "dtype" not in kwargs and out.shape[:2] == x.shape[:2]:
        return GlobalMean()
    return Opaque()


def _function_pad(args: tuple, kwargs: dict) -> Rule:
    sides = args[1] if len(args) > 1 else kwargs.get("pad")
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    if mode != "constant" or len(sides) not in (2, 4):
        return Opaque()
    left, right, top, bottom = (*sides, 0, 0)[:4]
    return _shift(top, bottom, left, right)


def _shift(top: int, bottom: int, left: int, right: int) -> Rule:
    if min(top, bottom, left, right) < 0:
        return Opaque()  # cropping
    return Shift(top, left)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _convolution(weight: Tensor, bias: Tensor | None, arguments: dict) -> Rule:
    kernel, dilation = tuple(weight.shape[2:]), _pair(arguments["dilation"])
    stride, padding = _pair(arguments["stride"] or 1), arguments["padding"]
    if padding == "valid":
        padding = 0
    if padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        if any(t % 2 for t in total):
            return Opaque()  # padded more on one side
        padding = [t // 2 for t in total]
    padding, groups = _pair(padding), arguments["groups"]

    def conv(pieces: Tensor) -> Tensor:
        return F.conv2d(pieces, weight, bias, stride, 0, dilation, groups)

    if kernel == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return Pointwise()
    return SlidingWindow(Window(kernel, stride, padding, dilation, 0.0, conv))


def _max_pool(arguments: dict) -> Rule:
    if arguments["return_indices"]:
        return Opaque()
    kernel = _pair(arguments["kernel_size"])
    stride = _pair(arguments["stride"] or kernel)
    padding, dilation = _pair(arguments["padding"]), _pair(arguments["dilation"])

    def pool(pieces: Tensor) -> Tensor:
        if pieces.device.type == "cpu":
            return _separable_max(pieces, kernel, stride, dilation)
        return F.max_pool2d(pieces, kernel, stride, 0, dilation)

    # ceil_mode needs no care: the padding is sized from the output's shape
    return SlidingWindow(Window(kernel, stride, padding, dilation, -float("inf"), pool))


def _separable_max(pieces: Tensor, kernel, stride, dilation) -> Tensor:
    """``F.max_pool2d`` without padding, as a maximum along rows then along
    columns: the same values (a maximum is exact in any order, NaN included), but
    several times faster than the CPU kernel on ``(N, C, H, W)`` maps."""
    for dim in (3, 2):
        k, s, d = kernel[dim - 2], stride[dim - 2], dilation[dim - 2]
        outputs = (pieces.shape[dim] - d * (k - 1) - 1) // s + 1
        result = None
        for i in range(k):
            taps = pieces.narrow(dim, i * d, (outputs - 1) * s + 1)
            taps = taps[..., ::s] if dim == 3 else taps[..., ::s, :]
            result = taps if result is None else torch.maximum(result, taps)
        pieces = result
    return pieces


def _avg_pool(arguments: dict) -> Rule:
    kernel = _pair(arguments["kernel_size"])
    stride = _pair(arguments["stride"] or kernel)
    padding = _pair(arguments["padding"])
    if arguments["ceil_mode"] or (
        not arguments["count_include_pad"] and padding != (0, 0)
    ):
        return Opaque()  # the divisor would depend on the position
    divisor = arguments["divisor_override"]

    def pool(pieces: Tensor) -> Tensor:
        return F.avg_pool2d(pieces, kernel, stride, 0, divisor_override=divisor)

    return SlidingWindow(Window(kernel, stride, padding, (1, 1), 0.0, pool))
