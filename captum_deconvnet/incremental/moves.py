"""Channel moves: reshapes and transposes that only reorder or pick channels
(ShuffleNet's channel shuffle, ``x.chunk(2, dim=1)``), folded into one indexing
of the channels so that the plan's boxes pass through them.

A chain such as ``view(N, g, C // g, H, W)``, ``transpose(1, 2)``, ``view(N, C, H,
W)`` goes through values of five dimensions, which have no box to follow, so the
plan would compute everything after it in full. Each such chain from a map
``(N, C, H, W)`` to a map ``(N, C', H, W)`` is run on a probe whose values are
their own flat indices, at two batch sizes; where it gives the probe's channels
``perm`` at every position, it is replaced by ``x[:, perm]`` (``torch.narrow`` for
a run of channels), which moves the same values. Anything else is left as traced.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx

from .graph import node_runner

__all__ = ["fold_channel_moves"]

# Operations that move a tensor's values without looking at them.
_MOVE_METHODS = {
    "view", "reshape", "transpose", "permute", "flatten", "unflatten",
    "contiguous", "chunk", "split", "squeeze", "unsqueeze", "movedim", "swapaxes",
    "narrow",
}  # fmt: skip
_MOVE_FUNCTIONS = {
    torch.reshape, torch.transpose, torch.permute, torch.flatten, torch.unflatten,
    torch.chunk, torch.split, torch.squeeze, torch.unsqueeze, torch.movedim,
    torch.swapaxes, torch.narrow, operator.getitem,
}  # fmt: skip
# Arithmetic on sizes (``channels // groups``), never on tensors.
_SIZE_FUNCTIONS = {
    operator.floordiv, operator.mul, operator.add, operator.sub, operator.neg,
}  # fmt: skip
_PROBE_BATCHES = (2, 3)


def fold_channel_moves(
    gm: fx.GraphModule, constants: dict[fx.Node, Any], keep: set[fx.Node]
) -> bool:
    """Replace each chain of moves that reorders or picks a map's channels by one
    indexing of them; whether any was. Needs each node's
    ``meta["incremental_shape"]`` (the plan's unoccluded run) and the values of
    the nodes that do not depend on the input (``constants``); chains through a
    node in ``keep`` (the watched one) are left alone."""
    folded = False
    for node in list(gm.graph.nodes):
        if not _moves(node) or node in keep:
            continue
        chain = _chain(node, constants, keep)
        if chain is None:
            continue
        source, between = chain
        channels = _channels(gm, source, between, node, constants)
        if channels is None:
            continue
        with gm.graph.inserting_before(node):
            start, count = channels[0], len(channels)
            if channels == list(range(start, start + count)):
                args = (source, 1, start, count)
                indexed = gm.graph.call_function(torch.narrow, args)
            else:
                args = (source, (slice(None), channels))
                indexed = gm.graph.call_function(operator.getitem, args)
        indexed.meta["incremental_shape"] = _shape(node)
        node.replace_all_uses_with(indexed)
        _erase_unused([*between, node], gm.graph)
        folded = True
    if folded:
        gm.recompile()
    return folded


def _moves(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _MOVE_METHODS
    return node.op == "call_function" and node.target in _MOVE_FUNCTIONS


def _shape(node: Any) -> tuple | None:
    return node.meta.get("incremental_shape") if isinstance(node, fx.Node) else None


def _rank(node: Any) -> int | None:
    shape = _shape(node)
    return None if shape is None else len(shape)


def _chain(
    end: fx.Node, constants: dict, keep: set
) -> tuple[fx.Node, list[fx.Node]] | None:
    """``(source, between)``: the map that ``end`` moves (along first arguments,
    back through moves) and the nodes ``end`` needs from it, in graph order;
    ``None`` unless both are maps ``(N, C, H, W)`` of one ``N``, ``H`` and ``W``
    and everything between is a move or arithmetic on sizes."""
    source = end.args[0] if end.args else None
    while isinstance(source, fx.Node) and _moves(source) and _rank(source) != 4:
        source = source.args[0] if source.args else None  # a tuple, or 5-D
    shape, out = _shape(source), _shape(end)
    if _rank(source) != 4 or _rank(end) != 4 or source in constants:
        return None
    if (out[0], *out[2:]) != (shape[0], *shape[2:]):
        return None
    between, seen = [], set()
    stack = [n for n in end.all_input_nodes if n is not source]
    while stack:
        node = stack.pop()
        if node in seen or node in constants:
            continue
        seen.add(node)
        if node in keep or not (_moves(node) or _size_step(node)):
            return None  # reads another value that changes, or does arithmetic
        between.append(node)
        stack.extend(n for n in node.all_input_nodes if n is not source)
    order = {n: i for i, n in enumerate(end.graph.nodes)}
    return source, sorted(between, key=order.__getitem__)


def _size_step(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in ("size", "dim")
    if node.op != "call_function":
        return False
    return node.target in _SIZE_FUNCTIONS or (
        node.target is getattr and node.args[1] == "shape"
    )


def _channels(
    gm: fx.GraphModule,
    source: fx.Node,
    between: list[fx.Node],
    end: fx.Node,
    constants: dict,
) -> list[int] | None:
    """The channels of ``source`` that ``end`` gives, in order, at every position
    of every example, if it does so at both probe batch sizes; else ``None``."""
    _, channels, height, width = _shape(source)
    found = None
    for batch in _PROBE_BATCHES:
        probe = torch.arange(batch * channels * height * width).reshape(
            batch, channels, height, width
        )
        values = {source: probe}
        try:
            for node in [*between, end]:
                values[node] = _run(gm, node, values, constants)
        except Exception:  # noqa: BLE001 - a chain that fails here is not folded
            return None
        out = values[end]
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            return None
        if (out.shape[0], *out.shape[2:]) != (batch, height, width):
            return None
        picked = (out[0, :, 0, 0] // (height * width)).tolist()
        if not picked or found not in (None, picked) or max(picked) >= channels:
            return None  # none, another order at another batch size, examples mixed
        if not torch.equal(out, probe[:, picked]):
            return None
        found = picked
    return found


def _run(gm: fx.GraphModule, node: fx.Node, values: dict, constants: dict) -> Any:
    def value(arg: fx.Node) -> Any:
        return values[arg] if arg in values else constants[arg]

    args = fx.node.map_arg(node.args, value)
    kwargs = fx.node.map_arg(node.kwargs, value)
    if node.target in _SIZE_FUNCTIONS:
        leaves = []
        fx.node.map_aggregate((args, kwargs), leaves.append)
        if any(isinstance(leaf, torch.Tensor) for leaf in leaves):
            raise TypeError("arithmetic on a tensor is not a move")
    return node_runner(gm, node)(*args, **kwargs)


def _erase_unused(nodes: list[fx.Node], graph: fx.Graph) -> None:
    for node in reversed(nodes):
        if not node.users:
            graph.erase_node(node)
