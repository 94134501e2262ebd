"""The traced model: what may be planned at all, and how one node runs.

A plan works on the ``torch.fx`` graph of the model. It is refused (callers run
full forward passes) when a hook could change what the model computes, when a
layer's result depends on training mode, or when the graph cannot be traced.
Every node runs out of place, so an unoccluded value recorded once is never
overwritten by a later in-place layer.
"""

from __future__ import annotations

import copy
import inspect
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

__all__ = ["has_hooks", "in_place_input", "node_runner", "trace", "training_layers"]

_IN_PLACE_FUNCTIONS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
    torch.relu_: torch.relu,
    F.relu_: F.relu,
    torch.sigmoid_: torch.sigmoid,
    torch.tanh_: torch.tanh,
}
# Layers whose result depends on ``training``: in training mode they use batch
# statistics or randomness, which full passes of other batches would not reproduce.
_MODE_DEPENDENT = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)


def has_hooks(model: nn.Module) -> bool:
    """Whether a hook could change what the model computes: a traced graph drops the
    hooks of the modules it inlines (the model itself, containers) and would run a
    kept module's hooks on boxes, so any hook sends the caller to full passes."""
    hooks = nn.modules.module
    if (
        hooks._global_forward_hooks
        or hooks._global_forward_pre_hooks
        or hooks._global_backward_hooks
        or hooks._global_backward_pre_hooks
    ):
        return True
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
        or m._backward_pre_hooks
        for m in model.modules()
    )  # fmt: skip


def training_layers(model: nn.Module) -> bool:
    """Whether a batch-norm or dropout layer is in training mode."""
    return any(isinstance(m, _MODE_DEPENDENT) and m.training for m in model.modules())


def trace(model: nn.Module) -> fx.GraphModule | None:
    try:
        return fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - any model fx cannot trace runs in full
        return None


def _inplace_kwarg(target: Callable, args: tuple, kwargs: dict) -> bool:
    try:
        bound = inspect.signature(target).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return False
    return bound.arguments.get("inplace") is True


def in_place_input(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """The node whose value ``node`` overwrites in place, if it does."""
    first = node.args[0] if node.args else None
    if node.op == "call_module":
        in_place = getattr(gm.get_submodule(node.target), "inplace", False) is True
    elif node.op == "call_function":
        in_place = node.target in _IN_PLACE_FUNCTIONS or _inplace_kwarg(
            node.target, node.args, node.kwargs
        )
    elif node.op == "call_method":
        name = str(node.target)
        in_place = name.endswith("_") and not name.startswith("__")
    else:
        in_place = False
    return first if in_place and isinstance(first, fx.Node) else None


def node_runner(gm: fx.GraphModule, node: fx.Node) -> Callable[..., Any]:
    """``run(*args, **kwargs)``: the node's operation, out of place."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if getattr(module, "inplace", False) is True:
            module = copy.copy(module)  # a copy: the user's module stays as it is
            object.__setattr__(module, "inplace", False)
        return module
    if node.op == "call_function":
        target = node.target
        if target in _IN_PLACE_FUNCTIONS:
            return _IN_PLACE_FUNCTIONS[target]
        if _inplace_kwarg(target, node.args, node.kwargs):
            return _out_of_place(target)
        return target
    if node.op == "call_method":
        name = str(node.target)
        if name.endswith("_") and not name.startswith("__"):
            return lambda first, *args, **kwargs: getattr(first.clone(), name)(
                *args, **kwargs
            )
        return lambda first, *args, **kwargs: getattr(first, name)(*args, **kwargs)
    raise ValueError(f"node {node.name} ({node.op}) is not an operation")


def _out_of_place(target: Callable) -> Callable:
    signature = inspect.signature(target)

    def run(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.arguments["inplace"] = False
        return target(*bound.args, **bound.kwargs)

    return run
