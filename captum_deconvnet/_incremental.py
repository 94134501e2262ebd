"""Exact incremental inference for occlusion (Nakandala et al., SIGMOD 2019).

An occluder changes a small box of the input. Through a chain of convolutions,
pools and pointwise layers the change stays inside a box that grows layer by layer,
so each occluded copy needs only that box recomputed; everywhere else it equals the
unoccluded image's activations, computed once. Where the chain ends (a layer this
module does not know, a branch, a flatten) the boxes are pasted into the unoccluded
activations and the rest of the network runs in full on the batch.

The model is traced with ``torch.fx``; a model that cannot be traced, or whose first
layer is not local, gets no plan and callers fall back to full forward passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IncrementalForward", "channel_sums"]

# Layers whose output at a position depends on the input at that position only.
_POINTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Identity,
    nn.LocalResponseNorm,  # normalises across channels, not space
)
_EVAL_ONLY_POINTWISE = (nn.BatchNorm2d, nn.Dropout, nn.Dropout2d)
_POINTWISE_FUNCTIONS = {
    torch.relu,
    torch.relu_,
    F.relu,
    F.relu_,
    F.leaky_relu,
    F.gelu,
    F.silu,
    torch.sigmoid,
    torch.tanh,
}
_POINTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh"}


@dataclass(frozen=True)
class _Window:
    """A sliding-window layer: what it computes on an unpadded slice."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    pad_value: float
    apply: object  # Tensor -> Tensor, the layer with padding 0

    def extent(self, dim: int) -> int:
        return self.dilation[dim] * (self.kernel[dim] - 1) + 1


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _window(module: nn.Module) -> _Window | None:
    """The window description of ``module``, or ``None`` if it is not one we know."""
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or module.padding == "same":
            return None
        padding = (0, 0) if module.padding == "valid" else _pair(module.padding)

        def conv(x: Tensor) -> Tensor:
            return F.conv2d(
                x, module.weight, module.bias, module.stride, 0, module.dilation,
                module.groups,
            )  # fmt: skip

        return _Window(
            _pair(module.kernel_size), _pair(module.stride), padding,
            _pair(module.dilation), 0.0, conv,
        )  # fmt: skip
    if isinstance(module, nn.MaxPool2d) and not module.return_indices:
        # ceil_mode needs no care: the padding is sized from the output's shape.
        def max_pool(x: Tensor) -> Tensor:
            return F.max_pool2d(
                x, module.kernel_size, module.stride, 0, module.dilation
            )

        return _Window(
            _pair(module.kernel_size), _pair(module.stride or module.kernel_size),
            _pair(module.padding), _pair(module.dilation), -math.inf, max_pool,
        )  # fmt: skip
    if isinstance(module, nn.AvgPool2d) and not module.ceil_mode:
        padding = _pair(module.padding)
        if not module.count_include_pad and padding != (0, 0):
            return None  # the divisor would depend on the position

        def avg_pool(x: Tensor) -> Tensor:
            return F.avg_pool2d(
                x, module.kernel_size, module.stride, 0,
                divisor_override=module.divisor_override,
            )  # fmt: skip

        return _Window(
            _pair(module.kernel_size), _pair(module.stride or module.kernel_size),
            padding, (1, 1), 0.0, avg_pool,
        )  # fmt: skip
    return None


def _is_identity(gm: fx.GraphModule, node: fx.Node, shape: torch.Size) -> bool:
    """An adaptive pool to the size it is given (as torchvision's AlexNet and VGG
    have at 224)."""
    if node.op != "call_module":
        return False
    module = gm.get_submodule(node.target)
    if not isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return False
    size = _pair(module.output_size)
    size = tuple(s or d for s, d in zip(size, shape[2:], strict=True))
    return size == tuple(shape[2:])


def _is_pointwise(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, _POINTWISE_MODULES):
            return True
        if isinstance(module, _EVAL_ONLY_POINTWISE):
            return not module.training
        return False
    if node.op == "call_function":
        return node.target in _POINTWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in _POINTWISE_METHODS
    return False


@dataclass
class _Step:
    node: fx.Node
    window: _Window | None  # None: pointwise
    identity: bool = False  # a layer that leaves this size unchanged: skip it


class _Recorder(fx.Interpreter):
    """Runs the traced model once, following the chain of local layers from the
    input as it goes and keeping clones of their outputs (and the watched node's)."""

    def __init__(self, gm: fx.GraphModule, watch: fx.Node | None) -> None:
        super().__init__(gm)
        self.watch = watch
        self.steps: list[_Step] = []
        self.kept: dict[fx.Node, Tensor] = {}
        self.shapes: dict[fx.Node, torch.Size] = {}
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        self.tail = placeholders[0] if len(placeholders) == 1 else None

    def run_node(self, node: fx.Node):
        out = super().run_node(node)
        if isinstance(out, Tensor):
            self.shapes[node] = out.shape
        if self.tail is not None and list(self.tail.users) == [node]:
            step = _step(self.module, node, self.tail, self.shapes.get(self.tail))
            self.tail = node if step is not None else None
            if step is not None:
                self.steps.append(step)
                self.kept[node] = out.clone()  # a later in-place layer would change it
        if node is self.watch and isinstance(out, Tensor):
            self.kept[node] = out.clone()
        return out


