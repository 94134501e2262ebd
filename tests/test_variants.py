"""The first-layer and Table 3 variants of the ZFNet builder."""

import pytest
import torch
import torchvision
from torch import nn

from captum_deconvnet import receptive_field
from lightning_zfnet import ZFNetModule, zfnet
from lightning_zfnet.model import LAYERS, zfnet_layers

# ZFNet at quarter width: conv1..conv5 maps and fc6/fc7 units.
C1, C2, C3, C4, C5, FC = 24, 64, 96, 96, 64, 1024


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def _sides(model: nn.Module, size: int) -> list[int]:
    sides = []
    handles = [
        m.register_forward_hook(lambda m, a, out: sides.append(out.shape[-1]))
        for m in model.features
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d))
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return sides


def test_krizhevsky_layer1_is_11x11_stride_4_with_a_stride_1_conv2():
    model = zfnet(width=0.25, layer1="krizhevsky").eval()
    conv1, conv2 = model.features[0], model.features[4]
    assert conv1.weight.shape == (C1, 3, 11, 11)
    assert (conv1.stride, conv1.padding) == ((4, 4), (2, 2))
    assert (conv2.stride, conv2.padding) == ((1, 1), (2, 2))
    # (224 + 4 - 11) // 4 + 1 = 55, then the same pools as ZFNet's: 6 after pool5
    assert _sides(model, 224) == [55, 28, 28, 14, 14, 14, 14, 6]
    # only layer 1's weights differ in number: 11x11 against 7x7 filters
    extra = (11 * 11 - 7 * 7) * 3 * C1
    assert _count(model) == _count(zfnet(width=0.25)) + extra


def test_layer1_receptive_fields_are_those_of_alexnet():
    shape = (3, 64, 64)
    ours = zfnet(width=0.25, input_size=64, layer1="krizhevsky")
    with torch.device("meta"):  # shapes only: no weights to initialise
        alexnet = torchvision.models.alexnet().features  # Krizhevsky's layers
    for mine, theirs in ((0, 0), (2, 2), (4, 3), (6, 5)):  # conv1, pool1, conv2, pool2
        field = receptive_field(ours, ours.features[mine], shape)
        reference = receptive_field(alexnet, alexnet[theirs], shape)
        assert (field.size, field.jump) == (reference.size, reference.jump)
    assert receptive_field(ours, ours.features[4], shape).size == (51, 51)
    zf = zfnet(width=0.25, input_size=64)
    # the paper's: conv1 7/2, conv2 27/8; both conv2s step 8 pixels
    assert receptive_field(zf, zf.features[0], shape).size == (7, 7)
    assert receptive_field(zf, zf.features[4], shape).size == (27, 27)
    assert receptive_field(zf, zf.features[4], shape).jump == (8, 8)


def test_both_first_layers_fit_64_pixel_images():
    for layer1 in ("zfnet", "krizhevsky"):
        model = zfnet(
            num_classes=10, in_channels=1, input_size=64, width=0.25, layer1=layer1
        )
        assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("removed", [(6, 7), (3, 4), (3, 4, 6, 7), (7,), (5,)])
def test_removed_layers_leave_placeholders_and_the_right_parameter_count(removed):
    model = zfnet(num_classes=10, width=0.25, input_size=64, removed_layers=removed)
    # by hand: the kept convolutions, each reading the last kept one's maps; at 64
    # pixels pool5 is 1x1, so fc6 (or the output layer) reads its channels
    expected, channels = _conv(7, 3, C1) + _conv(5, C1, C2), C2
    for number, out in ((3, C3), (4, C4), (5, C5)):
        if number not in removed:
            expected, channels = expected + _conv(3, channels, out), out
    units = channels
    for number in (6, 7):
        if number not in removed:
            expected, units = expected + units * FC + FC, FC
    expected += units * 10 + 10
    assert _count(model) == expected
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    first = {3: "features.8", 4: "features.10", 5: "features.12"}
    first.update({6: "classifier.0", 7: "classifier.3"})
    for number in removed:
        assert isinstance(model.get_submodule(first[number]), nn.Identity)
        if number != 5:  # pool5 stays
            name = LAYERS[f"conv{number}" if number < 6 else f"fc{number}"]
            assert isinstance(model.get_submodule(name), nn.Identity)
    assert isinstance(model.features[14], nn.MaxPool2d)  # indices are kept


def test_fc_units_sets_fc6_and_fc7():
    model = zfnet(fc_units=8192, width=0.25, input_size=64)
    linear = [m.out_features for m in model.classifier if isinstance(m, nn.Linear)]
    assert linear == [2048, 2048, 1000]


def test_variant_arguments_are_checked():
    with pytest.raises(ValueError, match="layer1"):
        zfnet(layer1="alexnet")
    with pytest.raises(ValueError, match="Krizhevsky's has stride 4"):
        zfnet(layer1="krizhevsky", conv1_stride=1)
    with pytest.raises(ValueError, match="removed_layers"):
        zfnet(removed_layers=[2])
    with pytest.raises(ValueError, match="fc_units"):
        zfnet(fc_units=0)


def test_module_passes_the_variant_options_on():
    module = ZFNetModule(
        num_classes=10,
        in_channels=1,
        input_size=64,
        width=0.25,
        layer1="krizhevsky",
        removed_layers=[3, 4],
        fc_units=2048,
    )
    assert module.model.features[0].kernel_size == (11, 11)
    assert isinstance(module.model.features[8], nn.Identity)
    assert module.model.classifier[0].out_features == 512


def test_the_papers_layer_names_skip_removed_layers():
    model = zfnet(width=0.25, input_size=64, removed_layers=[3, 4, 7])
    layers = zfnet_layers(model)
    assert list(layers) == ["conv1", "conv2", "conv5", "fc6"]
    assert layers["conv5"] is model.features[13]  # the ReLU after conv5
    assert model.features[12].out_channels == C5
    full = zfnet_layers(zfnet(width=0.25, input_size=64))
    assert list(full) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
