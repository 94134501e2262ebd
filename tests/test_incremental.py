"""The incremental plan's mechanics: which models get one, what it never does to a
model, layers it does not know, the multiply-add count, how chunks are sized."""

import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from torch import nn

from benchmarks.occlusion_speed import calibrated
from captum_deconvnet import OcclusionSensitivity
from captum_deconvnet.incremental import (
    IncrementalForward,
    count_multiply_adds,
)
from captum_deconvnet.incremental.graph import trace
from captum_deconvnet.incremental.rules import Opaque

from .incremental_helpers import check_every_node, images


def vgg_style() -> nn.Sequential:
    """3x3 convolutions, batch norm, ceil-mode and average pooling, a dilation,
    a grouped convolution, in-place activations."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.GELU(),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=4),
        nn.Dropout(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


class Functional(nn.Module):
    """TensorFlow-style layers as EfficientNet-Lite writes them (``F.pad`` then
    ``F.conv2d`` on a parameter, ``x.view(x.size(0), -1)``), a layer the plan does
    not know but that is local (softsign), and one that is global (a rescaling by
    the map's mean)."""

    def __init__(self, global_layer: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 3, 3, 3) / 5)
        self.conv = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)
        self.global_layer = global_layer

    def forward(self, x):
        x = F.conv2d(F.pad(x, [0, 1, 0, 1]), self.weight, stride=2)
        x = F.softsign(x)
        if self.global_layer:
            x = x * x.mean((1, 2, 3), keepdim=True)
        x = torch.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.parametrize("global_layer", [False, True])
def test_an_unknown_layer_is_computed_in_full_and_a_local_one_keeps_its_box(
    global_layer,
):
    model, x = Functional(global_layer).eval(), images(2, 16)
    plan = IncrementalForward.plan(model, x)
    assert sum(isinstance(s.rule, Opaque) for s in plan.steps) >= 2  # softsign, view
    kinds = check_every_node(plan, x, [(0, 0), (4, 8), (12, 12), (6, 2)], 4)
    # the conv after softsign runs on a box unless the rescaling spread the change
    assert kinds["box"] == (4 if global_layer else 6)
    kwargs = {"sliding_window_shapes": (3, 4, 4), "strides": 3, "target": 2}
    theirs = Occlusion(model).attribute(x, perturbations_per_eval=5, **kwargs)
    ours = OcclusionSensitivity(model).attribute(x, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kernel, stride, dilation",
    [((3, 3), (1, 1), (1, 1)), ((3, 2), (2, 1), (1, 1)), ((2, 2), (2, 2), (1, 1)),
     ((3, 3), (2, 3), (2, 1)), ((5, 1), (3, 1), (1, 1))],
)  # fmt: skip
def test_max_pool_on_boxes_equals_torch(kernel, stride, dilation):
    """The incremental path pools on the CPU by rows then columns; it must give
    ``F.max_pool2d``'s values, NaN and -inf (the padding) included."""
    from captum_deconvnet.incremental.classify import _separable_max

    x = torch.randn(2, 3, 11, 13)
    x[0, 1, 4, 5], x[1, 2, :, 3] = float("nan"), -float("inf")
    theirs = F.max_pool2d(x, kernel, stride, 0, dilation)
    ours = _separable_max(x, kernel, stride, dilation)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)


def test_gather_and_paste_agree_with_a_loop_over_copies():
    """Both ways of each (a slice per copy on the CPU, one indexing or one write
    per offset on a GPU), against plain indexing, boxes partly outside included."""
    from captum_deconvnet.incremental import boxes

    source = torch.randn(3, 4, 9, 10)
    images, corners = (
        torch.tensor([2, 0, 0, 1]),
        torch.tensor([[0, 0], [5, 6], [2, 3], [5, 6]]),
    )
    expected = torch.stack(
        [
            source[i, :, y : y + 4, x : x + 4]
            for i, (y, x) in zip(images, corners.tolist(), strict=True)
        ]
    )
    for gather in (boxes.gather, boxes._gather_each, boxes._gather_indexed):
        assert torch.equal(gather(source, images, corners, (4, 4)), expected)
    values = torch.randn(4, 4, 3, 5)
    for offsets in ([[0, 0], [-1, 7], [6, 2], [0, 0]], [[1, 2]] * 4):
        offsets, target = torch.tensor(offsets), torch.randn(4, 4, 9, 10)
        expected = target.clone()
        for b, (y, x) in enumerate(offsets.tolist()):
            for r in range(3):
                for c in range(5):
                    if 0 <= y + r < 9 and 0 <= x + c < 10:
                        expected[b, :, y + r, x + c] = values[b, :, r, c]
        for paste in (boxes.paste, boxes._paste_each, boxes._paste_grouped):
            written = target.clone()
            paste(written, offsets, values)
            assert torch.equal(written, expected)


