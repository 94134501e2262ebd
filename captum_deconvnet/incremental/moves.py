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
            batch_sizes: dict[fx.Node, str] = {}
            for node in [*between, end]:
                values[node] = _run(gm, node, values, constants, batch_sizes)
                _check_batch_first(values[node], batch)
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


def _run(
    gm: fx.GraphModule,
    node: fx.Node,
    values: dict,
    constants: dict,
    batch_sizes: dict[fx.Node, str],
) -> Any:
    """``node``'s value on the probe; raises where ``node`` is not a move that
    keeps every example apart whatever the batch size: it reinterprets a dtype,
    slices along the batch, or reads the batch size (``batch_sizes``: the nodes
    that hold it, ``"int"``, or a shape that starts with it, ``"shape"``) other
    than to give it back as the first size of a ``view`` or ``reshape``."""

    def value(arg: fx.Node) -> Any:
        return values[arg] if arg in values else constants[arg]

    args = fx.node.map_arg(node.args, value)
    kwargs = fx.node.map_arg(node.kwargs, value)
    leaves = []
    fx.node.map_aggregate((args, kwargs), leaves.append)
    if any(isinstance(leaf, torch.dtype) for leaf in leaves):
        raise TypeError("view(dtype) reinterprets values")
    if node.target in _SIZE_FUNCTIONS and any(
        isinstance(leaf, torch.Tensor) for leaf in leaves
    ):
        raise TypeError("arithmetic on a tensor is not a move")
    first = args[0] if args else None
    batch_read = [n for n in node.all_input_nodes if n in batch_sizes]
    a_size = node.target is operator.getitem and not isinstance(first, torch.Tensor)
    if _size_step(node) or a_size:
        _follow_batch_size(node, first, args, batch_sizes)
    elif batch_read and batch_read != [_first_size(node)]:
        raise ValueError("reads the batch size")
    if isinstance(first, torch.Tensor):
        _check_not_along_batch(node, first, args, kwargs)
    return node_runner(gm, node)(*args, **kwargs)


def _follow_batch_size(
    node: fx.Node, first: Any, args: tuple, batch_sizes: dict[fx.Node, str]
) -> None:
    """Note whether ``node`` (a shape query, or an item of a shape) holds the
    batch size; arithmetic on it raises."""
    if node.target in _SIZE_FUNCTIONS:
        if any(n in batch_sizes for n in node.all_input_nodes):
            raise ValueError("arithmetic on the batch size")
        return
    if node.target == "size" or node.target is getattr:
        if len(args) == 1 or node.target is getattr:
            batch_sizes[node] = "shape"
        elif args[1] % first.ndim == 0:
            batch_sizes[node] = "int"
        return
    source = node.args[0]
    if node.target is operator.getitem and batch_sizes.get(source) == "shape":
        index = args[1]
        if not isinstance(index, int) or index % len(first) == 0:
            batch_sizes[node] = "int" if isinstance(index, int) else "shape"


def _first_size(node: fx.Node) -> Any:
    """The argument giving the first size of a ``view`` or ``reshape``, or the
    whole shape where it is given as one."""
    if node.target not in ("view", "reshape", torch.reshape):
        return None
    sizes = node.args[1:] if node.op == "call_method" else node.args[1:2]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = sizes[0]
    return sizes[0] if sizes else None


_DIM_ARGUMENT = {"chunk": (2, 0), "split": (2, 0), "narrow": (1, None)}
_DIM_ARGUMENT.update(
    {torch.chunk: (2, 0), torch.split: (2, 0), torch.narrow: (1, None)}
)


def _check_not_along_batch(
    node: fx.Node, tensor: torch.Tensor, args: tuple, kwargs: dict
) -> None:
    """Raise where ``node`` slices or squeezes ``tensor`` along its batch (its
    first dimension)."""
    target = node.target
    if target is operator.getitem:
        index = args[1]
        whole = isinstance(index, tuple) and index and isinstance(index[0], slice)
        if not whole or index[0] != slice(None):
            raise ValueError("indexes the batch")
    elif target in _DIM_ARGUMENT:
        position, default = _DIM_ARGUMENT[target]
        dim = args[position] if len(args) > position else kwargs.get("dim", default)
        if dim % tensor.ndim == 0:
            raise ValueError("slices the batch")
    elif target in ("squeeze", torch.squeeze):
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        dims = dims if isinstance(dims, (tuple, list)) else [dims]
        if any(d is None or d % tensor.ndim == 0 for d in dims):
            raise ValueError("would drop a batch of one")


def _check_batch_first(value: Any, batch: int) -> None:
    """Raise unless every tensor in ``value`` keeps the batch first."""
    tensors = value if isinstance(value, (tuple, list)) else [value]
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.shape[:1] != (batch,):
            raise ValueError("moves the batch")


def _erase_unused(nodes: list[fx.Node], graph: fx.Graph) -> None:
    for node in reversed(nodes):
        if not node.users:
            graph.erase_node(node)
