"""Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2, Fig. 7), Captum style.

Both entry points slide an occluder over the input and run the model on every
occluded copy. When the model's first layers form a chain of convolutions, pools and
pointwise layers, each copy is computed incrementally: only the region the occluder
reaches is recomputed (see ``_incremental``), with the same results as full passes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._incremental import IncrementalForward, _channel_sums
from ._inputs import TargetType, as_tuple, check_submodule, select_targets

__all__ = ["OcclusionSensitivity", "SensitivityMaps"]

Inputs = Tensor | tuple[Tensor, ...]
Region = tuple[slice, ...]  # one occluder position, over the dimensions after the batch


@dataclass
class SensitivityMaps:
    """The paper's Fig. 7 maps: one value per image and occluder position.

    Attributes:
        probability: ``(N, rows, cols)`` softmax probability of ``target``.
        top_class: ``(N, rows, cols)`` the most probable class.
        activation: ``(N, rows, cols)`` total activation of ``channel`` in the
            layer, or ``None`` without a layer.
        target: ``(N,)`` the class of ``probability``.
        channel: ``(N,)`` the layer's channel of ``activation``, or ``None``.
        unoccluded_probability: ``(N,)`` the probability of ``target`` without
            occluder; ``unoccluded_activation`` the same for ``activation``.
        window, stride: occluder size and step, ``(height, width)``.
    """

    probability: Tensor
    top_class: Tensor
    activation: Tensor | None
    target: Tensor
    channel: Tensor | None
    unoccluded_probability: Tensor
    unoccluded_activation: Tensor | None
    window: tuple[int, int]
    stride: tuple[int, int]


class OcclusionSensitivity(PerturbationAttribution):
    """Occlusion sensitivity: how the output changes as a patch of input is hidden.

    :meth:`attribute` gives the numbers of ``captum.attr.Occlusion`` for the same
    arguments; :meth:`sensitivity_maps` gives the paper's per-position maps.

    Args:
        forward_func: the model (an ``nn.Module`` gets incremental inference) or any
            function returning one output row per example.
        incremental: recompute only the region an occluder reaches wherever the
            model allows it (exact); ``False`` always runs full forward passes.
        max_batch: most occluded copies in one forward pass, which bounds memory.

    Example::

        >>> occlusion = OcclusionSensitivity(model)
        >>> attribution = occlusion.attribute(
        ...     images, sliding_window_shapes=(3, 32, 32), strides=16, target=labels
        ... )
        >>> maps = occlusion.sensitivity_maps(images, 32, 16, layer=model.features[12])
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        *,
        incremental: bool = True,
        max_batch: int = 64,
    ) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable, got {forward_func!r}")
        _check_positive("max_batch", max_batch)
        super().__init__(forward_func)
        self.incremental = incremental
        self.max_batch = max_batch

    @classmethod
    def get_name(cls) -> str:
        return cls.__name__

    @log_usage()
    def attribute(
        self,
        inputs: Inputs,
        sliding_window_shapes: tuple[int, ...] | tuple[tuple[int, ...], ...],
        strides: int | tuple | None = None,
        baselines: float | Tensor | tuple | None = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
    ) -> Inputs:
        """Captum's occlusion attribution: for every element, the mean drop of the
        ``target`` output over the occluder positions that cover it.

        Args:
            inputs: a batch, or a tuple of batches the model takes together; each is
                occluded in turn while the others stay whole.
            sliding_window_shapes: the occluder's shape over the dimensions after
                the batch, e.g. ``(3, 32, 32)``; a tuple of them for tuple inputs.
            strides: step between positions: an int for all dimensions, a tuple per
                dimension, or one of those per input; ``None`` is 1.
            baselines: the occluder's values: a number, or a tensor broadcastable to
                the input (one per input for tuple inputs); ``None`` is 0.
            target: the output to explain, in Captum's forms.
            additional_forward_args: further model arguments, not occluded.
            perturbations_per_eval: occluder positions per forward pass; ``None``
                takes as many as ``max_batch`` allows. The result does not depend
                on it.
            show_progress: show a progress bar over the occluder positions.

        Returns:
            Attributions shaped like ``inputs``, in their dtype (Captum's are always
            float32).
        """
        tensors, is_tuple = as_tuple(inputs)
        windows = _per_input(sliding_window_shapes, tensors)
        steps = _strides(strides, windows, tensors)
        fills = _baselines(baselines, tensors)
        positions = self._positions_per_pass(perturbations_per_eval, len(tensors[0]))
        extra = _extra_args(additional_forward_args)
        n = tensors[0].shape[0]
        regions = [
            _regions(t.shape[1:], w, s)
            for t, w, s in zip(tensors, windows, steps, strict=True)
        ]
        attributions = []
        with torch.no_grad(), _progress(show_progress, sum(map(len, regions))) as bar:
            unoccluded = None
            for i, tensor in enumerate(tensors):
                scan = _Scan(self, tensors, i, regions[i], fills[i], extra, positions)
                if unoccluded is None:
                    output = scan.unoccluded_output()
                    unoccluded = select_targets(output, target)
                total = tensor.new_zeros(tensor.shape, dtype=unoccluded.dtype)
                counts = torch.zeros(tensor.shape[1:], device=tensor.device)
                for chunk, outputs, _ in scan:
                    for p, region in enumerate(chunk):
                        values = select_targets(outputs[p * n : (p + 1) * n], target)
                        drop = (unoccluded - values).reshape(n, *[1] * len(region))
                        total[(slice(None), *region)] += drop
                        counts[region] += 1
                    bar.update(len(chunk))
                attributions.append(total / counts)
        return tuple(attributions) if is_tuple else attributions[0]

    def sensitivity_maps(
        self,
        inputs: Tensor,
        window: int | tuple[int, int],
        stride: int | tuple[int, int],
        target: TargetType = None,
        layer: nn.Module | None = None,
        channel: int | Sequence[int] | Tensor | None = None,
        fill: float | Tensor | None = None,
        show_progress: bool = False,
    ) -> SensitivityMaps:
        """The paper's Fig. 7: slide a grey square over each image and record, per
        position, the probability of ``target``, the most probable class and the
        total activation of one channel of ``layer``. One pass gives all maps.

        Args:
            inputs: images ``(N, C, H, W)``; ``forward_func`` returns class scores
                (probabilities are their softmax).
            window: side of the square (or ``(height, width)``), within the image.
            stride: step between positions (or ``(dy, dx)``); only positions
                where the square lies wholly inside the image are used.
            target: the class of ``probability``, in Captum's forms; ``None`` takes
                each image's predicted class.
            layer: a submodule whose channel to watch; ``None`` skips ``activation``.
            channel: the channel of ``layer``, one for all images or one per image;
                ``None`` takes each image's strongest channel without occluder.
            fill: the square's value: ``None`` is each image's mean per channel
                (the paper's grey), or a number, or a tensor of one per channel.
            show_progress: show a progress bar over the positions.
        """
        tensors, is_tuple = as_tuple(inputs)
        if is_tuple or tensors[0].ndim != 4:
            raise ValueError(
                "sensitivity_maps takes one batch of images (N, C, H, W), got "
                f"{'a tuple' if is_tuple else tuple(tensors[0].shape)}"
            )
        images = tensors[0]
        n, c, height, width = images.shape
        window = _pair("window", window)
        stride = _pair("stride", stride)
        if window[0] > height or window[1] > width:
            raise ValueError(
                f"window {window} is larger than the images {images.shape}"
            )
        if layer is not None:
            check_submodule(self._model("layer"), layer)
        fills = _fill(fill, images)
        rows, cols = (
            (size - w) // s + 1
            for size, w, s in zip((height, width), window, stride, strict=True)
        )
        regions = [
            (slice(None), slice(y, y + window[0]), slice(x, x + window[1]))
            for y in range(0, rows * stride[0], stride[0])
            for x in range(0, cols * stride[1], stride[1])
        ]
        positions = self._positions_per_pass(None, n)
        probability, top_class, activation = [], [], []
        with torch.no_grad(), _progress(show_progress, len(regions)) as bar:
            scan = _Scan(self, (images,), 0, regions, fills, (), positions, layer)
            output, sums = scan.unoccluded_output(with_watched=True)
            target = _classes(output, target)
            if layer is not None:
                channel = _channels(channel, sums, layer)
            pick = torch.arange(n, device=images.device)
            for chunk, outputs, watched in scan:
                probs = outputs.softmax(1).reshape(len(chunk), n, -1)
                probability.append(probs[:, pick, target])
                top_class.append(probs.argmax(2))
                if layer is not None:
                    activation.append(
                        watched.reshape(len(chunk), n, -1)[:, pick, channel]
                    )
                bar.update(len(chunk))

        def grid(parts: list[Tensor]) -> Tensor:
            return torch.cat(parts).T.reshape(n, rows, cols)

        return SensitivityMaps(
            probability=grid(probability),
            top_class=grid(top_class),
            activation=grid(activation) if layer is not None else None,
            target=target,
            channel=channel if layer is not None else None,
            unoccluded_probability=output.softmax(1)[pick, target],
            unoccluded_activation=sums[pick, channel] if layer is not None else None,
            window=window,
            stride=stride,
        )

    def _model(self, what: str) -> nn.Module:
        if not isinstance(self.forward_func, nn.Module):
            raise TypeError(f"{what} needs forward_func to be an nn.Module")
        return self.forward_func

    def _positions_per_pass(self, perturbations_per_eval: int | None, n: int) -> int:
        most = max(1, self.max_batch // n)
        if perturbations_per_eval is None:
            return most
        _check_positive("perturbations_per_eval", perturbations_per_eval)
        return min(perturbations_per_eval, most)


class _Scan:
    """The occluded copies of one input, position after position, in chunks.

    Iterating yields ``(regions, outputs, watched)``: the chunk's occluder regions,
    the model's outputs for them (position-major: copy ``p * N + n`` is image ``n``
    under region ``p``) and the watched layer's per-channel sums (or ``None``).
    Copies run incrementally when ``occlusion.incremental`` is on and the model is an
    ``nn.Module`` taking one batch of images alone; otherwise as full passes.
    """

    def __init__(
        self,
        occlusion: OcclusionSensitivity,
        tensors: tuple[Tensor, ...],
        index: int,
        regions: list[Region],
        fill: Tensor,
        extra: tuple,
        positions: int,
        watch: nn.Module | None = None,
    ) -> None:
        self.forward_func = forward_func = occlusion.forward_func
        self.plan = None
        if (
            occlusion.incremental
            and isinstance(forward_func, nn.Module)
            and len(tensors) == 1
            and tensors[0].ndim == 4
            and not extra
        ):
            self.plan = IncrementalForward.plan(forward_func, tensors[0], watch)
        self.tensors = tensors
        self.index = index
        self.regions = regions
        self.fill = torch.broadcast_to(fill, tensors[index].shape)
        self.extra = extra
        self.positions = positions
        self.watch = watch

    def unoccluded_output(self, with_watched: bool = False):
        if self.plan is not None and not with_watched:
            return self.plan.output  # the plan ran it already
        with self._watching() as sums:
            output = self.forward_func(*self.tensors, *self.extra)
        return (output, sums[0] if sums else None) if with_watched else output

    def __iter__(self) -> Iterator[tuple[list[Region], Tensor, Tensor | None]]:
        for start in range(0, len(self.regions), self.positions):
            chunk = self.regions[start : start + self.positions]
            if self.plan is not None:
                outputs, watched = self._incremental(chunk)
            else:
                with self._watching() as sums:
                    outputs = self.forward_func(
                        *self._copies(chunk), *self._extra(chunk)
                    )
                watched = sums[0] if sums else None
            yield chunk, outputs, watched

    def _copies(self, chunk: list[Region]) -> tuple[Tensor, ...]:
        """Every input repeated once per region, the occluded one filled there."""
        repeats = len(chunk)
        copies = [t.repeat(repeats, *[1] * (t.ndim - 1)) for t in self.tensors]
        n = self.tensors[0].shape[0]
        occluded = copies[self.index]
        for p, region in enumerate(chunk):
            where = (slice(None), *region)
            occluded[p * n : (p + 1) * n][where] = self.fill[where]
        return tuple(copies)

    def _extra(self, chunk: list[Region]) -> tuple:
        return tuple(
            torch.cat([a] * len(chunk)) if isinstance(a, Tensor) and a.ndim else a
            for a in self.extra
        )

    def _incremental(self, chunk: list[Region]) -> tuple[Tensor, Tensor | None]:
        """The copies as boxes of a fixed size (the window's, moved inside the image
        where the last positions are clipped) for the incremental forward."""
        images = self.tensors[0]
        n, _, height, width = images.shape
        box = [max(r[d].stop - r[d].start for r in chunk) for d in (1, 2)]
        corners, patches = [], []
        for region in chunk:
            y0 = min(region[1].start, height - box[0])
            x0 = min(region[2].start, width - box[1])
            patch = images[:, :, y0 : y0 + box[0], x0 : x0 + box[1]].clone()
            inside = (
                region[0],
                slice(region[1].start - y0, region[1].stop - y0),
                slice(region[2].start - x0, region[2].stop - x0),
            )
            patch[(slice(None), *inside)] = self.fill[(slice(None), *region)]
            patches.append(patch)
            corners += [(y0, x0)] * n
        index = torch.arange(n).repeat(len(chunk))
        corners = torch.tensor(corners)
        return self.plan(index, corners, torch.cat(patches))

    @contextmanager
    def _watching(self) -> Iterator[list[Tensor]]:
        """Collects the watched layer's per-channel sums of the forward passes run
        inside; the hook goes whatever happens."""
        sums: list[Tensor] = []
        if self.watch is None:
            yield sums
            return
        handle = self.watch.register_forward_hook(
            lambda m, a, out: sums.append(_channel_sums(out))
        )
        try:
            yield sums
        finally:
            handle.remove()


# --- argument checks -------------------------------------------------------------


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or two ints, got {value!r}")
    for v in pair:
        _check_positive(name, v)
    return pair


def _per_input(windows: Any, tensors: tuple[Tensor, ...]) -> list:
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
                f"dimension of an input of shape {dims} (after the batch)"
            )
        for size in window:
            _check_positive("sliding_window_shapes", size)
        if any(w > d for w, d in zip(window, dims, strict=True)):
            raise ValueError(
                f"sliding_window_shapes {window!r} is larger than the input {dims}"
            )
    return list(per_input)


def _strides(strides: Any, windows: list, tensors: tuple) -> list:
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
            _check_positive("strides", s)
            if s > w and w < d:  # as Captum: positions must not leave gaps
                raise ValueError(f"strides {stride!r} exceed the window {window!r}")
        result.append(stride)
    return result


def _baselines(baselines: Any, tensors: tuple) -> list[Tensor]:
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
        result.append(baseline.to(tensor.device, tensor.dtype))
    return result


def _fill(fill: Any, images: Tensor) -> Tensor:
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


def _classes(output: Tensor, target: TargetType) -> Tensor:
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


def _channels(channel: Any, sums: Tensor, layer: nn.Module) -> Tensor:
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


def _regions(dims: torch.Size, window: tuple, stride: tuple) -> list[Region]:
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


def _extra_args(args: Any) -> tuple:
    if args is None:
        return ()
    return args if isinstance(args, tuple) else (args,)


@contextmanager
def _progress(show: bool, total: int) -> Iterator[tqdm]:
    bar = tqdm(total=total, desc="Occlusion", disable=not show)
    try:
        yield bar
    finally:
        bar.close()
