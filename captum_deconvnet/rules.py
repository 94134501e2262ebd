"""The deconvnet's reverse rules, applied to whatever the forward pass calls.

The paper's reverse pass unpools with the forward switches, rectifies and filters with
the transposed weights. Autograd already does the first and last: max-pool backward
routes each value to its recorded argmax (adding where overlapping windows share one,
the adjoint of pooling) and conv backward is ``conv_transpose2d`` with the same weights
and no bias. Only two rules differ from the gradient:

- every ReLU passes ``relu(grad)`` back, whatever the sign of its forward input;
- with ``normalization="skip"``, local response normalisation passes ``grad`` unchanged
  (the paper has no inverse of contrast normalisation).

The rules are installed as a ``TorchFunctionMode`` for the duration of a forward pass.
That sees every call, so ``nn.ReLU`` (in place or reused), ``F.relu``, ``torch.relu``,
``Tensor.relu``, their in-place forms and ReLUs written as a clamp at 0
(``x.clamp(min=0)``, ``torch.clamp_min(x, 0)``, ``F.threshold(x, 0, 0)``,
``torch.maximum(x, zeros)``) are all covered, and the model itself is never touched:
no hooks, no swapped modules.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["NORMALIZATIONS", "OTHER_ACTIVATIONS", "DeconvRules"]

NORMALIZATIONS = ("skip", "gradient")

_RELU = {F.relu, torch.relu, Tensor.relu, torch.ops.aten.relu.default}
_RELU_INPLACE = {F.relu_, torch.relu_, Tensor.relu_, torch.ops.aten.relu_.default}
# Clamps, which are ReLUs when they bound below at 0 alone: (min, max) as given.
_CLAMP = {torch.clamp, Tensor.clamp, torch.clip, Tensor.clip}
_CLAMP_INPLACE = {torch.clamp_, Tensor.clamp_, torch.clip_, Tensor.clip_}
_CLAMP_MIN = {torch.clamp_min, Tensor.clamp_min}
_CLAMP_MIN_INPLACE = {torch.clamp_min_, Tensor.clamp_min_}
_MAXIMUM = {torch.maximum, Tensor.maximum, torch.max, Tensor.max, torch.fmax}

# Non-linearities with no deconvnet rule: they keep their ordinary gradient, and the
# caller is warned that the result is not a pure deconvnet projection.
OTHER_ACTIVATIONS = {
    F.relu6,
    F.hardtanh,
    F.hardtanh_,
    F.leaky_relu,
    F.leaky_relu_,
    F.prelu,
    F.rrelu,
    F.elu,
    F.selu,
    F.celu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.softplus,
    F.threshold,
    torch.sigmoid,
    F.sigmoid,
    Tensor.sigmoid,
    torch.tanh,
    F.tanh,
    Tensor.tanh,
    F.hardsigmoid,
    F.softsign,
    F.logsigmoid,
    F.hardshrink,
    F.softshrink,
    F.tanhshrink,
}


class _DeconvReLU(torch.autograd.Function):
    """ReLU forward; ``relu(grad)`` backward, the deconvnet's rectification."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


