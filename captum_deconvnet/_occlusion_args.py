"""Checking and expanding the arguments of occlusion: windows, strides, baselines,
fills, targets and channels, and the occluder positions they give."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._inputs import TargetType, as_int, positive_int, select_targets

Region = tuple[slice, ...]  # one occluder position, over the dimensions after the batch


def check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """``value`` as two positive ints: an int for both, or two (a sequence, or a
    1-D array or tensor); numpy ints and 0-d integer tensors count as ints."""
    single = as_int(value)
    if single is not None:
        value = (single, single)
    elif not isinstance(value, Sequence) and getattr(value, "ndim", None) != 1:
        raise TypeError(f"{name} must be an int or two ints, got {value!r}")
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or two ints, got {value!r}")
    return tuple(positive_int(name, v) for v in value)


def position_counts(
    size: Sequence[int], window: Sequence[int], stride: Sequence[int]
) -> tuple[int, ...]:
    """How many occluder positions fit along each dimension of ``size`` (the rows
    and columns of the sensitivity maps, Fig. 7); 0 where the window is larger."""
    return tuple(
        (n - w) // s + 1 if w <= n else 0
        for n, w, s in zip(size, window, stride, strict=True)
    )


def window_shapes(windows: Any, tensors: tuple[Tensor, ...]) -> list:
    """One window shape per input, each checked against its input. A shape of ints
    serves a single input (also inside a tuple), as in Captum."""
    single = isinstance(windows, tuple) and windows and isinstance(windows[0], int)
    per_input = (windows,) if single else windows
    if not isinstance(per_input, tuple) or len(per_input) != len(tensors):
        raise ValueError(
            f"sliding_window_shapes needs one shape per input ({len(tensors)}), "
            f"got {windows!r}"
        )
    for window, tensor in zip(per_input, tensors, strict=True):
        dims = tuple(tensor.shape[1:])
        if not isinstance(window, tuple) or len(window) != len(dims):
            raise ValueError(
                f"sliding_window_shapes {window!r} must give one size for each "
                f"dimension of an input of shape {dims} after the batch dimension; "
                "inputs are batches (N, ...), images (N, C, H, W)"
            )
        for size in window:
            check_positive("sliding_window_shapes", size)
        if any(w > d for w, d in zip(window, dims, strict=True)):
            raise ValueError(
                f"sliding_window_shapes {window!r} is larger than the input {dims}"
            )
    return list(per_input)


def strides_per_input(strides: Any, windows: list, tensors: tuple) -> list:
    """One stride tuple per input. As in Captum, a tuple holds one entry per input
    when there are several inputs (or it wraps a single input's tuple); otherwise
    it is one input's strides per dimension."""
    nested = isinstance(strides, tuple) and len(strides) == 1
    nested = nested and isinstance(strides[0], tuple)
    per_input_tuple = isinstance(strides, tuple) and (len(tensors) > 1 or nested)
    per_input = strides if per_input_tuple else (strides,) * len(tensors)
    if len(per_input) != len(tensors):
        raise ValueError(f"strides needs one entry per input, got {strides!r}")
    result = []
    for stride, window, tensor in zip(per_input, windows, tensors, strict=True):
        stride = 1 if stride is None else stride
        stride = (stride,) * len(window) if isinstance(stride, int) else stride
        if not isinstance(stride, tuple) or len(stride) != len(window):
            raise ValueError(
                f"strides {stride!r} must be an int or one int per window dimension "
                f"{window!r}"
            )
        for s, w, d in zip(stride, window, tensor.shape[1:], strict=True):
            check_positive("strides", s)
            if s > w and w < d:  # as Captum: positions must not leave gaps
                raise ValueError(f"strides {stride!r} exceed the window {window!r}")
        result.append(stride)
    return result


def baselines_per_input(baselines: Any, tensors: tuple) -> list[Tensor]:
    """One baseline tensor per input: a tuple holds one per input, anything else
    serves every input."""
    per_input = baselines if isinstance(baselines, tuple) else (baselines,)
    per_input = per_input * len(tensors) if len(per_input) == 1 else per_input
    if len(per_input) != len(tensors):
        raise ValueError(f"baselines needs one entry per input, got {baselines!r}")
    result = []
    for baseline, tensor in zip(per_input, tensors, strict=True):
        if baseline is None:
            baseline = 0.0
        if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
            baseline = torch.tensor(baseline)
        if not isinstance(baseline, Tensor):
            raise TypeError(f"baselines must be numbers or tensors, got {baseline!r}")
        try:
            shape = torch.broadcast_shapes(baseline.shape, tensor.shape)
        except RuntimeError:
            shape = None
        if shape != tensor.shape:
            raise ValueError(
                f"baselines of shape {tuple(baseline.shape)} do not broadcast to the "
                f"input's shape {tuple(tensor.shape)}"
            )
        if not tensor.is_floating_point():
            info = torch.iinfo(tensor.dtype)
            whole = (baseline == baseline.round()).all()
            if not whole or ((baseline < info.min) | (baseline > info.max)).any():
                raise ValueError(
                    f"baselines for an input of {tensor.dtype} (token ids, say) "
                    f"must be whole numbers in {info.min}..{info.max}, got "
                    f"{baseline!r}"
                )
        result.append(baseline.to(tensor.device, tensor.dtype))
    return result


def fill_values(fill: Any, images: Tensor) -> Tensor:
    if fill is None:  # the paper's grey: each image's mean colour
        return images.mean((2, 3), keepdim=True)
    if isinstance(fill, (int, float)) and not isinstance(fill, bool):
        return torch.tensor(float(fill), dtype=images.dtype, device=images.device)
    if isinstance(fill, Tensor) and fill.numel() in (1, images.shape[1]):
        return fill.to(images.device, images.dtype).reshape(1, -1, 1, 1)
    raise ValueError(
        f"fill must be None, a number or one value per channel ({images.shape[1]}), "
        f"got {fill!r}"
    )


def target_classes(output: Tensor, target: TargetType) -> Tensor:
    """One class index per image, from Captum's target forms."""
    if output.ndim != 2:
        raise ValueError(
            "sensitivity_maps needs class scores (N, classes), got "
            f"{tuple(output.shape)}"
        )
    n, classes = output.shape
    if target is None:
        return output.argmax(1)
    select_targets(output, target)  # checks the form and the range
    if isinstance(target, int):
        return torch.full((n,), target % classes, device=output.device)
    if isinstance(target, tuple):
        return torch.full((n,), target[0] % classes, device=output.device)
    values = torch.as_tensor(
        [t[0] if isinstance(t, tuple) else t for t in target]
        if not isinstance(target, Tensor)
        else target.flatten().tolist()
    )
    return values.expand(n).remainder(classes).to(output.device)


def watched_sums(
    sums: Tensor, rows: int, layer: nn.Module, channels: int | None = None
) -> Tensor:
    """``sums``, the per-channel sums ``(rows, C)`` of the first run of ``layer`` in
    a forward pass over ``rows`` examples, if they have a row per example (and
    ``channels`` columns).

    Raises:
        ValueError: for an output without channels, or a first run on part of the
            batch (a model that runs the layer one example at a time, say).
    """
    if sums.ndim != 2 and channels is None:
        raise ValueError(
            f"the output of layer {layer!r} has no channels to watch: it must be "
            f"(N, C, ...), got shape {tuple(sums.shape)}"
        )
    if sums.shape[0] != rows or (
        channels is not None and sums.shape[1:] != (channels,)
    ):
        raise ValueError(
            f"layer {layer!r} ran on part of a forward pass over {rows} examples: "
            f"its first run's per-channel sums have shape {tuple(sums.shape)}, not "
            f"({rows}, C). The model runs it on pieces of the batch (one example "
            "at a time, say), and the layer's values are read from its first run "
            "in each pass: watch a layer that runs on the whole batch, or make "
            "the model run this one on whole batches"
        )
    return sums


def watched_channels(channel: Any, sums: Tensor, layer: nn.Module) -> Tensor:
    """The channel of ``layer`` to watch per example, given the per-channel sums
    ``(N, C)`` of the unoccluded pass (each example's strongest for ``None``)."""
    n, count = sums.shape
    if channel is None:
        return sums.argmax(1)
    values = torch.as_tensor(channel).flatten()
    if values.is_floating_point() or values.numel() not in (1, n):
        raise ValueError(f"channel must be one int or {n} ints, got {channel!r}")
    if not ((values >= 0) & (values < count)).all():
        raise ValueError(
            f"channel {channel!r} is out of range for the {count} channels of {layer!r}"
        )
    return values.expand(n).to(sums.device)


def occluder_regions(dims: torch.Size, window: tuple, stride: tuple) -> list[Region]:
    """Captum's occluder positions: starts every ``stride`` until the window reaches
    the end, the last one clipped to the input."""
    starts = [
        range(0, d - w + s, s) for d, w, s in zip(dims, window, stride, strict=True)
    ]
    return [
        tuple(
            slice(b, min(b + w, d)) for b, w, d in zip(begin, window, dims, strict=True)
        )
        for begin in itertools.product(*starts)
    ]


def check_extra_args(extra: tuple, n: int, positions: int) -> None:
    """Refuse a tensor in ``additional_forward_args`` without a row per example
    when one pass holds several occluder positions: like Captum, such a pass
    repeats each tensor argument along its first dimension with the inputs, which
    would silently misuse a tensor that is not batched.

    Raises:
        ValueError: naming the argument, its shape and the batch size ``n``.
    """
    if positions == 1:
        return
    for i, arg in enumerate(extra):
        if isinstance(arg, Tensor) and arg.ndim and arg.shape[0] != n:
            raise ValueError(
                f"additional_forward_args[{i}] has shape {tuple(arg.shape)}, but a "
                f"tensor there needs a row per example (N={n}), as in Captum: it is "
                "repeated with the inputs when a pass holds several occluder "
                "positions. Pass perturbations_per_eval=1 to use it as it is, or "
                "pass it some other way (a list, or an attribute of the model)"
            )


def region_masks(regions: list[Region], shape: Sequence[int], device) -> list[Tensor]:
    """Per dimension of ``shape`` (the input's after the batch), a ``(P, size)``
    bool tensor of which indices each of the ``P`` regions spans; a region is the
    outer product of its rows. Built at once rather than a region at a time, which
    on a GPU would be a kernel launch each."""
    masks = []
    for d, size in enumerate(shape):
        bounds = torch.tensor([r[d].indices(size)[:2] for r in regions])
        at = torch.arange(size)
        inside = (at >= bounds[:, :1]) & (at < bounds[:, 1:])
        masks.append(inside.to(device))
    return masks


def region_covers(masks: list[Tensor]) -> Tensor:
    """``(P, *shape)``: whether region ``p`` covers each element, from
    :func:`region_masks`."""
    covers = masks[0]
    for d, mask in enumerate(masks[1:], 1):
        covers = covers.unsqueeze(-1) & mask.reshape(len(mask), *[1] * d, -1)
    return covers


# Elements of the partial outer product in one block of region_sums: 64 MB of float32
SUM_BLOCK_ELEMENTS = 2**24


def region_sums(
    regions: list[Region], values: Tensor, shape: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """``(totals, counts)``: per example, the sum of ``values[p, n]`` over the
    regions ``p`` covering each element, ``(N, *shape)``; and how many regions
    cover each element, ``shape``. ``values`` is ``(P, N)``, one row per region.

    The same numbers as adding each region's value into its slice in turn, but as
    matrix products over all regions at once, in blocks of fixed size (so the sum
    does not depend on how the positions were batched)."""
    ones = values.new_ones(len(values), 1)
    weights = torch.cat([values, ones], 1)  # the last column counts
    masks = [m.to(values.dtype) for m in region_masks(regions, shape, values.device)]
    inner = math.prod(shape[:-1]) * weights.shape[1]
    block = max(1, SUM_BLOCK_ELEMENTS // inner)
    sums = 0
    for start in range(0, len(values), block):
        part = weights[start : start + block]
        for mask in masks[:-1]:  # (P, N + 1, a, b, ...): outer products so far
            part = part.unsqueeze(-1) * mask[start : start + block, None].reshape(
                len(part), *[1] * (part.ndim - 1), -1
            )
        last = masks[-1][start : start + block]
        sums = sums + part.reshape(len(part), -1).T @ last
    sums = sums.reshape(weights.shape[1], *shape)
    return sums[:-1], sums[-1]


@contextmanager
def progress(show: bool, total: int) -> Iterator[tqdm]:
    bar = tqdm(total=total, desc="Occlusion", disable=not show)
    try:
        yield bar
    finally:
        bar.close()
