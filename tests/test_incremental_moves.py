"""Channel moves (a channel shuffle, ``chunk`` along channels) folded into one
indexing, so that boxes pass them; chains that move anything else are left as
traced. References: Captum's ``Occlusion`` and full passes, node by node."""

import operator

import pytest
import torch
import torch.fx as fx
from captum.attr import Occlusion
from torch import nn

from benchmarks.occlusion_speed import calibrated
from captum_deconvnet import OcclusionSensitivity
from captum_deconvnet.incremental import IncrementalForward, count_multiply_adds
from captum_deconvnet.incremental.moves import fold_channel_moves

from .incremental_helpers import check_every_node, images


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle, as torchvision writes it."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, -1, height, width)


class ShuffleBlock(nn.Module):
    """Half the channels through a convolution, the halves shuffled together."""

    def __init__(self, channels: int, move=shuffle) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels // 2, channels // 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.move = move

    def forward(self, x):
        kept, changed = x.chunk(2, dim=1)
        x = torch.cat((kept, self.relu(self.conv(changed))), dim=1)
        return self.move(x, 2)


def network(move=shuffle) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        ShuffleBlock(8, move),
        ShuffleBlock(8, move),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()


def folded_nodes(plan: IncrementalForward) -> list:
    """What each indexing of a map's channels gives: ``(start, count)`` of a
    ``torch.narrow``, the order of an ``x[:, order]``."""
    found = []
    for node in plan.placeholder.graph.nodes:
        source = node.args[0] if node.args else None
        if len(getattr(source, "meta", {}).get("incremental_shape", ())) != 4:
            continue
        if node.target is torch.narrow:
            found.append(node.args[2:])
        elif node.target is operator.getitem and isinstance(node.args[1], tuple):
            if len(node.args[1]) == 2 and isinstance(node.args[1][1], list):
                found.append(node.args[1][1])
    return found


def test_a_shuffle_and_chunks_become_one_indexing_of_the_channels():
    plan = IncrementalForward.plan(network(), images(2, 16))
    # each block: its two halves (a run of channels) and the shuffle's order
    shuffled = [0, 4, 1, 5, 2, 6, 3, 7]
    assert folded_nodes(plan) == [(0, 4), (4, 4), shuffled] * 2
    assert not any(s.node.target in ("view", torch.transpose) for s in plan.steps)
    kinds = check_every_node(plan, images(2, 16), [(0, 0), (9, 4), (5, 12), (12, 1)], 4)
    assert kinds["dense"] == 3  # only the global pool, the flatten and the linear


def test_occlusion_through_shuffles_equals_captum_and_full_passes(every_plan):
    model = calibrated(network(), 16)
    x = images(2, 16)
    kwargs = {"sliding_window_shapes": (3, 4, 4), "strides": 3, "target": [1, 3]}
    fast = OcclusionSensitivity(model, max_batch=5).attribute(x, **kwargs)
    full = OcclusionSensitivity(model, incremental=False).attribute(x, **kwargs)
    captum = Occlusion(model).attribute(x, perturbations_per_eval=4, **kwargs)
    scale = full.abs().max()
    assert scale > 1e-4
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(fast, captum, rtol=1e-5, atol=1e-5 * scale)


def test_shufflenet_keeps_its_boxes_through_every_stage():
    from torchvision import models

    model = calibrated(models.shufflenet_v2_x0_5(num_classes=10), 64)
    x = images(2, 64)
    plan = IncrementalForward.plan(model, x)
    kinds = check_every_node(plan, x, [(0, 0), (30, 3), (56, 56), (7, 40)], 8)
    assert kinds["box"] >= 50  # 19 while the first shuffle ended the boxes
    limit = count_multiply_adds(model.eval(), images(1, 224), 32, 16).limit
    assert limit > 1.5  # 1.13 while the shuffles ended the boxes


def spatial_transpose(x, groups):
    return x.transpose(2, 3)  # of a square map: the shape stays, positions move


def batch_into_channels(x, groups):
    # a map of two examples' channels in between: at a batch of 2 the first
    # reshape keeps every channel in place, at 3 it does not (probed at both)
    batch, channels, height, width = x.size()
    return x.reshape(2, -1, height, width).reshape(batch, channels, height, width)


def scaled(x, groups):
    batch, channels, height, width = x.size()
    y = x.view(batch, groups, channels // groups, height, width) * 1.0
    return y.view(batch, -1, height, width)  # arithmetic, not a move


@pytest.mark.parametrize("move", [spatial_transpose, batch_into_channels, scaled])
def test_chains_that_are_not_channel_moves_are_left_as_traced(every_plan, move):
    model = calibrated(network(move), 16)
    x = images(2, 16)
    plan = IncrementalForward.plan(model, x)
    assert [f for f in folded_nodes(plan) if f not in ((0, 4), (4, 4))] == []
    kwargs = {"sliding_window_shapes": (3, 4, 4), "strides": 4, "target": 2}
    fast = OcclusionSensitivity(model, max_batch=6).attribute(x, **kwargs)
    full = OcclusionSensitivity(model, incremental=False).attribute(x, **kwargs)
    scale = full.abs().max()
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5 * scale)


def bits(x, groups):
    # reinterprets each float64 as an int64: same shape, other values
    return x.view(torch.int64).to(x.dtype) * 1e-18


def complex_pairs(x, groups):
    return x.view(torch.complex128).abs().repeat(1, 1, 1, 2)


def first_three(x, groups):
    return x[:3]  # the identity on batches of up to three examples


def offset_by_batch(x, groups):
    return x.narrow(1, x.size(0) // 4, 4).repeat(1, 2, 1, 1)


@pytest.mark.parametrize("move", [bits, complex_pairs, first_three, offset_by_batch])
def test_chains_that_reinterpret_or_read_the_batch_are_not_folded(every_plan, move):
    model = network(move).double()
    x = images(1, 8).double()
    plan = IncrementalForward.plan(model, x)
    assert [f for f in folded_nodes(plan) if f not in ((0, 4), (4, 4))] == []
    if move is bits:  # a float64 model: the plan's answer is the full passes'
        kwargs = {"sliding_window_shapes": (3, 4, 4), "strides": 2, "target": 1}
        fast = OcclusionSensitivity(model).attribute(x, **kwargs)
        full = OcclusionSensitivity(model, incremental=False).attribute(x, **kwargs)
        torch.testing.assert_close(fast, full, rtol=1e-9, atol=1e-12)


def test_a_watched_layer_after_a_shuffle_gives_the_full_maps(
    every_plan, incremental_chunks
):
    model = calibrated(network(), 16)
    x = images(2, 16)
    for layer in (model[1].relu, model[2], model[2].conv):
        full = OcclusionSensitivity(model, incremental=False).sensitivity_maps(
            x, 4, 3, layer=layer
        )
        incremental_chunks.clear()
        fast = OcclusionSensitivity(model).sensitivity_maps(x, 4, 3, layer=layer)
        assert incremental_chunks
        torch.testing.assert_close(fast.activation, full.activation)
        torch.testing.assert_close(fast.probability, full.probability)


def test_fold_leaves_a_graph_without_channel_moves_unchanged():
    gm = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    before = gm.code
    assert not fold_channel_moves(gm, {}, set())
    assert gm.code == before
