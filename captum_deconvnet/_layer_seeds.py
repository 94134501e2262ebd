"""Seeds at a layer for the layer deconvnets: the layer's activation (the forward
pass ends there), one neuron of it (:class:`~captum_deconvnet.NeuronDeconvNet`) or
chosen feature maps (:class:`~captum_deconvnet.FeatureMapDeconvNet`, the paper's
Fig. 1-2 projections)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ._inputs import as_int, holds_integers, per_example
from .layers import layer_did_not_run, layer_tensor

NeuronSelector = int | tuple | Callable[[Tensor], Tensor]


class _LayerReached(Exception):
    """Ends a forward pass once the layer of interest has run."""


@contextmanager
def _capture(layer: nn.Module, use_input: bool, n: int) -> Iterator[list[Tensor]]:
    """The layer's output, or its input taken before the layer runs (an in-place
    layer would overwrite it); the forward pass ends there."""
    captured: list[Tensor] = []

    def take(value: Any) -> None:
        where = "input" if use_input else "output"
        captured.append(layer_tensor(layer, value, n, where))
        raise _LayerReached

    if use_input:
        handle = layer.register_forward_pre_hook(
            lambda module, args: take(args[0] if args else None)
        )
    else:
        handle = layer.register_forward_hook(lambda module, args, out: take(out))
    try:
        yield captured
    except _LayerReached:
        pass
    finally:
        handle.remove()


def layer_activation(
    model: nn.Module, layer: nn.Module, args: tuple, use_input: bool
) -> Tensor:
    with _capture(layer, use_input, args[0].shape[0]) as captured:
        model(*args)
    if not captured:
        raise layer_did_not_run(layer)
    return captured[0]


def select_neurons(activation: Tensor, selector: NeuronSelector) -> Tensor:
    n = activation.shape[0]
    if callable(selector):
        value = selector(activation)
        if not isinstance(value, Tensor):
            raise TypeError(
                f"neuron_selector must return a tensor, got {type(value).__name__}"
            )
        if value.numel() not in (1, n):
            raise ValueError(
                f"neuron_selector returned shape {tuple(value.shape)}; it must return "
                f"one value, or one per example ({n})"
            )
        return value.reshape(-1)
    # numpy ints and 0-d integer tensors (torch.unravel_index's) as ints
    single = as_int(selector)
    index = (single,) if single is not None else selector
    if isinstance(index, tuple):
        index = tuple(i if isinstance(i, slice) else as_int(i) for i in index)
    if not isinstance(index, tuple) or None in index:
        raise TypeError(
            "neuron_selector must be an int, a tuple of ints (negative ones count "
            f"from the end) and slices, or a callable, got {selector!r}"
        )
    if len(index) != activation.ndim - 1:
        raise ValueError(
            f"neuron_selector {selector!r} does not index one example's activation of "
            f"shape {tuple(activation.shape[1:])}"
        )
    for i, size in zip(index, activation.shape[1:], strict=True):
        if isinstance(i, int) and not -size <= i < size:
            raise ValueError(
                f"neuron_selector {selector!r} is out of range for an activation of "
                f"shape {tuple(activation.shape[1:])}"
            )
    return activation[(slice(None), *index)].reshape(n, -1).sum(1)


def feature_map_seed(
    activation: Tensor,
    channels: int | Sequence[int] | Tensor,
    keep: str,
    positions: Tensor | Sequence[Sequence[int]] | None = None,
) -> Tensor:
    """The layer's activation with everything zeroed but the kept part of each map."""
    n, c = activation.shape[:2]
    wrong = TypeError(
        "channels must be an int, a sequence of ints or an integer tensor, got "
        f"{channels!r}"
    )
    try:
        chosen = torch.as_tensor(channels, device=activation.device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise wrong from error
    if not holds_integers(chosen):
        raise wrong
    chosen = chosen.long().reshape(-1)
    chosen = per_example(chosen, n, "channels")
    if chosen.min() < 0 or chosen.max() >= c:
        raise ValueError(
            f"channels {channels!r} out of range for a layer of {c} channels"
        )
    rows = torch.arange(n, device=activation.device)
    maps = activation.detach()[rows, chosen].reshape(n, -1)
    if keep == "strongest":
        if positions is None:
            kept = maps.argmax(dim=1, keepdim=True)
        else:
            kept = _flat_positions(activation, positions)
        maps = torch.zeros_like(maps).scatter_(1, kept, maps.gather(1, kept))
    seed = torch.zeros_like(activation)
    seed[rows, chosen] = maps.reshape(seed[rows, chosen].shape)
    return seed


def _flat_positions(
    activation: Tensor, positions: Tensor | Sequence[Sequence[int]]
) -> Tensor:
    """``(N, 1)`` indices into each flattened map of the ``(row, col)`` positions."""
    n = activation.shape[0]
    if activation.ndim != 4:
        raise ValueError(
            "positions picks a (row, col) in 2-D feature maps, but the layer's "
            f"output has shape {tuple(activation.shape)}"
        )
    rows_cols = torch.as_tensor(positions, device=activation.device)
    if not holds_integers(rows_cols):
        raise TypeError(
            f"positions must be ints (rows and columns), got {rows_cols.dtype}: "
            f"{positions!r}"
        )
    rows_cols = rows_cols.long()
    if rows_cols.ndim != 2 or rows_cols.shape[1] != 2:
        one = "; one position (row, col) for all images is [(row, col)]"
        raise ValueError(
            f"positions must be ({n}, 2) rows and columns into maps of shape "
            f"{tuple(activation.shape[2:])}, got shape {tuple(rows_cols.shape)}"
            + (one if rows_cols.shape == (2,) else "")
        )
    rows_cols = per_example(rows_cols, n, "positions")
    height, width = activation.shape[2:]
    rows, cols = rows_cols.unbind(1)
    if rows.min() < 0 or cols.min() < 0 or rows.max() >= height or cols.max() >= width:
        raise ValueError(
            f"positions out of range for maps of {height}x{width}: {positions!r}"
        )
    return (rows * width + cols)[:, None]
