"""Approximate occlusion: the coarse-to-fine drill-down against exact outputs and
their bilinear interpolation, and the projective-field cap on the boxes."""

import math
import warnings

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from benchmarks.occlusion_speed import calibrated
from captum_deconvnet import OcclusionSensitivity
from captum_deconvnet._occlusion_args import occluder_regions
from captum_deconvnet._scan import OcclusionScan
from captum_deconvnet.incremental import Approximation, IncrementalForward
from captum_deconvnet.incremental.forward import Chunk
from captum_deconvnet.incremental.rules import Box

from .incremental_helpers import images


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )  # fmt: skip


def per_position(
    model, x, window, stride, approximate=None, incremental=True
) -> torch.Tensor:
    """``(rows, cols, N, classes)``: the outputs at each occluder position."""
    regions = occluder_regions(x.shape[1:], (3, window, window), (3, stride, stride))
    scan = OcclusionScan(
        model, (x,), 0, regions, torch.tensor(0.0), (), 5,
        incremental=incremental, approximate=approximate,
    )  # fmt: skip
    with torch.no_grad():
        outputs = torch.cat([out for _, out, _ in scan])
    side = round(math.sqrt(len(regions)))
    return outputs.reshape(side, side, len(x), -1)


def test_drill_down_computes_the_coarse_grid_and_interpolates_the_rest():
    model, x = calibrated(small_net(), 20), images(2, 20)
    exact = per_position(model, x, 4, 2, None)  # a 9x9 grid of positions
    coarse = per_position(model, x, 4, 2, Approximation(coarse=3, refine=0.0))
    lines = [0, 3, 6, 8]  # every third, and the last
    for r in range(9):
        for c in range(9):
            r0, r1 = max(i for i in lines if i <= r), min(i for i in lines if i >= r)
            c0, c1 = max(i for i in lines if i <= c), min(i for i in lines if i >= c)
            wr = 0.0 if r1 == r0 else (r - r0) / (r1 - r0)
            wc = 0.0 if c1 == c0 else (c - c0) / (c1 - c0)
            expected = (
                (1 - wr) * (1 - wc) * exact[r0, c0] + (1 - wr) * wc * exact[r0, c1]
                + wr * (1 - wc) * exact[r1, c0] + wr * wc * exact[r1, c1]
            )  # fmt: skip
            torch.testing.assert_close(coarse[r, c], expected, rtol=1e-5, atol=1e-5)
    refined = per_position(model, x, 4, 2, Approximation(coarse=3, refine=0.5))
    computed = (refined - exact).abs().amax((2, 3)) < 1e-5
    assert computed.sum() == 16 + math.ceil(0.5 * (81 - 16))  # coarse + refined
    by_full_passes = per_position(
        model, x, 4, 2, Approximation(coarse=3, refine=0.5), incremental=False
    )
    torch.testing.assert_close(by_full_passes, refined, rtol=1e-5, atol=1e-5)
    everything = per_position(model, x, 4, 2, Approximation(coarse=3, refine=1.0))
    torch.testing.assert_close(everything, exact, rtol=1e-5, atol=1e-5)


def test_the_projective_field_cap_bounds_every_box():
    model, x = calibrated(small_net(), 24), images(1, 24)
    plan = IncrementalForward.plan(model, x, cap_fraction=0.4)
    corners = torch.tensor([[8, 8], [0, 16]])
    patches = torch.zeros(2, 3, 8, 8)
    sizes = []
    with torch.no_grad():
        for node, state in plan.states(
            Chunk(plan, torch.zeros(2, dtype=torch.long)), corners, patches
        ):
            if isinstance(state, Box) and node is not plan.placeholder:
                limit = [math.ceil(0.4 * s) for s in state.region.shape]
                sizes.append(state.region.size)
                assert all(
                    s <= m for s, m in zip(state.region.size, limit, strict=True)
                )
    assert sizes
    kwargs = {"sliding_window_shapes": (3, 8, 8), "strides": 4, "target": 0}
    exact = OcclusionSensitivity(model).attribute(x, **kwargs)
    capped = OcclusionSensitivity(model, approximate=Approximation(0.4)).attribute(
        x, **kwargs
    )
    assert not torch.allclose(capped, exact)  # an approximation, close to the map
    assert torch.corrcoef(torch.stack([capped.flatten(), exact.flatten()]))[0, 1] > 0.5


def test_a_tolerance_cuts_the_boxes_to_where_they_change():
    model, x = calibrated(small_net(), 24), images(1, 24)
    kwargs = {"sliding_window_shapes": (3, 6, 6), "strides": 3, "target": 0}
    exact = OcclusionSensitivity(model).attribute(x, **kwargs)
    areas = {}
    for tolerance in (1e-7, 0.5):
        plan = IncrementalForward.plan(model, x, tolerance=tolerance)
        chunk = Chunk(plan, torch.zeros(1, dtype=torch.long))
        states = plan.states(chunk, torch.tensor([[9, 9]]), torch.zeros(1, 3, 6, 6))
        with torch.no_grad():
            areas[tolerance] = sum(
                s.region.area for _, s in states if isinstance(s, Box)
            )
        approximate = Approximation(tolerance=tolerance)
        result = OcclusionSensitivity(model, approximate=approximate).attribute(
            x, **kwargs
        )
        close = torch.allclose(result, exact, rtol=1e-4, atol=1e-5)
        assert close == (tolerance < 1e-6)  # what is cut changed too little to see
    assert areas[0.5] < areas[1e-7]


