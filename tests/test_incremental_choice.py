"""How occlusion runs its passes: when the default path plans incremental
inference (where the plan's boxes save enough, where making it costs less than the
full passes it would replace, where it pays on the device, and where its chunks are
measured cheaper), and which passes check that convolutions get batches."""

import gc
import weakref
from types import SimpleNamespace

import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from benchmarks.occlusion_speed import calibrated
from captum_deconvnet import OcclusionSensitivity, _scan
from captum_deconvnet._scan import OcclusionScan
from captum_deconvnet.incremental import Approximation, IncrementalForward

from .incremental_helpers import images
from .test_incremental import Functional, vgg_style

CLOCK = [0.0]


class Clocked(nn.Module):
    """A small CNN whose every eager call costs ``seconds`` on a fake clock, one
    image or many (so batching gains much, as on small inputs); its traced
    graph's calls cost nothing."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.net = calibrated(vgg_style(), 24)
        self.seconds = seconds
        self.batches: list = []  # each eager call's batch size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CLOCK[0] += self.seconds
        self.batches.append(x.shape[0])
        return self.net(x)


@pytest.fixture
def clocked(monkeypatch, incremental_chunks):
    """``(model, copies)``: the clock stands for time in the scan; ``copies`` gets
    each incremental chunk's number of copies."""
    CLOCK[0] = 0.0
    monkeypatch.setattr(_scan, "time", SimpleNamespace(perf_counter=lambda: CLOCK[0]))
    return Clocked(1.0).eval(), incremental_chunks


