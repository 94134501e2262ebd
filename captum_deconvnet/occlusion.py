"""Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2, Fig. 7), Captum style.

Both entry points slide an occluder over the input and run the model on every
occluded copy. Where the model's traced graph allows it, each copy is computed
incrementally: only the boxes the occluder reaches are recomputed (see
``incremental``), with the same results as full passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ._inputs import (
    TargetType,
    as_tuple,
    check_images,
    check_submodule,
    extra_args,
    target_selector,
    widened,
)
from ._occlusion_args import (
    baselines_per_input,
    check_extra_args,
    check_positive,
    fill_values,
    occluder_regions,
    pair,
    position_counts,
    progress,
    region_sums,
    strides_per_input,
    target_classes,
    watched_channels,
    watched_sums,
    window_shapes,
)
from ._scan import OcclusionScan
from .incremental import Approximation, check_grid
from .layers import UnbatchedInputError, guarded, layer_did_not_run, model_output

__all__ = ["OcclusionSensitivity", "SensitivityMaps"]

Inputs = Tensor | tuple[Tensor, ...]


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

    The model runs in eval mode and is left as it was (see
    :func:`~captum_deconvnet.layers.guarded`); a model with hooks runs full passes.

    Args:
        forward_func: the model (an ``nn.Module`` gets incremental inference; a
            compiled or ``DataParallel`` one runs the module it holds) or any
            function, returning one ``(N, ...)`` tensor.
        incremental: recompute only the region an occluder reaches wherever the
            model allows it and it saves time (exact; on the CPU: on a GPU full
            passes are faster); ``False`` always runs full forward passes (then
            ``approximate`` may only drill down).
        max_batch: most occluded copies in one forward pass, which bounds memory
            (one position's copies of all ``N`` images at the least).
        approximate: opt-in approximate results for speed (Krypton's
            projective-field threshold and coarse-to-fine drill-down, see
            :class:`~captum_deconvnet.incremental.Approximation`); ``None`` is exact.

    Raises:
        TypeError: ``forward_func`` not callable, ``incremental`` not a bool,
            ``approximate`` not an ``Approximation``.
        ValueError: ``max_batch`` not a positive int, or an ``approximate`` that
            cuts boxes (``projective_field`` or ``tolerance``) with
            ``incremental=False``.

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
        approximate: Approximation | None = None,
    ) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable, got {forward_func!r}")
        check_positive("max_batch", max_batch)
        if not isinstance(incremental, bool):
            raise TypeError(f"incremental must be True or False, got {incremental!r}")
        if approximate is not None and not isinstance(approximate, Approximation):
            raise TypeError(
                f"approximate must be an Approximation, got {approximate!r}"
            )
        if approximate is not None and approximate.needs_plan and not incremental:
            raise ValueError(
                f"{approximate} cuts the boxes of incremental inference, which "
                "incremental=False turns off: pass incremental=True, or keep only "
                "coarse and refine"
            )
        super().__init__(forward_func)
        self.incremental = incremental
        self.max_batch = max_batch
        self.approximate = approximate

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
                occluded in turn while the others stay whole. Floating-point, or
                integer (token ids into an embedding, say: their baselines must be
                whole numbers).
            sliding_window_shapes: the occluder's shape over the dimensions after
                the batch, e.g. ``(3, 32, 32)``; a tuple of them for tuple inputs.
            strides: step between positions: an int for all dimensions, a tuple per
                dimension, or one of those per input; ``None`` is 1.
            baselines: the occluder's values: a number, or a tensor broadcastable to
                the input (one per input for tuple inputs); ``None`` is 0.
            target: the output to explain, in Captum's forms.
            additional_forward_args: further model arguments, not occluded; a
                tensor among them has a row per example (as in Captum), unless
                ``perturbations_per_eval=1``.
            perturbations_per_eval: occluder positions per forward pass; ``None``
                takes as many as ``max_batch`` allows. The result does not depend
                on it (an ``approximate`` that cuts boxes runs one position a
                pass).
            show_progress: show a progress bar over the occluder positions.

        Returns:
            Attributions shaped like ``inputs``, in their dtype, float32 for integer
            inputs (Captum's are always float32).

        Raises:
            TypeError: if the model does not return one tensor.
            ValueError: for arguments that do not fit the inputs, or an unbatched
                input to a convolution of the model.
        """
        tensors, is_tuple = as_tuple(inputs, integers=True)
        windows = window_shapes(sliding_window_shapes, tensors)
        steps = strides_per_input(strides, windows, tensors)
        fills = baselines_per_input(baselines, tensors)
        positions = self._positions_per_pass(perturbations_per_eval, len(tensors[0]))
        extra = extra_args(additional_forward_args)
        n = tensors[0].shape[0]
        check_extra_args(extra, n, positions)
        regions = [
            occluder_regions(t.shape[1:], w, s)
            for t, w, s in zip(tensors, windows, steps, strict=True)
        ]
        check_grid(
            self.approximate, regions, windows, [tuple(t.shape[1:]) for t in tensors]
        )
        attributions = []
        with (
            guarded(self.forward_func, check_batches=False) as model,
            torch.no_grad(),
            progress(show_progress, sum(map(len, regions))) as bar,
        ):
            unoccluded = None
            for i, tensor in enumerate(tensors):
                scan = OcclusionScan(
                    model,
                    tensors,
                    i,
                    regions[i],
                    fills[i],
                    extra,
                    positions,
                    incremental=self.incremental,
                    adaptive=perturbations_per_eval is None,
                    approximate=self.approximate,
                )
                if unoccluded is None:
                    output = model_output(scan.unoccluded_output(), n)
                    select = target_selector(output, target)
                    unoccluded = widened(select(output))
                scan.score = select
                done, drops = [], []
                for chunk, outputs, _ in scan:
                    model_output(outputs, n * len(chunk))
                    drops.append(unoccluded.repeat(len(chunk)) - select(outputs))
                    done += chunk
                    bar.update(len(chunk))
                drop = torch.cat(drops).reshape(len(done), n)
                total, counts = region_sums(done, drop, tensor.shape[1:])
                dtype = tensor.dtype if tensor.is_floating_point() else total.dtype
                attributions.append((total / counts).to(dtype))
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
            layer: a submodule whose channel to watch (its first call, where it
                runs more than once); ``None`` skips ``activation``.
            channel: the channel of ``layer``, one for all images or one per image;
                ``None`` takes each image's strongest channel without occluder.
                Only with a ``layer``.
            fill: the square's value: ``None`` is each image's mean per channel
                (the paper's grey), or a number, or a tensor of one per channel.
            show_progress: show a progress bar over the positions.

        Returns:
            The maps, ``probability`` and ``activation`` in the images' dtype.

        Raises:
            TypeError: if the model does not return one tensor, or the layer's
                output is not one tensor.
            ValueError: for images that are not ``(N, C, H, W)``, a layer that does
                not run, or does not run on the whole batch of a pass (a model
                that loops over the examples of a batch of copies), a ``channel``
                without a ``layer``, or arguments that do not fit.
        """
        if isinstance(inputs, tuple):
            raise ValueError(
                "sensitivity_maps takes one batch of images (N, C, H, W), not a tuple"
            )
        images = check_images(inputs)
        n, c, height, width = images.shape
        window = pair("window", window)
        stride = pair("stride", stride)
        if window[0] > height or window[1] > width:
            raise ValueError(
                f"window {window} is larger than the images {images.shape}"
            )
        if layer is not None:
            check_submodule(self._model("layer"), layer)
        elif channel is not None:
            raise ValueError(
                f"channel {channel!r} is a channel of layer, but no layer was "
                "given: pass layer as well (or leave channel None)"
            )
        fills = fill_values(fill, images)
        rows, cols = position_counts((height, width), window, stride)
        regions = [
            (slice(None), slice(y, y + window[0]), slice(x, x + window[1]))
            for y in range(0, rows * stride[0], stride[0])
            for x in range(0, cols * stride[1], stride[1])
        ]
        positions = self._positions_per_pass(None, n)
        probability, top_class, activation = [], [], []
        with (
            # With a layer, every pass checks that the convolutions get batches
            guarded(self.forward_func, check_batches=layer is not None) as model,
            torch.no_grad(),
            progress(show_progress, len(regions)) as bar,
        ):
            scan = OcclusionScan(
                model, (images,), 0, regions, fills, (), positions, layer,
                self.incremental,
                adaptive=True,
                approximate=self.approximate,
            )  # fmt: skip
            output, sums = scan.unoccluded_output(with_watched=True)
            target = target_classes(model_output(output, n), target)
            scan.score = lambda out: out.softmax(1)[torch.arange(n), target]
            if layer is not None:
                if sums is None:
                    raise layer_did_not_run(layer)
                channel = watched_channels(channel, watched_sums(sums, n, layer), layer)
            pick = torch.arange(n, device=images.device)
            for chunk, outputs, watched in _whole_batches(scan, layer):
                model_output(outputs, n * len(chunk))
                probs = widened(outputs).softmax(1).reshape(len(chunk), n, -1)
                probability.append(probs[:, pick, target])
                top_class.append(probs.argmax(2))
                if layer is not None:
                    watched = watched_sums(
                        watched, n * len(chunk), layer, sums.shape[1]
                    )
                    activation.append(
                        watched.reshape(len(chunk), n, -1)[:, pick, channel]
                    )
                bar.update(len(chunk))

        def grid(parts: list[Tensor], dtype: torch.dtype = images.dtype) -> Tensor:
            return torch.cat(parts).T.reshape(n, rows, cols).to(dtype)

        watching = layer is not None
        return SensitivityMaps(
            probability=grid(probability),
            top_class=grid(top_class, torch.long),
            activation=grid(activation) if watching else None,
            target=target,
            channel=channel if watching else None,
            unoccluded_probability=(
                widened(output).softmax(1)[pick, target].to(images.dtype)
            ),
            unoccluded_activation=(
                sums[pick, channel].to(images.dtype) if watching else None
            ),
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
        check_positive("perturbations_per_eval", perturbations_per_eval)
        return min(perturbations_per_eval, most)


def _whole_batches(
    scan: OcclusionScan, layer: nn.Module | None
) -> Iterator[tuple[list, Tensor, Tensor | None]]:
    """The scan's chunks. With a watched layer every pass runs under the check that
    the model's convolutions get batches: one that splits a batch of copies into
    single examples (a loop over the batch) would read the layer per example."""
    try:
        yield from scan
    except UnbatchedInputError as error:
        raise ValueError(
            "the model ran the images as a batch but split a batch of occluded "
            f"copies into single examples (its {error.operation} got an input of "
            f"shape {error.shape}), so layer {layer!r} may not see the whole "
            "batch in one run: run the model's convolutions on whole batches (no "
            "loop over the examples), or call sensitivity_maps without layer"
        ) from error
