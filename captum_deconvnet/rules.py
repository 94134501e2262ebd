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
``Tensor.relu``, their in-place forms and other activations whose parameters make
them an exact ReLU (``F.threshold(x, 0, 0)``, ``F.hardtanh(x, 0, inf)``,
``F.leaky_relu(x, 0)``, as ``nn.Threshold(0, 0)``, ``nn.Hardtanh(0, inf)`` and
``nn.LeakyReLU(0)`` call them) are all covered, and the model itself is never
touched: no hooks, no swapped modules. A clamp at 0 (``x.clamp(min=0)``,
``torch.maximum(x, zeros)``) may be a ReLU or may guard a value such as a variance:
it keeps its gradient and the warning names it.
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

from .layers import outside_stacklevel

__all__ = ["NORMALIZATIONS", "OTHER_ACTIVATIONS", "DeconvRules"]

NORMALIZATIONS = ("skip", "gradient")


def _aten(name: str) -> set:
    """The ATen operator ``name``, as ``torch.ops.aten.name`` and as its
    ``.default`` overload: a forward may call either."""
    packet = getattr(torch.ops.aten, name)
    return {packet, packet.default}


_RELU = {F.relu, torch.relu, Tensor.relu, *_aten("relu")}
_RELU_INPLACE = {F.relu_, torch.relu_, Tensor.relu_, *_aten("relu_")}
# Clamps, named in the warning when they bound below at 0 (the bound is their
# second argument or min=); they are not taken for ReLUs (see _CLAMP_HINT).
_CLAMP = {torch.clamp, Tensor.clamp, torch.clip, Tensor.clip, torch.clamp_min}
_CLAMP |= {Tensor.clamp_min, torch.clamp_, Tensor.clamp_, torch.clip_, Tensor.clip_}
_CLAMP |= {torch.clamp_min_, Tensor.clamp_min_}
_MAXIMUM = {torch.maximum, Tensor.maximum, torch.max, Tensor.max, torch.fmax}
_CLAMP_HINT = (
    " A clamp at 0 (x.clamp(min=0), torch.maximum(x, zeros)) is not taken for a "
    "ReLU, as it may guard a value such as a variance: write an activation as "
    "F.relu or nn.ReLU to have it rectified."
)

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


def _always(*_: Any) -> bool:
    return True


def _zero_threshold(threshold: Any, value: Any, *_: Any) -> bool:
    return _equals(threshold, 0) and _equals(value, 0)


def _zero_to_infinity(min_val: Any, max_val: Any, *_: Any) -> bool:
    return _equals(min_val, 0) and _equals(max_val, math.inf)


def _zero_slope(negative_slope: Any, *_: Any) -> bool:
    return _equals(negative_slope, 0)


# The functions that are a ReLU for some arguments: the names of their arguments
# after the input (given by position or by name; in-place forms take no
# ``inplace``) and the test on them. ``F.threshold(x, 0, 0)``,
# ``F.hardtanh(x, 0, inf)`` and ``F.leaky_relu(x, 0)`` are exact ReLUs; with other
# arguments they are other activations.
_ReluTest = tuple[tuple[str, ...], Callable[..., bool]]
_RELU_WHEN: dict[Callable, _ReluTest] = dict.fromkeys(
    _RELU | _RELU_INPLACE, (("inplace",), _always)
)
_RELU_WHEN |= dict.fromkeys(
    {F.threshold, F.threshold_, *_aten("threshold"), *_aten("threshold_")},
    (("threshold", "value", "inplace"), _zero_threshold),
)
_RELU_WHEN |= dict.fromkeys(
    {F.hardtanh, F.hardtanh_, *_aten("hardtanh"), *_aten("hardtanh_")},
    (("min_val", "max_val", "inplace"), _zero_to_infinity),
)
_RELU_WHEN |= dict.fromkeys(
    {F.leaky_relu, F.leaky_relu_, *_aten("leaky_relu"), *_aten("leaky_relu_")},
    (("negative_slope", "inplace"), _zero_slope),
)
_INPLACE = _RELU_INPLACE | {F.threshold_, F.hardtanh_, F.leaky_relu_}
_INPLACE |= _aten("threshold_") | _aten("hardtanh_") | _aten("leaky_relu_")


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
        names, is_relu = _RELU_WHEN.get(func, ((), None))
        if is_relu is not None and is_relu(*_arguments(args, kwargs, names)):
            inplace = _arguments(args, kwargs, names)[-1]
            x, _, _ = _first(args, kwargs)
            return _rectify(x, func in _INPLACE or bool(inplace))
        if _clamps_at_zero(func, args, kwargs):
            self.unruled.add(func.__name__.strip("_") + " at 0")
        if func is F.local_response_norm and self.skip_normalization:
            x, rest, others = _first(args, kwargs)
            return _PassGradient.apply(x, lambda x: func(x, *rest, **others))
        if func in OTHER_ACTIVATIONS:
            self.unruled.add(func.__name__.strip("_"))
        return func(*args, **kwargs)

    def warn_unruled(self) -> None:
        """Warn once if the forward pass met activations without a deconvnet rule."""
        if self.unruled:
            clamps = any(name.endswith(" at 0") for name in self.unruled)
            warnings.warn(
                "the model applies " + ", ".join(sorted(self.unruled)) + ", for which "
                "the deconvnet has no rule; they pass their ordinary gradient, so the "
                "result mixes deconvnet and gradient. Only ReLU is rectified."
                + (_CLAMP_HINT if clamps else ""),
                UserWarning,
                stacklevel=outside_stacklevel(),
            )


def _first(args: tuple, kwargs: dict) -> tuple[Tensor, tuple, dict]:
    """The tensor a function acts on, given by position or as ``input=``, and the
    other arguments."""
    if args:
        return args[0], args[1:], kwargs
    others = dict(kwargs)
    return others.pop("input"), (), others


def _clamps_at_zero(func: Callable, args: tuple, kwargs: dict) -> bool:
    """Whether ``func(*args, **kwargs)`` is a clamp below at 0 (``clamp``, ``clip``,
    ``clamp_min``, their in-place forms, ``torch.maximum`` with zeros), which may
    be a ReLU or may guard a value such as a variance."""
    x = args[0] if args else kwargs.get("input")
    if func in _CLAMP:
        lower = _arguments(args, kwargs, ("min",))[0]
        return _equals(lower, 0)
    if func in _MAXIMUM:
        other = _arguments(args, kwargs, ("other",))[0]
        # torch.max(x, 1) is a reduction; torch.maximum(zeros, x) clamps x
        return isinstance(other, Tensor) and (_equals(other, 0) or _equals(x, 0))
    return False


def _arguments(args: tuple, kwargs: dict, names: tuple[str, ...]) -> list:
    """The arguments after the first, by position or by name (``None`` if not
    given)."""
    return [
        args[1 + i] if len(args) > 1 + i else kwargs.get(name)
        for i, name in enumerate(names)
    ]


def _equals(value: Any, number: float) -> bool:
    """Whether ``value`` is ``number`` or a tensor of it (``None``, a missing
    argument, is not)."""
    if isinstance(value, Tensor):
        return bool((value == number).all())
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == number
    )


def _rectify(x: Tensor, inplace: bool) -> Tensor:
    out = _DeconvReLU.apply(x)
    if not inplace:
        return out
    # Honour in-place semantics for code that keeps using ``x``; autograd then routes
    # the reverse signal through the copy into the rule above.
    return x.copy_(out)
