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
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.fx as fx
from torch import nn

__all__ = [
    "has_hooks",
    "in_place_input",
    "narrow_picked_channels",
    "node_runner",
    "symbolic_trace",
    "trace",
    "training_layers",
]

# Python's augmented assignments, with the operators they stand for.
_IN_PLACE_OPERATORS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
    operator.ifloordiv: operator.floordiv,
    operator.imod: operator.mod,
    operator.ipow: operator.pow,
    operator.imatmul: operator.matmul,
    operator.iand: operator.and_,
    operator.ior: operator.or_,
    operator.ixor: operator.xor,
    operator.ilshift: operator.lshift,
    operator.irshift: operator.rshift,
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


def symbolic_trace(model: nn.Module, watch: nn.Module | None = None) -> fx.GraphModule:
    """The graph of ``model`` called on its first argument alone, the others at
    their defaults (fixed while tracing, so that ``if mask is not None:`` takes the
    branch a call takes); the model is left as it was (:func:`state_kept`).
    ``meta["watched"]`` holds the node of the value that the submodule ``watch``
    returns from its first call (``None`` without one, or if it returns no tensor
    or is not called).

    Raises:
        Exception: whatever fx raises on a model it cannot trace.
    """
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    defaults = {
        p.name: p.default
        for p in parameters[1:]
        if p.default is not inspect.Parameter.empty
    }
    tracer = _Tracer(watch)
    with state_kept(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fx's notes on specialised defaults
        graph = tracer.trace(model, concrete_args=defaults or None)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.meta["watched"] = tracer.watched
    return gm


class _Tracer(fx.Tracer):
    """fx's tracer, which also notes the node of the value that the submodule
    ``watch`` returns from its first call, whether the graph keeps the module as
    one node or inlines it (a container, a block)."""

    def __init__(self, watch: nn.Module | None) -> None:
        super().__init__()
        self.watch = watch
        self.called = False
        self.watched: fx.Node | None = None

    def call_module(self, m, forward, args, kwargs):  # noqa: ANN001, ANN201
        out = super().call_module(m, forward, args, kwargs)
        if m is self.watch and not self.called:
            self.called = True
            self.watched = out.node if isinstance(out, fx.Proxy) else None
        return out


def trace(model: nn.Module, watch: nn.Module | None = None) -> fx.GraphModule | None:
    """:func:`symbolic_trace`, or ``None`` where fx cannot trace the model; a
    channel picked out and given back its dimension is narrowed instead
    (:func:`narrow_picked_channels`)."""
    try:
        gm = symbolic_trace(model, watch)
    except Exception:  # noqa: BLE001 - any model fx cannot trace runs in full
        return None
    return narrow_picked_channels(gm)


def narrow_picked_channels(gm: fx.GraphModule) -> fx.GraphModule:
    """``torch.unsqueeze(x[:, c], 1)`` as ``torch.narrow(x, 1, c, 1)``: the same
    values, and the same error for a channel out of range, without a value of
    one dimension less in between, which has no box to follow. Torchvision's
    GoogLeNet and Inception v3 pick each channel so to renormalise it
    (``transform_input``, set whenever their ImageNet weights are loaded)."""
    picks = [(node, _picked_channel(node)) for node in gm.graph.nodes]
    picks = [(node, picked) for node, picked in picks if picked is not None]
    for node, (source, channel) in picks:
        pick = node.args[0]
        with gm.graph.inserting_before(node):
            narrowed = gm.graph.call_function(torch.narrow, (source, 1, channel, 1))
        node.replace_all_uses_with(narrowed)
        gm.graph.erase_node(node)
        gm.graph.erase_node(pick)
    if picks:  # the code of a graph left as traced is current
        gm.recompile()
    return gm


def _picked_channel(node: fx.Node) -> tuple[fx.Node, int] | None:
    """``(x, c)`` if ``node`` is ``torch.unsqueeze(x[:, c], 1)`` (or the method) and
    nothing else reads ``x[:, c]``."""
    unsqueeze = (node.op, node.target) in (
        ("call_function", torch.unsqueeze),
        ("call_method", "unsqueeze"),
    )
    if not unsqueeze or node.kwargs or len(node.args) != 2 or node.args[1] != 1:
        return None
    pick = node.args[0]
    if not isinstance(pick, fx.Node) or len(pick.users) != 1:
        return None
    if pick.op != "call_function" or pick.target is not operator.getitem:
        return None
    source, index = pick.args
    if (
        isinstance(index, tuple)
        and len(index) == 2
        and index[0] == slice(None)
        and type(index[1]) is int
    ):
        return source, index[1]
    return None


@contextmanager
def state_kept(model: nn.Module) -> Iterator[None]:
    """Tracing runs the model's Python code on fx proxies: what it stores on a
    module (``self.cache = h``, ``self.seen.append(h)``) is put back as it was."""
    saved = []
    for module in model.modules():
        attributes = dict(vars(module))
        contents = {
            name: copy.copy(value)
            for name, value in attributes.items()
            if isinstance(value, (list, dict, set))
        }
        saved.append((module, attributes, contents))
    try:
        yield
    finally:
        for module, attributes, contents in saved:
            vars(module).clear()
            vars(module).update(attributes)
            for name, value in contents.items():
                attributes[name].clear()
                if isinstance(value, list):
                    attributes[name].extend(value)
                else:
                    attributes[name].update(value)


def _in_place_name(target: Callable | str) -> bool:
    """PyTorch's naming of in-place operations: ``relu_``, ``clamp_``, ``add_``
    (not ``__add__``)."""
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    return name.endswith("_") and not name.startswith("__")


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
        in_place = (
            node.target in _IN_PLACE_OPERATORS
            or node.target is operator.setitem
            or _in_place_name(node.target)
            or _inplace_kwarg(node.target, node.args, node.kwargs)
        )
    elif node.op == "call_method":
        in_place = _in_place_name(str(node.target))
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
        if target in _IN_PLACE_OPERATORS:
            return _IN_PLACE_OPERATORS[target]
        if target is operator.setitem or _in_place_name(target):
            # torch.clamp_, F.leaky_relu_, x[...] = v: the same function on a
            # copy of the value it would overwrite
            return lambda first, *args, **kwargs: target(first.clone(), *args, **kwargs)
        if _inplace_kwarg(target, node.args, node.kwargs):
            return _out_of_place(target)
        return target
    if node.op == "call_method":
        name = str(node.target)
        if _in_place_name(name):
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