def test_bad_approximations_are_refused():
    with pytest.raises(ValueError, match="projective_field"):
        Approximation(projective_field=0.0)
    with pytest.raises(ValueError, match="coarse"):
        Approximation(coarse=0)
    with pytest.raises(ValueError, match="refine"):
        Approximation(refine=1.5)
    with pytest.raises(ValueError, match="tolerance"):
        Approximation(tolerance=-1.0)
    with pytest.raises(ValueError, match="tolerance"):
        Approximation(tolerance=float("inf"))
    for name in ("projective_field", "refine", "tolerance"):
        for value in (None, "0.5", True):
            with pytest.raises(TypeError, match=name):
                Approximation(**{name: value})
    with pytest.raises(TypeError, match="coarse"):
        Approximation(coarse=2.0)
    assert Approximation(coarse=np.int64(2), refine=np.float32(0.5)).drills_down
    with pytest.raises(TypeError, match="Approximation"):
        OcclusionSensitivity(small_net(), approximate=0.5)
    with pytest.raises(TypeError, match="incremental"):
        OcclusionSensitivity(small_net(), incremental="no")
    for cut in (Approximation(projective_field=0.5), Approximation(tolerance=0.1)):
        with pytest.raises(ValueError, match="incremental=False"):
            OcclusionSensitivity(small_net(), incremental=False, approximate=cut)
    drill = OcclusionSensitivity(
        small_net(), approximate=Approximation(coarse=2, refine=0)
    )
    with pytest.raises(ValueError, match="grid"):  # a window over some channels only
        drill.attribute(images(1, 8), (1, 4, 4), strides=(1, 2, 2), target=0)
    vectors = OcclusionSensitivity(
        nn.Linear(12, 3).eval(), approximate=Approximation(coarse=2, refine=0.5)
    )
    with pytest.raises(ValueError, match="grid"):  # positions along one dimension
        vectors.attribute(torch.randn(2, 12), (2,), target=1)


def test_a_cut_the_call_cannot_make_is_named_and_the_map_is_exact():
    """A function (not an nn.Module) gets no plan, so no boxes to cut."""
    model, x = calibrated(small_net(), 24), images(1, 24)
    kwargs = {"sliding_window_shapes": (3, 6, 6), "strides": 3, "target": 0}
    exact = Occlusion(model).attribute(x, perturbations_per_eval=4, **kwargs)
    capped = OcclusionSensitivity(
        lambda t: model(t), approximate=Approximation(projective_field=0.4)
    )
    with pytest.warns(UserWarning, match="runs exact full passes") as caught:
        result = capped.attribute(x, **kwargs)
    assert caught[0].filename == __file__
    torch.testing.assert_close(result, exact, rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a drill-down needs no plan: no warning
        OcclusionSensitivity(
            lambda t: model(t), approximate=Approximation(coarse=2, refine=0.5)
        ).attribute(x, **kwargs)


def test_positions_a_drill_down_cannot_interpolate_are_refused_before_any_pass():
    """The window and the input are named, and the model never runs: before, the
    error came after the unoccluded pass and every pass over earlier inputs."""
    net, calls = small_net().eval(), []

    def model(first, second):
        calls.append(len(first))
        return net(first) + net(second)

    drill = OcclusionSensitivity(model, approximate=Approximation(coarse=2, refine=0))
    x = images(2, 16)
    message = (
        r"sliding_window_shapes \(1, 4, 4\) on inputs \(3, 16, 16\) give \(3, 7, 7\)"
    )
    with pytest.raises(ValueError, match=message):
        drill.attribute(
            (x, x), ((3, 4, 4), (1, 4, 4)), strides=(2, (1, 2, 2)), target=0
        )
    assert calls == []
    vectors = OcclusionSensitivity(
        nn.Linear(12, 3).eval(), approximate=Approximation(coarse=2, refine=0.5)
    )
    with pytest.raises(ValueError, match=r"\(2,\) on inputs \(12,\) give \(6,\)"):
        vectors.attribute(torch.randn(2, 12), (2,), strides=2, target=1)


def test_a_cut_the_call_cannot_make_does_not_claim_exact_results_of_a_drill_down():
    model, x = calibrated(small_net(), 24), images(1, 24)
    kwargs = {"sliding_window_shapes": (3, 6, 6), "strides": 3, "target": 0}
    both = Approximation(projective_field=0.4, coarse=2, refine=0.0)
    with pytest.warns(UserWarning, match="exact at the positions its drill-down"):
        result = OcclusionSensitivity(lambda t: model(t), approximate=both).attribute(
            x, **kwargs
        )
    exact = Occlusion(model).attribute(x, **kwargs)
    assert not torch.allclose(result, exact, rtol=1e-4, atol=1e-6)  # interpolated


@pytest.mark.parametrize(
    "approximate", [Approximation(projective_field=0.4), Approximation(tolerance=0.3)]
)
def test_a_cut_is_each_positions_own_whatever_the_batching(approximate):
    """The copies of a pass share one box, which a cut shrinks for all: each pass
    holds one position (batched, the cap was centred on the chunk's largest box,
    and chunk sizes found by timing made identical calls differ)."""
    model, x = calibrated(small_net(), 32), images(2, 32)
    kwargs = {"sliding_window_shapes": (3, 12, 12), "strides": 4, "target": 0}
    occlusion = OcclusionSensitivity(model, approximate=approximate)
    one = occlusion.attribute(x, perturbations_per_eval=1, **kwargs)
    for per_eval in (None, 5, 32):
        result = occlusion.attribute(x, perturbations_per_eval=per_eval, **kwargs)
        assert torch.equal(result, one), per_eval
    exact = OcclusionSensitivity(model).attribute(x, **kwargs)
    assert not torch.allclose(one, exact, rtol=1e-3, atol=1e-6)  # it cuts
