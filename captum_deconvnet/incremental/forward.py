"""Exact incremental inference for occlusion through the whole traced graph
(Nakandala et al., SIGMOD 2019, "Krypton").

An occluder changes one box of the input; layer by layer the change stays inside a
box (see ``boxes`` and ``rules``) until a global pool or a layer of unknown reach
spreads it over the whole map. :class:`IncrementalForward` runs the unoccluded batch
once, keeping the values the rules will read, and then computes each occluded copy
from its boxes alone, node by node, in the graph's order; where a box covers the whole
map the node is computed in full, as a full pass would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from .boxes import Region, gather, pad, paste
from .classify import rule_for
from .graph import has_hooks, in_place_input, node_runner, trace, training_layers
from .moves import fold_channel_moves
from .rules import Box, Dense, Rule, SlidingWindow, State, cut

__all__ = ["IncrementalForward", "channel_sums"]


def channel_sums(output: Tensor) -> Tensor:
    """``(N, C)``: each channel's total over the remaining dimensions; a new
    tensor, which a later in-place layer cannot overwrite."""
    return output.flatten(2).sum(2) if output.ndim > 2 else output.clone()


@dataclass
class Step:
    node: fx.Node
    rule: Rule
    run: Any  # the node's operation, out of place
    inputs: list[fx.Node]  # the nodes it takes that depend on the input
    done: list[fx.Node]  # states no later step reads


class _Recorder(fx.Interpreter):
    """Runs the traced model once on the unoccluded batch, out of place, choosing
    each node's rule and keeping the unoccluded values the rules will read."""

    def __init__(
        self, gm: fx.GraphModule, watch: fx.Node | None, trims: bool = False
    ) -> None:
        super().__init__(gm)
        self.watch = watch
        self.trims = trims  # window layers' own values are kept to trim their boxes
        self.steps: list[Step] = []
        self.changing: dict[fx.Node, Any] = {}  # nodes that depend on the input
        self.constants: dict[fx.Node, Any] = {}
        self.kept: dict[fx.Node, Tensor] = {}
        self.pads: dict[tuple[fx.Node, float], list[int]] = {}
        self.refused = False

    def run_node(self, node: fx.Node) -> Any:
        if node.op == "placeholder" and not self.changing:
            out = super().run_node(node)  # the images
            self.changing[node] = None
            self.kept[node] = out
        elif node.op == "placeholder":
            out = super().run_node(node)  # an argument left at its default
            self.constants[node] = out
        elif node.op == "get_attr":
            out = super().run_node(node)
            self.constants[node] = out
        elif node.op == "output":
            out = super().run_node(node)
            result = node.args[0]
            self.refused |= (
                not isinstance(result, fx.Node) or result not in self.changing
            )
            if not self.refused:
                self.kept[result] = out  # a box at the end is pasted into it
        else:
            out = self._operation(node)
        if isinstance(out, Tensor):
            node.meta["incremental_shape"] = tuple(out.shape)
        if node is self.watch:
            self.kept[node] = out
        return out

    def _operation(self, node: fx.Node) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(node)
        self._check_in_place(node)
        run = node_runner(self.module, node)
        out = run(*args, **kwargs)
        inputs = [n for n in dict.fromkeys(node.all_input_nodes) if n in self.changing]
        if not inputs:
            self.constants[node] = out
            return out
        self.changing[node] = None
        values = {n: self.env[n] for n in inputs}
        rule = rule_for(self.module, node, args, kwargs, values, out)
        self.steps.append(Step(node, rule, run, inputs, []))
        if rule.reads:
            self.kept.update(values)
        if isinstance(rule, SlidingWindow):
            sides = rule.window.padding_needed(
                values[inputs[0]].shape[2:], out.shape[2:]
            )
            key = (inputs[0], rule.window.pad_value)
            self.pads[key] = [
                max(a, b) for a, b in zip(self.pads.get(key, sides), sides, strict=True)
            ]
        trimmed = self.trims and isinstance(rule, SlidingWindow)
        if (rule.reads_own or trimmed) and isinstance(out, Tensor):
            self.kept[node] = out
        return out

    def _check_in_place(self, node: fx.Node) -> None:
        """An in-place layer runs out of place here, which is only the same when
        nothing else reads the value it overwrites."""
        target = in_place_input(self.module, node)
        if target is None:
            return
        value = self.env.get(target)
        if len(target.users) > 1 or not isinstance(value, Tensor):
            self.refused = True
            return
        storage = value.untyped_storage().data_ptr()
        for other, v in self.env.items():
            if other is not target and isinstance(v, Tensor):
                self.refused |= v.untyped_storage().data_ptr() == storage