def _step(
    gm: fx.GraphModule, node: fx.Node, previous: fx.Node, shape: torch.Size | None
) -> _Step | None:
    """``node`` as a step of the chain after ``previous``, or ``None`` if it is not
    a local layer of ``previous`` alone."""
    if node.all_input_nodes != [previous] or shape is None or len(shape) != 4:
        return None
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        window = _window(module)
        if window is not None:
            return _Step(node, window)
    if _is_identity(gm, node, shape):
        return _Step(node, None, identity=True)
    if _is_pointwise(gm, node):
        return _Step(node, None)
    return None


def _has_hooks(model: nn.Module) -> bool:
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


def _trace(model: nn.Module) -> fx.GraphModule | None:
    try:
        return fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - any model fx cannot trace runs in full
        return None


class IncrementalForward:
    """Forward passes of copies of a batch that differ from it in one box each.

    Build it with :meth:`plan`; then :meth:`__call__` takes, per copy, the index of
    the image it comes from, the box's top-left corner and the box's new values, and
    returns the model's outputs as a full forward pass of the copies would.

    Args (of :meth:`plan`):
        model: the network; traced with ``torch.fx``.
        images: the unoccluded batch ``(N, C, H, W)``.
        watch: a submodule whose per-channel output sums are returned too.
    """

    def __init__(
        self,
        gm: fx.GraphModule,
        steps: list[_Step],
        base: dict[fx.Node, Tensor],
        shapes: dict[fx.Node, torch.Size],
        watch: fx.Node | None,
        output: Tensor,
    ) -> None:
        self.gm = gm
        self.steps = steps
        self.shapes = shapes
        self.watch = watch
        self.output = output
        self.placeholder = _placeholder(gm)
        inputs = [self.placeholder] + [s.node for s in steps[:-1]]
        # Unoccluded inputs of the window layers, padded as the layer pads them.
        self.padded = {
            s.node: _pad(base[prev], s.window, shapes[s.node])
            for s, prev in zip(steps, inputs, strict=True)
            if s.window is not None
        }
        self.last = base[steps[-1].node]
        self.watched_base = base.get(watch)
        self.watched_sums = None
        if self.watched_base is not None:
            self.watched_sums = self.watched_base.double().sum((2, 3))
        self.box_sizes: dict[str, tuple[int, int]] = {}

    @classmethod
    def plan(
        cls, model: nn.Module, images: Tensor, watch: nn.Module | None = None
    ) -> IncrementalForward | None:
        """The plan for ``model`` on ``images``, or ``None`` when no layer at the
        input is local (or the model cannot be traced)."""
        if _has_hooks(model):
            return None
        gm = _trace(model)
        if gm is None:
            return None
        watch_node = None
        if watch is not None:
            names = [n for n, m in gm.named_modules() if m is watch]
            nodes = [
                n for n in gm.graph.nodes if n.op == "call_module" and n.target in names
            ]
            if len(nodes) != 1:
                return None  # a container, or a layer run twice: watch it in full
            watch_node = nodes[0]
        with torch.no_grad():
            recorder = _Recorder(gm, watch_node)
            output = recorder.run(images)
        steps = recorder.steps
        if not steps or not isinstance(output, Tensor):
            return None  # full passes: the caller names a tuple or dict output
        if watch_node is not None and watch_node not in recorder.kept:
            return None  # the watched output is not one tensor: likewise
        base = dict(recorder.kept)
        base[_placeholder(gm)] = images
        if watch_node is not None and watch_node not in {s.node for s in steps}:
            base.pop(watch_node)  # watched in the full part of the network
        return cls(gm, steps, base, recorder.shapes, watch_node, output)

    def __call__(
        self, image_index: Tensor, corners: Tensor, patches: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Outputs of the copies, and the watched layer's per-channel sums.

        Args:
            image_index: ``(B,)`` the image each copy comes from.
            corners: ``(B, 2)`` top-left corner of each copy's box in the input.
            patches: ``(B, C, h, w)`` the box's values in each copy.
        """
        images = image_index.to(self.last.device)
        starts = corners.to(self.last.device)
        values = patches
        watched = None
        for step in self.steps:
            if step.window is not None:
                starts, values = self._window_step(step, images, starts, values)
            elif not step.identity:
                values = self._pointwise(step.node, values)
            self.box_sizes[step.node.name] = tuple(values.shape[2:])
            if step.node is self.watch:
                watched = self._watched_sums(images, starts, values)
        full = self.last[images]
        _paste(full, starts, values)
        return self._finish(full, watched)

    def _pointwise(self, node: fx.Node, values: Tensor) -> Tensor:
        if node.op == "call_module":
            return self.gm.get_submodule(node.target)(values)
        args = [values if a is node.all_input_nodes[0] else a for a in node.args]
        if node.op == "call_function":
            return node.target(*args, **node.kwargs)
        return getattr(args[0], node.target)(*args[1:], **node.kwargs)

    def _window_step(
        self, step: _Step, images: Tensor, starts: Tensor, values: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Each copy's box after a window layer: the layer run on the unoccluded
        input around the outputs the old box reaches, with the old box pasted in."""
        window = step.window
        out_size = torch.tensor(self.shapes[step.node][2:], device=starts.device)
        box = torch.tensor(values.shape[2:], device=starts.device)
        stride = torch.tensor(window.stride, device=starts.device)
        padding = torch.tensor(window.padding, device=starts.device)
        extent = torch.tensor(
            [window.extent(0), window.extent(1)], device=stride.device
        )
        # The outputs whose window meets each copy's box, at one size for all copies.
        low = (starts + padding - extent + 1 + stride - 1).div(
            stride, rounding_mode="floor"
        )
        high = (starts + box - 1 + padding).div(stride, rounding_mode="floor") + 1
        low, high = low.clamp(min=0), torch.minimum(high, out_size)
        size = (high - low).amax(0).clamp(min=1)
        size = torch.minimum(size, out_size)
        new_starts = torch.minimum(low, out_size - size)
        span = (size - 1) * stride + extent
        corners = new_starts * stride  # of each piece, in the padded input
        pieces = _gather(self.padded[step.node], images, corners, span.tolist())
        _paste(pieces, starts + padding - corners, values)
        return new_starts, window.apply(pieces)

    def _watched_sums(self, images: Tensor, starts: Tensor, values: Tensor) -> Tensor:
        """Per-channel sums of the watched layer: the unoccluded sums, with the box's
        unoccluded values swapped for its new ones."""
        old = _gather(self.watched_base, images, starts, list(values.shape[2:]))
        sums = self.watched_sums[images] - old.double().sum((2, 3))
        return (sums + values.double().sum((2, 3))).to(values.dtype)

    def _finish(self, full: Tensor, watched: Tensor | None) -> tuple[Tensor, Tensor]:
        """Run the rest of the network on the chain's output."""
        env = {self.placeholder: None}
        env.update({s.node: None for s in self.steps})
        env[self.steps[-1].node] = full
        handle = None
        sums: list[Tensor] = []
        if self.watch is not None and watched is None:
            module = self.gm.get_submodule(self.watch.target)
            handle = module.register_forward_hook(
                lambda m, a, out: sums.append(channel_sums(out))
            )
        try:
            output = fx.Interpreter(self.gm).run(initial_env=env)
        finally:
            if handle is not None:
                handle.remove()
        if sums:
            watched = sums[0]
        return output, watched


def _placeholder(gm: fx.GraphModule) -> fx.Node:
    return next(n for n in gm.graph.nodes if n.op == "placeholder")


def channel_sums(output: Tensor) -> Tensor:
    """``(N, C)``: each channel's total over the remaining dimensions."""
    return output.flatten(2).sum(2) if output.ndim > 2 else output


def _gather(source: Tensor, images: Tensor, corners: Tensor, size: list) -> Tensor:
    """``(B, C, h, w)``: the ``size`` window at ``corners[b]`` of image ``images[b]``
    of ``source``, for every copy ``b`` at once."""
    rows = corners[:, 0, None] + torch.arange(size[0], device=corners.device)
    cols = corners[:, 1, None] + torch.arange(size[1], device=corners.device)
    index = (images[:, None, None], slice(None), rows[:, :, None], cols[:, None, :])
    return source[index].permute(0, 3, 1, 2)  # indexing puts channels last


def _paste(target: Tensor, corners: Tensor, values: Tensor) -> None:
    """Write ``values[b]`` into ``target[b]`` at ``corners[b]``, in place, leaving out
    what falls outside ``target``."""
    height, width = target.shape[2:]
    rows = corners[:, 0, None] + torch.arange(values.shape[2], device=corners.device)
    cols = corners[:, 1, None] + torch.arange(values.shape[3], device=corners.device)
    inside = ((rows >= 0) & (rows < height))[:, :, None]
    inside = inside & ((cols >= 0) & (cols < width))[:, None, :]
    b, i, j = inside.nonzero(as_tuple=True)
    target[b, :, rows[b, i], cols[b, j]] = values[b, :, i, j]


def _pad(x: Tensor, window: _Window, out_shape: torch.Size) -> Tensor:
    """``x`` padded as the layer pads it, on the right as far as its last window
    reaches (negative padding crops rows no window uses)."""
    (ph, pw), sizes = window.padding, x.shape[2:]
    right = [
        (out_shape[2 + d] - 1) * window.stride[d] + window.extent(d)
        - sizes[d] - window.padding[d]
        for d in range(2)
    ]  # fmt: skip
    return F.pad(x, (pw, right[1], ph, right[0]), value=window.pad_value)
