"""The arithmetic limit of incremental occlusion: multiply-adds of full passes
against those of the changed boxes alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .._inputs import check_images
from .._occlusion_args import pair
from .boxes import Region
from .forward import IncrementalForward
from .rules import SlidingWindow

__all__ = [
    "MultiplyAdds",
    "count_multiply_adds",
    "layer_multiply_adds",
    "position_limit",
]


@dataclass(frozen=True)
class MultiplyAdds:
    """Multiply-adds of convolutions and linear layers for one image.

    Attributes:
        full: of full passes: the unoccluded one and one per occluder position.
        incremental: of the unoccluded pass and, per position, the changed boxes
            (a layer whose box covers its whole map, or that follows a global pool
            or an unknown layer, counts in full).
        positions: occluder positions.
    """

    full: int
    incremental: int
    positions: int

    @property
    def limit(self) -> float:
        """The speed-up of incremental over full passes if time followed
        multiply-adds."""
        return self.full / self.incremental


def layer_multiply_adds(plan: IncrementalForward) -> dict[fx.Node, tuple[int, int]]:
    """Per convolution and linear layer: ``(per output position, positions)`` for
    one image (positions: the output's height times width, or its rows for a linear
    layer)."""
    counts = {}
    for step in plan.steps:
        weight, node = _weight(plan, step.node), step.node
        shape = node.meta.get("incremental_shape")
        if weight is None or shape is None:
            continue
        if weight.ndim == 4:  # a 2-d convolution: weight (C_out, C_in / groups, kh, kw)
            counts[node] = (weight.numel(), shape[2] * shape[3])
        else:  # linear: weight (out, in) applied to every row of the input
            counts[node] = (weight.numel(), max(1, _prod(shape[1:-1])))
    return counts


def count_multiply_adds(
    model: nn.Module,
    image: Tensor,
    window: int | tuple[int, int],
    stride: int | tuple[int, int],
    cap_fraction: float = 1.0,
) -> MultiplyAdds:
    """Count the multiply-adds of occluding ``image`` ``(1, C, H, W)`` with a square
    of side ``window`` every ``stride`` pixels (Captum's positions), by full passes
    and by the incremental plan. A model without a plan counts as full passes.

    Boxes are counted per position (not padded to a batch's largest), each
    dimension on its own; ``cap_fraction`` below 1 counts the approximate plan.

    Raises:
        TypeError: ``model`` is not a module, ``image`` not a floating-point
            tensor.
        ValueError: ``image`` is not one image ``(1, C, H, W)``; ``window`` or
            ``stride`` is not a positive int or two, or the window exceeds the
            image; ``cap_fraction`` is not in (0, 1]; the model has no plan.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_images(image, "image")
    if len(image) != 1:
        shape = tuple(image.shape)
        raise ValueError(f"image must be one image (1, C, H, W), got shape {shape}")
    window, stride = pair("window", window), pair("stride", stride)
    shape = tuple(image.shape[2:])
    if any(w > size for w, size in zip(window, shape, strict=True)):
        raise ValueError(f"window {window} exceeds the image's size {shape}")
    fraction_ok = isinstance(cap_fraction, (int, float)) and 0 < cap_fraction <= 1
    if isinstance(cap_fraction, bool) or not fraction_ok:
        raise ValueError(f"cap_fraction must be in (0, 1], got {cap_fraction!r}")
    starts = [
        [min(s, size - w) for s in range(0, size - w + st, st)]
        for size, w, st in zip(shape, window, stride, strict=True)
    ]
    positions = len(starts[0]) * len(starts[1])
    plan = IncrementalForward.plan(model, image)
    if plan is None:
        raise ValueError(
            f"{type(model).__name__} has no incremental plan for an image of shape "
            f"{tuple(image.shape)}: it has hooks or layers in training mode, torch.fx "
            "cannot trace it, or it raises on this image or returns no single tensor"
        )
    layers = layer_multiply_adds(plan)
    one_pass = sum(per * count for per, count in layers.values())
    rows = [_sizes(plan, (s, 0), window, shape, cap_fraction, 0) for s in starts[0]]
    cols = [_sizes(plan, (0, s), window, shape, cap_fraction, 1) for s in starts[1]]
    incremental = one_pass
    for node, (per, count) in layers.items():
        for row in rows:
            for col in cols:
                area = (
                    count
                    if row[node] is None or col[node] is None
                    else row[node] * col[node]
                )
                incremental += per * area
    return MultiplyAdds(one_pass * (positions + 1), incremental, positions)


def position_limit(plan: IncrementalForward, box: list[int] | tuple[int, int]) -> float:
    """The multiply-adds of a full pass over those of the boxes of one occluder
    of size ``box`` at the centre of the image: the speed-up limit inside it."""
    layers = layer_multiply_adds(plan)
    if not layers:
        return 1.0
    shape = plan.base[plan.placeholder].shape[2:]
    corner = tuple((size - b) // 2 for size, b in zip(shape, box, strict=True))
    regions = _regions(plan, corner, tuple(box), tuple(shape), plan.cap_fraction)
    full = boxes = 0
    for node, (per, count) in layers.items():
        region = regions[node]
        full += per * count
        boxes += per * (count if region is None else region.area)
    return full / boxes


def _regions(plan, corner, window, shape, cap_fraction) -> dict:
    """Each node's box for one occluder at ``corner`` (``None``: computed in full)."""
    regions = {plan.placeholder: Region(torch.tensor([corner]), window, shape)}
    for step in plan.steps:
        inputs = [regions[n] for n in step.inputs]
        if isinstance(step.rule, SlidingWindow):
            region = step.rule.region(step.node, inputs, cap_fraction)
        else:
            region = step.rule.region(step.node, inputs)
        regions[step.node] = region
    return regions


def _sizes(plan, corner, window, shape, cap_fraction, dim) -> dict:
    """Each node's box side along ``dim`` for an occluder at ``corner`` (``None``:
    the node is computed in full)."""
    regions = _regions(plan, corner, window, shape, cap_fraction)
    return {
        node: None if region is None else region.size[dim]
        for node, region in regions.items()
    }


def _weight(plan: IncrementalForward, node: fx.Node) -> Tensor | None:
    if node.op == "call_module":
        module = node.graph.owning_module.get_submodule(node.target)
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return module.weight
        return None
    if node.op == "call_function" and node.target in (F.conv2d, F.linear):
        weight = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
        return plan.constants.get(weight) if isinstance(weight, fx.Node) else weight
    return None


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= v
    return result