def attribute_both(
    model, stride: int, max_batch: int = 4
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Our attributions, Captum's, and our eager calls' batch sizes."""
    x = images(1, 24)
    window = (3, stride, stride)
    kwargs = {"sliding_window_shapes": window, "strides": stride, "target": 3}
    model.batches.clear()
    ours = OcclusionSensitivity(model, max_batch=max_batch).attribute(x, **kwargs)
    batches = list(model.batches)
    captum = Occlusion(model).attribute(x, perturbations_per_eval=4, **kwargs)
    return ours, captum, batches


def assert_as_captum(model, x: torch.Tensor, window: int, stride: int) -> None:
    """Our default attribution (target 1) equals Captum's."""
    kwargs = {"sliding_window_shapes": (3, window, window), "strides": stride}
    kwargs["target"] = 1
    torch.testing.assert_close(
        OcclusionSensitivity(model).attribute(x, **kwargs),
        Occlusion(model).attribute(x, **kwargs),
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_small_input_plans_after_its_first_chunk_if_full_passes_would_repay_it(
    clocked,
):
    """An unoccluded pass costs 1, the first chunk of 4 positions 1 (a quarter
    each). 140 more positions would cost 35 in full passes: a third of it (the
    least saving accepted) repays a plan's 8 passes. 60 more would not."""
    model, calls = clocked
    ours, captum, batches = attribute_both(model, stride=2)  # 12 x 12 positions
    assert len(calls) == 35  # all but the first 4 positions, 4 per chunk
    assert batches == [1, 4]  # the unoccluded pass, the first chunk
    torch.testing.assert_close(ours, captum, rtol=1e-5, atol=1e-6)
    calls.clear()
    ours, captum, batches = attribute_both(model, stride=3)  # 8 x 8 positions
    assert not calls and batches == [1] + [4] * 16
    torch.testing.assert_close(ours, captum, rtol=1e-5, atol=1e-6)


def test_a_plan_whose_chunks_cost_more_than_full_passes_gives_way_to_them(
    clocked, monkeypatch
):
    """Each incremental chunk costs 10 on the clock, a full chunk 1 (a plan
    costing 1 pass pays for itself here). The plan's chunks start at the first
    full chunk's size, the most allowed: after two of them its search settles,
    and the rest runs as full passes."""
    model, calls = clocked
    monkeypatch.setattr("captum_deconvnet._scan.PLAN_COST", 1)
    incremental = OcclusionScan._incremental

    def slow(self, chunk):
        CLOCK[0] += 10.0
        return incremental(self, chunk)

    monkeypatch.setattr(OcclusionScan, "_incremental", slow)
    ours, captum, batches = attribute_both(model, stride=2, max_batch=16)
    assert calls == [16, 16]
    # the unoccluded pass, the first chunk, then full chunks after the plan's two
    assert batches == [1, 16] + [16] * 6
    torch.testing.assert_close(ours, captum, rtol=1e-5, atol=1e-6)


def test_a_plan_that_saves_too_little_gives_way_to_full_passes():
    """A global layer at the input spreads every occluder over the whole network;
    a stack of 3x3 convolutions keeps the boxes small, but one position is too
    little to repay making a plan."""
    x = images(1, 32)
    regions = [(slice(None), slice(0, 4), slice(0, 4))] * 30  # enough to plan
    squeeze = Functional(global_layer=True).eval()
    local = calibrated(vgg_style(), 32)
    assert IncrementalForward.plan(squeeze, images(1, 16)) is not None
    assert (
        OcclusionScan(
            squeeze, (images(1, 16),), 0, regions, torch.tensor(0), (), 4
        ).plan
        is None
    )
    assert (
        OcclusionScan(local, (x,), 0, regions, torch.tensor(0), (), 4).plan is not None
    )
    assert (
        OcclusionScan(local, (x,), 0, regions[:1], torch.tensor(0), (), 4).plan is None
    )


def test_a_plan_refused_for_its_saving_is_not_made_again_for_the_same_geometry(
    monkeypatch,
):
    """The refusal depends on the model's graph, the input's shape and the box
    alone: a later scan of that geometry runs full passes without making the plan
    again; another box, another model or a lower threshold plans anew."""
    made = []
    plan = IncrementalForward.plan.__func__

    def counted(cls, model, *args, **kwargs):
        made.append(model)
        return plan(cls, model, *args, **kwargs)

    monkeypatch.setattr(IncrementalForward, "plan", classmethod(counted))
    squeeze, x = Functional(global_layer=True).eval(), images(1, 16)

    def scan(model, side: int) -> OcclusionScan:
        regions = [(slice(None), slice(0, side), slice(0, side))] * 30
        return OcclusionScan(model, (x,), 0, regions, torch.tensor(0), (), 4)

    assert scan(squeeze, 4).plan is None and made == [squeeze]
    assert scan(squeeze, 4).plan is None and made == [squeeze]
    scan(squeeze, 6)
    other = Functional(global_layer=True).eval()
    scan(other, 4)
    assert made == [squeeze, squeeze, other]
    monkeypatch.setattr("captum_deconvnet._scan.MIN_LIMIT", 0.0)
    monkeypatch.setattr("captum_deconvnet._scan.PLAN_COST", 0)
    assert scan(squeeze, 4).plan is not None and len(made) == 4
    monkeypatch.undo()
    assert_as_captum(squeeze, x, window=4, stride=2)
    remembered = weakref.ref(other)
    del other, made[:]
    gc.collect()
    assert remembered() is None  # the memory does not keep a model alive


def test_where_plans_do_not_pay_only_a_box_cutting_approximation_makes_one(
    monkeypatch,
):
    """As on a GPU (the CPU stands in for it here): exact occlusion runs full
    passes, and a projective-field cap still gets its plan."""
    monkeypatch.setattr("captum_deconvnet._scan.PLANS_PAY_ON", ())
    model = calibrated(vgg_style(), 32)
    x = images(1, 32)
    regions = [(slice(None), slice(0, 4), slice(0, 4))] * 10
    assert OcclusionScan(model, (x,), 0, regions, torch.tensor(0), (), 4).plan is None
    cap = Approximation(projective_field=0.5)
    capped = OcclusionScan(
        model, (x,), 0, regions, torch.tensor(0), (), 4, approximate=cap
    )
    assert capped.plan is not None
    assert_as_captum(model, x, window=8, stride=4)


@pytest.mark.parametrize("incremental", [True, False])
def test_only_the_first_pass_checks_its_batches(incremental):
    """The unoccluded pass (or the plan's, which replaces it) runs under the check
    that refuses unbatched inputs; the copies, batches of the same examples, run
    without its Python call per operation."""
    checked = []

    class Watching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = calibrated(vgg_style(), 24)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            checked.append(torch._C._is_torch_function_mode_enabled())
            return self.net(x)

    model, x = Watching().eval(), images(2, 24)
    kwargs = {"sliding_window_shapes": (3, 6, 6), "strides": 3, "target": 0}
    OcclusionSensitivity(model, incremental=incremental).attribute(x, **kwargs)
    assert checked[0] and len(checked) > 1 and not any(checked[1:])
