"""Models and references shared by the incremental-occlusion tests."""

from __future__ import annotations

import torch
import torch.fx as fx

from captum_deconvnet.incremental import IncrementalForward
from captum_deconvnet.incremental.forward import Chunk
from captum_deconvnet.incremental.rules import Box, Dense


def images(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(
        n, channels, size, size, generator=torch.Generator().manual_seed(seed)
    )


def occluded(x: torch.Tensor, corners, window: int, fill: float = 0.0):
    """Copy ``b`` of image ``b % N`` with a ``window`` square at ``corners[b]``."""
    copies = x.repeat(len(corners) // len(x), 1, 1, 1)
    for b, (y, x0) in enumerate(corners):
        copies[b, :, y : y + window, x0 : x0 + window] = fill
    return copies


def node_values(gm: fx.GraphModule, x: torch.Tensor) -> dict:
    """Every node's value in a plain run of the traced model (cloned, so that
    in-place layers downstream do not change them)."""
    values = {}

    class Recorder(fx.Interpreter):
        def run_node(self, node):
            out = super().run_node(node)
            values[node] = out.clone() if isinstance(out, torch.Tensor) else out
            return out

    with torch.no_grad():
        Recorder(gm).run(x)
    return values


def check_every_node(
    plan: IncrementalForward, x: torch.Tensor, corners, window: int
) -> dict[str, int]:
    """Replay the plan on occluded copies of ``x`` and compare each node's state
    with full passes: a box's values with the occluded pass inside it, and the
    unoccluded pass with the occluded one outside it. Counts the states by kind."""
    gm = plan.placeholder.graph.owning_module
    copies = occluded(x, corners, window)
    full = node_values(gm, copies)
    unoccluded = node_values(gm, x)
    n = len(x)
    index = torch.arange(len(corners)) % n
    patches = torch.zeros(len(corners), x.shape[1], window, window)
    kinds = {"box": 0, "dense": 0}
    with torch.no_grad():
        chunk = Chunk(plan, index)
        for node, state in plan.states(chunk, torch.tensor(corners), patches):
            reference = full[node]
            tolerance = {"rtol": 1e-4, "atol": 1e-4 * max(1.0, _largest(reference))}
            if isinstance(state, Dense):
                kinds["dense"] += 1
                torch.testing.assert_close(state.value, reference, **tolerance)
                continue
            assert isinstance(state, Box)
            kinds["box"] += 1
            base = unoccluded[node][index]
            h, w = state.region.size
            for b, (y, x0) in enumerate(state.region.starts.tolist()):
                inside = reference[b, :, y : y + h, x0 : x0 + w]
                torch.testing.assert_close(
                    state.values[b], inside, rtol=1e-4, atol=1e-4
                )
                outside = torch.ones_like(reference[b], dtype=torch.bool)
                outside[:, y : y + h, x0 : x0 + w] = False
                torch.testing.assert_close(
                    reference[b][outside], base[b][outside], **tolerance
                )
    return kinds


def _largest(value) -> float:
    return float(value.abs().max()) if isinstance(value, torch.Tensor) else 0.0