def test_multiply_adds_counted_by_hand_on_two_layers():
    """8x8 input, 2x2 occluder at stride 2 (16 positions); conv1 1->2 channels and
    conv2 2->3, both 3x3 with padding 1. A full pass: 9*2*64 + 18*3*64 = 4608.
    Along each axis the occluder starts at 0, 2, 4, 6; conv1's box then spans rows
    0-2, 1-4, 3-6, 5-7 (3+4+4+3 = 14) and conv2's 0-3, 0-5, 2-7, 4-7 (4+6+6+4 =
    20), so over the 16 positions conv1 computes 14*14 outputs and conv2 20*20."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 3, 3, padding=1))
    counted = count_multiply_adds(model, torch.randn(1, 1, 8, 8), 2, 2)
    assert counted.positions == 16
    assert counted.full == 17 * 4608  # the unoccluded pass and one per position
    assert counted.incremental == 4608 + 9 * 2 * 14 * 14 + 18 * 3 * 20 * 20
    assert counted.limit == pytest.approx(78336 / 29736)


@pytest.mark.parametrize(
    ("image", "window", "stride", "fraction", "error", "names"),
    [
        ((1, 1, 8, 8), 2, 2, 1.0, TypeError, "image"),
        (torch.randn(1, 8, 8), 2, 2, 1.0, ValueError, "(1, 8, 8)"),
        (torch.randn(2, 1, 8, 8), 2, 2, 1.0, ValueError, "one image"),
        (torch.randn(1, 1, 8, 8), 9, 2, 1.0, ValueError, "window (9, 9)"),
        (torch.randn(1, 1, 8, 8), 0, 2, 1.0, ValueError, "window"),
        (torch.randn(1, 1, 8, 8), 2.0, 2, 1.0, TypeError, "window"),
        (torch.randn(1, 1, 8, 8), 2, 0, 1.0, ValueError, "stride"),
        (torch.randn(1, 1, 8, 8), 2, 2, 0.0, ValueError, "cap_fraction"),
        (torch.randn(1, 1, 8, 8), 2, 2, True, ValueError, "cap_fraction"),
    ],
)
def test_the_counter_refuses_bad_arguments_by_name(
    image, window, stride, fraction, error, names
):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    with pytest.raises(error, match=re.escape(names)):
        count_multiply_adds(model, image, window, stride, fraction)


def test_the_counter_names_a_model_that_is_not_one_or_has_no_plan():
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        count_multiply_adds("model", torch.randn(1, 1, 8, 8), 2, 2)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    with pytest.raises(ValueError, match=r"image of shape \(1, 3, 8, 8\)"):
        count_multiply_adds(model, torch.randn(1, 3, 8, 8), 2, 2)  # 3 channels


def test_models_that_get_no_plan():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                x = x * 2
            return self.conv(x).flatten(1)

    class TwoOutputs(nn.Sequential):
        def forward(self, x):
            y = super().forward(x)
            return y, y.sum(1)

    class Aliased(nn.Module):
        def forward(self, x):
            y = x.relu()
            z = y.add_(1)  # overwrites y, which is read again below
            return (z * y).flatten(1)

    x = torch.randn(1, 3, 8, 8)
    conv = nn.Sequential(nn.Conv2d(3, 3, 3), nn.Flatten())
    assert IncrementalForward.plan(Branchy(), x) is None
    assert IncrementalForward.plan(TwoOutputs(nn.Conv2d(3, 3, 3)), x) is None
    assert IncrementalForward.plan(Aliased(), x) is None
    assert IncrementalForward.plan(nn.Sequential(conv, nn.Dropout()).train(), x) is None
    batch_norm = nn.Sequential(nn.BatchNorm2d(3), conv)
    assert IncrementalForward.plan(batch_norm.train(), x) is None
    assert IncrementalForward.plan(batch_norm.eval(), x) is not None
    batch_statistics = nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False))
    plan = IncrementalForward.plan(nn.Sequential(batch_statistics, conv).eval(), x)
    assert isinstance(plan.steps[0].rule, Opaque)  # computed in full on the copies
    kwargs = {"sliding_window_shapes": (3, 2, 2), "strides": 2, "target": 0}
    torch.testing.assert_close(
        OcclusionSensitivity(Aliased()).attribute(x, **kwargs),
        Occlusion(Aliased()).attribute(x, **kwargs),
    )


def _set_first_channel(y):
    y[:, :1] = 0.5
    return y


def assert_gives_captums_numbers(model: nn.Module, x: torch.Tensor, target: int):
    kwargs = {"sliding_window_shapes": (3, 4, 4), "strides": 2, "target": target}
    torch.testing.assert_close(
        OcclusionSensitivity(model).attribute(x, **kwargs),
        Occlusion(model).attribute(x, **kwargs),
        rtol=1e-5,
        atol=1e-6,
    )


class Overwrites(nn.Module):
    """Two convolutions with an in-place operation between them, and an argument
    left at its default."""

    def __init__(self, overwrite) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.overwrite = overwrite
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x, scale: float = 3.0):
        y = self.overwrite(self.c1(x) * scale)
        return self.fc(self.c2(y).mean((2, 3)))


@pytest.mark.parametrize(
    ("overwrite", "planned"),
    [
        (lambda y: F.leaky_relu_(y, 0.1), True),  # its result read on
        (lambda y: F.hardtanh_(y, -0.5, 0.5), True),
        (lambda y: F.elu_(y), True),
        (lambda y: [torch.clamp_(y, 0.0, 0.5), y][1], False),  # y read again
        (lambda y: [y.mul_(2.0), y][1], False),
        (_set_first_channel, False),  # x[...] = v: overwrites y, read again
    ],
)
def test_in_place_functions_give_captums_numbers(overwrite, planned):
    """In-place operations (``torch.clamp_``, ``F.leaky_relu_``, ``Tensor.mul_``,
    item assignment) run on a copy where nothing else reads what they overwrite,
    and send the model to full passes where something does."""
    model = Overwrites(overwrite).eval()
    x = images(2, 16, seed=1)
    assert (IncrementalForward.plan(model, x) is not None) is planned
    assert_gives_captums_numbers(model, x, target=1)


class Masked(Overwrites):
    """An optional argument that changes the graph when given."""

    def __init__(self) -> None:
        super().__init__(F.relu)

    def forward(self, x, mask=None):
        y = F.relu(self.c1(x))
        if mask is not None:
            y = y * mask
        return self.fc(self.c2(y).mean((2, 3)))


class Scaled(Overwrites):
    def __init__(self) -> None:
        super().__init__(F.relu)

    def forward(self, x, scale=torch.tensor(2.0)):  # noqa: B008 - what users write
        return self.fc(self.c2(F.relu(self.c1(x)) * scale).mean((2, 3)))


def test_arguments_left_at_their_defaults_are_traced_as_such():
    model, x = Masked().eval(), images(2, 16, seed=2)
    assert IncrementalForward.plan(model, x) is not None
    assert_gives_captums_numbers(model, x, target=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_gives_captums_numbers(Scaled().eval(), x, target=0)
    assert not caught  # fx's notes on a tensor default stay inside


class Stores(nn.Module):
    """A forward that keeps what it computed: a lazily built constant, the last
    features, every call's features in a list."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 5)
        self.ramp, self.features, self.seen = None, None, []

    def forward(self, x):
        h = F.relu(self.conv(x))
        if self.ramp is None:
            self.ramp = torch.linspace(0, 1, h.shape[-1])
        self.features = h
        self.seen.append(h)
        return self.fc((h + self.ramp).mean((2, 3)))