class _PassGradient(torch.autograd.Function):
    """Any function forward; identity backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, function: Callable[[Tensor], Tensor]) -> Tensor:
        return function(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class DeconvRules(TorchFunctionMode):
    """Within this context, forward passes build the deconvnet's reverse graph.

    Args:
        normalization: ``"skip"`` passes the reverse signal through local response
            normalisation unchanged (the paper); ``"gradient"`` backpropagates through
            it (then the result equals ``captum.attr.Deconvolution``).
    """

    def __init__(self, normalization: str = "skip") -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
            )
        self.skip_normalization = normalization == "skip"
        self.unruled: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func in _RELU or func in _RELU_INPLACE:
            inplace = func in _RELU_INPLACE or _inplace_flag(args, kwargs)
            x, _, _ = _first(args, kwargs)
            return _rectify(x, inplace)
        clamp = _clamp(func, args, kwargs)
        if clamp is not None and _is_constant(clamp[1], 0):
            x, _, upper, inplace = clamp
            if upper is None or _is_constant(upper, math.inf):  # a ReLU
                return _rectify(x, inplace)
            self.unruled.add(func.__name__.strip("_"))  # a ReLU6 written as a clamp
        if func is F.local_response_norm and self.skip_normalization:
            x, rest, others = _first(args, kwargs)
            return _PassGradient.apply(x, lambda x: func(x, *rest, **others))
        if func in OTHER_ACTIVATIONS:
            self.unruled.add(func.__name__.strip("_"))
        return func(*args, **kwargs)

    def warn_unruled(self) -> None:
        """Warn once if the forward pass met activations without a deconvnet rule."""
        if self.unruled:
            warnings.warn(
                "the model applies " + ", ".join(sorted(self.unruled)) + ", for which "
                "the deconvnet has no rule; they pass their ordinary gradient, so the "
                "result mixes deconvnet and gradient. Only ReLU is rectified.",
                UserWarning,
                stacklevel=3,
            )


def _first(args: tuple, kwargs: dict) -> tuple[Tensor, tuple, dict]:
    """The tensor a function acts on, given by position or as ``input=``, and the
    other arguments."""
    if args:
        return args[0], args[1:], kwargs
    others = dict(kwargs)
    return others.pop("input"), (), others


def _clamp(func: Callable, args: tuple, kwargs: dict) -> tuple | None:
    """``(x, lower, upper, inplace)`` if ``func(*args, **kwargs)`` clamps ``x`` (a
    bound not given is ``None``): ``clamp``, ``clip``, ``clamp_min`` and their
    in-place forms, ``F.threshold(x, t, 0)``, which clamps below at ``t``, and
    ``torch.maximum(x, bound)`` with a bound that broadcasts to ``x``; else
    ``None``."""
    upper = None
    x = args[0] if args else kwargs.get("input")
    if func in _CLAMP or func in _CLAMP_INPLACE:
        lower, upper = _arguments(args, kwargs, ("min", "max"))
        inplace = func in _CLAMP_INPLACE
    elif func in _CLAMP_MIN or func in _CLAMP_MIN_INPLACE:
        (lower,) = _arguments(args, kwargs, ("min",))
        inplace = func in _CLAMP_MIN_INPLACE
    elif func is F.threshold or func is F.threshold_:
        names = ("threshold", "value", "inplace")
        lower, value, flag = _arguments(args, kwargs, names)
        if not _is_constant(value, 0):
            return None
        inplace = func is F.threshold_ or bool(flag)
    elif func in _MAXIMUM:
        (lower,), inplace = _arguments(args, kwargs, ("other",)), False
        if not isinstance(x, Tensor) or not isinstance(lower, Tensor):
            return None  # torch.max(x, 1) is a reduction
        if _is_constant(x, 0) and not _is_constant(lower, 0):
            x, lower = lower, x  # torch.maximum(zeros, x)
        if torch.broadcast_shapes(x.shape, lower.shape) != x.shape or (
            torch.result_type(x, lower) != x.dtype
        ):
            return None  # the result is not x's shape or dtype
    else:
        return None
    return x, lower, upper, inplace


def _arguments(args: tuple, kwargs: dict, names: tuple[str, ...]) -> list:
    """The arguments after the first, by position or by name (``None`` if not
    given)."""
    return [
        args[1 + i] if len(args) > 1 + i else kwargs.get(name)
        for i, name in enumerate(names)
    ]


def _is_constant(value: Any, constant: float) -> bool:
    """Whether ``value`` is ``constant``: a number, or a tensor holding only it
    that no gradient flows into."""
    if isinstance(value, Tensor):
        return not value.requires_grad and bool((value == constant).all())
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == constant
    )


def _inplace_flag(args: tuple, kwargs: dict) -> bool:
    # F.relu(input, inplace=False): the flag may come by position or by name.
    return bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))


def _rectify(x: Tensor, inplace: bool) -> Tensor:
    out = _DeconvReLU.apply(x)
    if not inplace:
        return out
    # Honour in-place semantics for code that keeps using ``x``; autograd then routes
    # the reverse signal through the copy into the rule above.
    return x.copy_(out)