class IncrementalForward:
    """Forward passes of copies of a batch that differ from it in one box each.

    Build it with :meth:`plan`; then :meth:`__call__` takes, per copy, the index of
    the image it comes from, the box's top-left corner and the box's new values, and
    returns the model's outputs as full forward passes of the copies would.
    """

    def __init__(
        self,
        recorder: _Recorder,
        output: Tensor,
        cap_fraction: float,
        tolerance: float = 0.0,
    ) -> None:
        self.steps = recorder.steps
        self.constants = recorder.constants
        self.watch = recorder.watch
        self.output = output
        self.cap_fraction = cap_fraction
        self.tolerance = tolerance
        self.scales: dict[fx.Node, float] = {}
        graph = recorder.module.graph
        self.placeholder = next(n for n in graph.nodes if n.op == "placeholder")
        self.result = next(n for n in graph.nodes if n.op == "output").args[0]
        self.runners = {step.node: step.run for step in self.steps}
        self.padded = {}
        self.base = dict(recorder.kept)
        for (node, value), sides in recorder.pads.items():
            self.padded[node, value] = (
                pad(self.base[node], sides, value),
                (sides[0], sides[2]),
            )
        for (node, _), (padded, (top, left)) in self.padded.items():
            height, width = self.base[node].shape[2:]
            self.base[node] = padded[:, :, top : top + height, left : left + width]
        self.watched_sums = None
        if self.watch is not None and isinstance(self.base.get(self.watch), Tensor):
            self.watched_sums = channel_sums(self.base[self.watch].double())
        _mark_done(self.steps, [self.result, self.watch])

    @classmethod
    def plan(
        cls,
        model: nn.Module,
        images: Tensor,
        watch: nn.Module | None = None,
        cap_fraction: float = 1.0,
        tolerance: float = 0.0,
    ) -> IncrementalForward | None:
        """The plan for ``model`` on ``images`` ``(N, C, H, W)``, or ``None`` when the
        model has hooks, layers in training mode, cannot be traced, raises on the
        traced graph, does not return one tensor, or overwrites in place a value
        that is read again.

        Args:
            watch: a submodule (a layer, or a block or container that the trace
                inlines) whose per-channel output sums of its first run are
                returned too; its output must depend on the images.
            cap_fraction: 1 for exact results; below 1, Krypton's projective-field
                threshold (each box at most this fraction of its map's side).
            tolerance: 0 for exact results; above 0, each window layer's box is
                cut to where its values change by more than this fraction of the
                layer's mean absolute unoccluded value.
        """
        if has_hooks(model) or training_layers(model):
            return None
        gm = trace(model, watch)
        if gm is None:
            return None
        watch_node = gm.meta["watched"]  # its first run, as a hook sees first
        if watch is not None and watch_node not in gm.graph.nodes:
            return None  # not called, no tensor, or rewritten away
        recorder, output = _record(gm, watch_node, tolerance, images)
        if recorder is not None and fold_channel_moves(
            gm, recorder.constants, {watch_node}
        ):  # boxes now pass the chains folded; record their rules
            recorder, output = _record(gm, watch_node, tolerance, images)
        if recorder is None:
            return None
        steps = {step.node for step in recorder.steps}
        if watch is not None and (
            watch_node not in steps
            or not isinstance(recorder.kept.get(watch_node), Tensor)
        ):
            return None  # not a tensor that changes with the input: full passes
        return cls(recorder, output, cap_fraction, tolerance)

    @torch.no_grad()
    def __call__(
        self, image_index: Tensor, corners: Tensor, patches: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Outputs of the copies, and the watched layer's per-channel sums.

        Args:
            image_index: ``(B,)`` the image each copy comes from.
            corners: ``(B, 2)`` top-left corner of each copy's box in the input.
            patches: ``(B, C, h, w)`` the box's values in each copy.
        """
        run = Chunk(self, image_index.to(patches.device))
        watched = result = None
        for node, state in self.states(run, corners, patches):
            if node is self.watch:
                watched = self._watched_sums(run, state)
            if node is self.result:
                result = run.materialize(node, state)
        return result, watched

    def states(
        self, run: Chunk, corners: Tensor, patches: Tensor
    ) -> Iterator[tuple[fx.Node, State]]:
        """Each node's state for the copies, in the graph's order (the input's
        first); a state is dropped once no later node reads it."""
        shape = tuple(self.base[self.placeholder].shape[2:])
        region = Region(corners.cpu().long(), tuple(patches.shape[2:]), shape)
        states: dict[fx.Node, State] = {self.placeholder: Box(region, patches)}
        yield self.placeholder, states[self.placeholder]
        for step in self.steps:
            inputs = {n: states[n] for n in step.inputs}
            states[step.node] = step.rule.compute(run, step.node, inputs)
            yield step.node, states[step.node]
            for node in step.done:
                del states[node]

    def _watched_sums(self, run: Chunk, state: State) -> Tensor:
        """Per-channel sums of the watched layer: the unoccluded sums, with the box's
        unoccluded values swapped for its new ones."""
        if isinstance(state, Dense):
            return channel_sums(state.value)
        region = state.region
        old = gather(self.base[self.watch], run.images, region.starts, region.size)
        sums = self.watched_sums[run.images] - channel_sums(old.double())
        return (sums + channel_sums(state.values.double())).to(state.values.dtype)


def _record(
    gm: fx.GraphModule, watch: fx.Node | None, tolerance: float, images: Tensor
) -> tuple[_Recorder | None, Any]:
    """The unoccluded run's record and output, or ``(None, None)`` where the plan
    is refused."""
    recorder = _Recorder(gm, watch, tolerance > 0)
    try:
        with torch.no_grad():
            output = recorder.run(images)
    except Exception:  # noqa: BLE001 - the full pass shows the model's own error
        return None, None
    if recorder.refused or not isinstance(output, Tensor):
        return None, None
    return recorder, output


def _mark_done(steps: list[Step], keep: list) -> None:
    """Note after which step each state is read for the last time."""
    last: dict[fx.Node, Step] = {}
    for step in steps:
        for node in step.inputs:
            last[node] = step
    for node, step in last.items():
        if node not in keep:
            step.done.append(node)


class Chunk:
    """One chunk of copies being computed: what the rules read and call."""

    def __init__(self, forward: IncrementalForward, images: Tensor) -> None:
        self.forward = forward
        self.images = images
        self.cap_fraction = forward.cap_fraction
        self.tolerance = forward.tolerance

    def call(self, node: fx.Node, values: dict[fx.Node, Any]) -> Any:
        constants = self.forward.constants
        args, kwargs = fx.node.map_arg(
            (node.args, node.kwargs),
            lambda n: values[n] if n in values else constants[n],
        )
        return self.forward.runners[node](*args, **kwargs)

    def materialize(self, node: fx.Node, state: State) -> Any:
        if isinstance(state, Dense):
            return state.value
        full = self.base(node)[self.images]
        paste(full, state.region.starts, state.values)
        return full

    def base(self, node: fx.Node) -> Tensor:
        return self.forward.base[node]

    def padded(self, node: fx.Node, pad_value: float) -> tuple[Tensor, tuple]:
        return self.forward.padded[node, pad_value]

    def keep(self, node: fx.Node, region: Region) -> bool:
        return not region.everywhere

    def trim(self, node: fx.Node, box: Box) -> Box:
        """``box`` cut to where it changes by more than the tolerance (see
        :meth:`IncrementalForward.plan`)."""
        base = self.base(node)
        scales = self.forward.scales
        if node not in scales:
            scales[node] = float(base.abs().mean())
        region = box.region
        old = gather(base, self.images, region.starts, region.size)
        changed = (box.values - old).abs().amax(1) > self.tolerance * scales[node]
        return cut(box, changed)
