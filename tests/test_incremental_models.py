"""Incremental occlusion equals full passes and Captum on each CNN family, at small
input sizes: residual (ResNet-18/50), Inception (GoogLeNet, Inception v3),
chains (VGG-16, ZFNet), depthwise (MobileNetV2), squeeze-and-excitation
(EfficientNet-B0), TensorFlow-style padding (EfficientNet-Lite0) and channel
shuffles (ShuffleNetV2)."""

import pytest
import torch
from captum.attr import Occlusion
from torchvision import models

from benchmarks.occlusion_speed import calibrated
from captum_deconvnet import OcclusionSensitivity
from captum_deconvnet._scan import OcclusionScan
from captum_deconvnet.incremental import IncrementalForward
from lightning_zfnet import ZFNet

from .incremental_helpers import check_every_node, images


def lite0():
    pytest.importorskip(
        "efficientnet_lite_pytorch", reason="pip install -e '.[bench]' for it"
    )
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", image_size=64, num_classes=10)


# name: (model, input size, window, stride): 9 to 16 positions each
FAMILIES = {
    "resnet18": (lambda: models.resnet18(num_classes=10), 64, 16, 16),
    "resnet50": (lambda: models.resnet50(num_classes=10), 48, 16, 16),
    # transform_input: as torchvision builds them with their ImageNet weights
    "googlenet": (
        lambda: models.googlenet(
            num_classes=10, aux_logits=False, init_weights=True, transform_input=True
        ),
        64, 22, 21,
    ),
    "inception_v3": (
        lambda: models.inception_v3(
            num_classes=10, aux_logits=False, init_weights=True, transform_input=True
        ),
        80, 27, 27,
    ),
    "vgg16": (lambda: models.vgg16(num_classes=10), 32, 11, 11),
    "mobilenet_v2": (lambda: models.mobilenet_v2(num_classes=10), 48, 16, 16),
    "efficientnet_b0": (lambda: models.efficientnet_b0(num_classes=10), 48, 16, 16),
    "zfnet": (lambda: ZFNet(num_classes=10, width=0.25, input_size=96), 96, 32, 32),
    "efficientnet_lite0": (lite0, 64, 22, 21),
    "shufflenet_v2": (lambda: models.shufflenet_v2_x0_5(num_classes=10), 64, 16, 16),
}  # fmt: skip


@pytest.mark.parametrize("name", FAMILIES)
def test_attribution_equals_full_passes_and_captum(name, every_plan):
    build, size, window, stride = FAMILIES[name]
    model = calibrated(build(), size)
    x = images(2, size)
    kwargs = {"sliding_window_shapes": (3, window, window), "strides": stride}
    kwargs["target"] = [1, 7]
    regions = [(slice(None), slice(0, window), slice(0, window))]
    assert OcclusionScan(model, (x,), 0, regions, torch.tensor(0), (), 1).plan
    fast = OcclusionSensitivity(model, max_batch=8).attribute(x, **kwargs)
    full = OcclusionSensitivity(model, incremental=False).attribute(x, **kwargs)
    captum = Occlusion(model).attribute(x, perturbations_per_eval=4, **kwargs)
    scale = full.abs().max()
    assert scale > 1e-4  # the outputs do depend on the occluder
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(fast, captum, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize(
    ("name", "boxes"),
    [("resnet18", 20), ("googlenet", 45), ("mobilenet_v2", 40), ("zfnet", 9)],
)
def test_every_node_changes_only_inside_its_box(name, boxes):
    """Node by node, against full passes: a box holds the occluded values, and
    outside it the occluded pass equals the unoccluded one."""
    build, size, _, _ = FAMILIES[name]
    window = 8
    model = calibrated(build(), size)
    x = images(2, size)
    plan = IncrementalForward.plan(model, x)
    corners = [(0, 0), (size // 2, 3), (size - window, size - window), (5, 17)]
    kinds = check_every_node(plan, x, corners, window)
    assert kinds["box"] >= boxes  # through residual, concatenation, depthwise layers


def test_a_watched_layer_inside_a_residual_block_gives_the_full_maps(
    every_plan, incremental_chunks
):
    """Also a layer that runs twice (a block's shared, in-place ReLU: its first run
    is watched, as in full passes), a residual block and a stage of blocks (which
    the trace inlines: the value they return is watched)."""
    model = calibrated(models.resnet18(num_classes=10), 48)
    x = images(2, 48)
    shared = model.layer1[0].relu
    layers = (model.layer1[1].conv2, model.layer2[0].downsample[1], shared)
    for layer in (*layers, model.layer1[0], model.layer2):
        full = OcclusionSensitivity(model, incremental=False).sensitivity_maps(
            x, 12, 12, layer=layer
        )
        incremental_chunks.clear()
        fast = OcclusionSensitivity(model).sensitivity_maps(x, 12, 12, layer=layer)
        assert incremental_chunks  # the plan ran
        torch.testing.assert_close(
            fast.probability, full.probability, rtol=1e-4, atol=1e-6
        )
        torch.testing.assert_close(
            fast.activation, full.activation, rtol=1e-4, atol=1e-3
        )
        assert torch.equal(fast.top_class, full.top_class)
