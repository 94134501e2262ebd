"""Incremental occlusion equals full forward passes on the models it serves."""

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from torch import nn
from torchvision.models import alexnet, resnet18

from captum_deconvnet import OcclusionSensitivity
from captum_deconvnet._incremental import IncrementalForward
from lightning_zfnet import ZFNet


def randomised(model: nn.Module) -> nn.Module:
    """Eval mode, with a non-zero output layer (ZFNet starts it at zero)."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features**-0.5)
    return model.eval()


def vgg_style() -> nn.Sequential:
    """3x3 convolutions, batch norm, ceil-mode and average pooling, a dilation."""
    torch.manual_seed(0)
    layers = [
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
    ]
    model = nn.Sequential(*layers)
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


class Scale(nn.Module):
    """A layer the incremental path does not know: a learnt global rescaling."""

    def forward(self, x):
        return x * x.mean((1, 2, 3), keepdim=True)  # depends on the whole map


class FunctionalNet(nn.Module):
    """ReLUs as functions, and an unknown layer in the middle of the chain."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.scale = Scale()
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.conv2(x).relu()
        x = torch.relu(self.conv3(self.scale(x)))
        return self.fc(x.flatten(1))


def chain(model: nn.Module, x: torch.Tensor) -> list[str]:
    plan = IncrementalForward.plan(model, x)
    return [] if plan is None else [s.node.name for s in plan.steps]


# (model, input size, window, stride, the layers the incremental path takes)
CASES = {
    "zfnet": (lambda: ZFNet(num_classes=10, width=0.25), 224, 32, 16, 15),
    "vgg_style": (vgg_style, 40, 9, 5, 11),  # adaptive pool 1x1 ends the chain
    "alexnet": (lambda: alexnet(num_classes=10), 224, 48, 40, 14),  # 13 + 6x6 avgpool
    "fallback": (FunctionalNet, 32, 6, 5, 4),  # conv, relu, conv, relu; then scale
    "resnet18": (lambda: resnet18(num_classes=10), 64, 16, 12, 4),  # the stem
}


@pytest.mark.parametrize("name", CASES)
def test_incremental_equals_full_recomputation(name):
    build, size, window, stride, chain_length = CASES[name]
    model = randomised(build())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    assert len(chain(model, x)) == chain_length
    kwargs = {"sliding_window_shapes": (3, window, window), "strides": stride}
    kwargs["target"] = [1, 7]
    full = OcclusionSensitivity(model, incremental=False).attribute(x, **kwargs)
    fast = OcclusionSensitivity(model, max_batch=16).attribute(x, **kwargs)
    # within 1e-4 of the map's largest value: float32 sums in another order
    torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-4 * full.abs().max())
    assert full.abs().max() > 0


@pytest.mark.parametrize("layer", ["features.12", "classifier.4"])
def test_incremental_sensitivity_maps_equal_full_ones(layer):
    model = randomised(ZFNet(num_classes=10, width=0.25, input_size=96))
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    watched = model.get_submodule(layer)
    full = OcclusionSensitivity(model, incremental=False).sensitivity_maps(
        x, 20, 9, layer=watched
    )
    fast = OcclusionSensitivity(model).sensitivity_maps(x, 20, 9, layer=watched)
    torch.testing.assert_close(fast.probability, full.probability, rtol=1e-4, atol=0)
    torch.testing.assert_close(fast.activation, full.activation, rtol=1e-4, atol=1e-3)
    assert torch.equal(fast.top_class, full.top_class)


def test_the_boxes_cover_what_changes_and_stay_within_the_hand_count_for_zfnet():
    """The issue's count for a 32x32 occluder at 224 (at most 19 after conv1, 8
    after conv2, then 7, 9, 11 after conv3-5), against the region that really
    changes in a full forward pass."""
    model = randomised(ZFNet(num_classes=10, width=0.25))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    convs = [0, 4, 8, 10, 12]
    corners = [(96, 96), (48, 112), (16, 0)]  # on the stride-16 grid
    occluded = x.repeat(len(corners), 1, 1, 1)
    for b, (y, x0) in enumerate(corners):
        occluded[b, :, y : y + 32, x0 : x0 + 32] = 0
    outputs = []
    hooks = [
        model.features[i].register_forward_hook(lambda m, a, o: outputs.append(o))
        for i in convs
    ]
    with torch.no_grad():
        model(torch.cat([x, occluded]))
    for h in hooks:
        h.remove()
    changed = [
        int((out[1:] != out[:1]).any(1).any(2).sum(1).max()) for out in outputs
    ]  # rows that change, the most over the corners
    plan = IncrementalForward.plan(model, x)
    patches = occluded[:, :, :32, :32].zero_()
    with torch.no_grad():
        plan(torch.zeros(3, dtype=torch.long), torch.tensor(corners), patches)
    boxes = [plan.box_sizes[f"features_{i}"][0] for i in convs]
    hand_count = [19, 8, 7, 9, 11]
    assert all(c <= b <= h for c, b, h in zip(changed, boxes, hand_count, strict=True))


def test_models_it_cannot_trace_or_use_run_in_full():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                x = x * 2
            return self.conv(x).flatten(1)

    x = torch.randn(1, 3, 8, 8)
    assert chain(Branchy(), x) == []
    hooked = nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU(), nn.Flatten())
    hooked[1].register_forward_hook(lambda m, a, out: out * 2)
    assert chain(hooked, x) == []  # any hook: full passes (see below)
    training = nn.Sequential(nn.Conv2d(3, 3, 3), nn.Dropout(), nn.Flatten()).train()
    assert chain(training, x) == ["_0"]  # dropout in training mode is not local


@pytest.mark.parametrize("where", ["root", "inner", "inner-pre", "global"])
def test_hooks_send_occlusion_to_full_passes(where):
    """A traced graph drops the hooks of the modules it inlines and would run a kept
    module's hooks on boxes: any hook must give Captum's numbers, not the graph's."""

    model = vgg_style()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
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