def test_tracing_leaves_what_the_forward_stores_as_it_was():
    """Tracing runs the forward on fx proxies; none may stay in the model."""
    model, x = Stores().eval(), images(2, 16)
    assert IncrementalForward.plan(model, x) is not None
    assert model.ramp is None and model.features is None and model.seen == []
    assert_gives_captums_numbers(model, x, target=0)
    plain = Stores().eval()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x), plain(x))
    assert all(isinstance(h, torch.Tensor) for h in model.seen)


def test_a_model_that_raises_raises_its_own_error():
    """A model that fails on the input fails as in a plain call, not inside the
    traced graph."""
    model = vgg_style().eval()
    with pytest.raises(RuntimeError) as plain:
        model(images(1, 16).double())
    with pytest.raises(RuntimeError) as ours:
        OcclusionSensitivity(model).attribute(images(1, 16).double(), (3, 4, 4), 2, 0)
    assert str(ours.value) == str(plain.value)


@pytest.mark.parametrize("where", ["root", "inner", "inner-pre", "global"])
def test_hooks_send_occlusion_to_full_passes(where):
    """A traced graph drops the hooks of the modules it inlines and would run a kept
    module's hooks on boxes: any hook must give Captum's numbers, not the graph's."""
    model = vgg_style().eval()
    x = images(2, 16, seed=3)
    softmax = lambda m, a, out: out.softmax(1)  # noqa: E731
    if where == "root":
        handle = model.register_forward_hook(softmax)
    elif where == "inner":
        handle = model[2].register_forward_hook(lambda m, a, out: out * 2 + 1)
    elif where == "inner-pre":
        handle = model[3].register_forward_pre_hook(lambda m, a: (a[0].tanh(),))
    else:
        handle = nn.modules.module.register_module_forward_hook(
            lambda m, a, out: out.softmax(1) if m is model else None
        )
    try:
        assert IncrementalForward.plan(model, x) is None
        ours = OcclusionSensitivity(model).attribute(x, (3, 4, 4), strides=2, target=1)
        theirs = Occlusion(model).attribute(x, (3, 4, 4), strides=2, target=1)
    finally:
        handle.remove()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_the_model_is_left_as_it_was():
    model = calibrated(vgg_style(), 24)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    OcclusionSensitivity(model).attribute(images(2, 24), (3, 6, 6), 4, target=0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model[2].inplace and model[4].inplace and not model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_chunks_grow_while_faster_and_max_batch_bounds_them(
    every_plan, incremental_chunks
):
    model, sizes = calibrated(vgg_style(), 24), incremental_chunks
    x = images(2, 24)
    kwargs = {"sliding_window_shapes": (3, 4, 4), "strides": 3, "target": 0}
    reference = Occlusion(model).attribute(x, perturbations_per_eval=8, **kwargs)
    result = OcclusionSensitivity(model, max_batch=16).attribute(x, **kwargs)
    torch.testing.assert_close(result, reference, rtol=1e-5, atol=1e-6)
    assert sizes[0] == 8 and max(sizes) <= 16  # 4 positions of 2 images, then up
    sizes.clear()
    OcclusionSensitivity(model, max_batch=16).attribute(
        x, perturbations_per_eval=3, **kwargs
    )
    assert set(sizes[:-1]) == {6}  # a fixed perturbations_per_eval is kept


class PicksChannels(nn.Module):
    """Renormalises channel ``channel`` alone, as torchvision's GoogLeNet does with
    ``transform_input``; with ``twice`` the picked channel is read again."""

    def __init__(self, channel: int, twice: bool = False) -> None:
        super().__init__()
        self.channel, self.twice = channel, twice
        self.conv = nn.Conv2d(2, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        picked = x[:, self.channel]
        renormalised = torch.unsqueeze(picked, 1) * 2.0 - 0.5
        out = self.conv(torch.cat([renormalised, x[:, 1:2]], 1))
        return out + picked.mean() if self.twice else out


@pytest.mark.parametrize(("channel", "twice"), [(0, False), (-1, False), (2, True)])
def test_a_picked_channel_is_narrowed_with_the_same_values(channel, twice):
    model, x = PicksChannels(channel, twice).eval(), images(2, 12)
    gm = trace(model)
    narrowed = [n for n in gm.graph.nodes if n.target is torch.narrow]
    assert len(narrowed) == (0 if twice else 1)
    assert torch.equal(gm(x), model(x))
    plan = IncrementalForward.plan(model, x)
    kinds = check_every_node(plan, x, [(0, 0), (5, 7)], 3)
    assert kinds["box"] >= (1 if twice else 4)  # narrow, mul, sub, cat, conv


def test_a_picked_channel_out_of_range_still_fails():
    model, x = PicksChannels(5).eval(), images(2, 12)
    with pytest.raises(IndexError):
        model(x)
    with pytest.raises((IndexError, RuntimeError)):
        trace(model)(x)


class Passes(nn.Module):
    """A module the trace inlines, returning its input as it is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Pair(nn.Module):
    """A module the trace inlines, returning a tuple."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.relu(), -x


class WatchedWays(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.passes, self.pair = Passes(), Pair()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.pair(self.conv(self.passes(x)))
        return self.fc(self.block(a + b).mean((2, 3)))


def test_a_watched_module_is_the_value_it_returns_or_full_passes(every_plan):
    """A block the trace inlines is watched at the value it returns; one returning
    the input itself or a tuple gets no plan (full passes)."""
    model, x = WatchedWays().eval(), images(2, 16)
    assert IncrementalForward.plan(model, x, watch=model.block) is not None
    for layer in (model.passes, model.pair):
        assert IncrementalForward.plan(model, x, watch=layer) is None
    full = OcclusionSensitivity(model, incremental=False)
    fast = OcclusionSensitivity(model)
    for layer in (model.block, model.passes):
        expected = full.sensitivity_maps(x, 4, 4, layer=layer)
        got = fast.sensitivity_maps(x, 4, 4, layer=layer)
        torch.testing.assert_close(got.activation, expected.activation)
