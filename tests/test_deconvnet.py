import math
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import Deconvolution, NeuronDeconvolution, Saliency
from torch import nn
from torch.utils.checkpoint import checkpoint

from captum_deconvnet import DeconvNet, FeatureMapDeconvNet, NeuronDeconvNet
from lightning_zfnet import zfnet
from lightning_zfnet.model import contrast_norm

from .helpers import snapshot
from .reference_deconvnet import (
    one_hot_seed,
    position_seed,
    reference_projection,
    strongest_seed,
)

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def zfnet_like() -> nn.Sequential:
    """A small ZFNet: strided convs whose strides drop border pixels, overlapping 3x3/2
    pools (switches shared between windows), contrast normalisation, linear layers."""
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(3, 8, 7, stride=2, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, padding=1),
            contrast_norm(),
            nn.Conv2d(8, 12, 5, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1),
            contrast_norm(),
            nn.Conv2d(12, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Flatten(),
            nn.Linear(16 * 2 * 2, 20),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(20, 5),
        )
        .double()
        .eval()
    )


def paper_zfnet() -> nn.Module:
    torch.manual_seed(0)
    model = zfnet(num_classes=7, width=0.125, init="paper").double().eval()
    nn.init.normal_(model.classifier[-1].weight, std=0.1)
    return model


@pytest.fixture
def images():
    return torch.randn(3, 3, 100, 100, dtype=torch.float64)


def test_equals_hand_written_reverse_network(images):
    model = zfnet_like()
    expected = reference_projection(model, images, len(model) - 1, one_hot_seed(2))
    torch.testing.assert_close(
        DeconvNet(model).attribute(images, target=2), expected, **TIGHT
    )


def test_equals_hand_written_reverse_network_on_zfnet():
    model = paper_zfnet()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    expected = reference_projection(model, x, 22, one_hot_seed(4))
    torch.testing.assert_close(
        DeconvNet(model).attribute(x, target=4), expected, **TIGHT
    )


def test_feature_map_projection_equals_reference_on_zfnet():
    model = paper_zfnet()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    conv5 = 12  # features[12] is conv5; its strongest activation of channel 3
    expected = reference_projection(model, x, conv5, strongest_seed(3))
    result = FeatureMapDeconvNet(model, model.features[conv5]).attribute(x, 3)
    torch.testing.assert_close(result, expected, **TIGHT)


def test_positions_keep_exactly_the_chosen_activation(images):
    model = zfnet_like()
    channels, positions = [2, 0, 7], [(0, 0), (5, 2), (3, 5)]
    expected = reference_projection(
        model, images, 4, position_seed(channels, positions)
    )
    result = FeatureMapDeconvNet(model, model[4]).attribute(
        images, channels, positions=torch.tensor(positions)
    )
    torch.testing.assert_close(result, expected, **TIGHT)
    with pytest.raises(ValueError, match="out of range"):
        FeatureMapDeconvNet(model, model[4]).attribute(
            images, channels, positions=[(0, 0), (0, 0), (0, 11)]
        )
    with pytest.raises(ValueError, match="keep='strongest'"):
        FeatureMapDeconvNet(model, model[4]).attribute(
            images, channels, keep="map", positions=positions
        )
    with pytest.raises(ValueError, match=r"got shape \(2,\); .* is \[\(row, col\)\]"):
        FeatureMapDeconvNet(model, model[4]).attribute(
            images, channels, positions=(5, 2)
        )
    for floats in ([(0, 0), (5.5, 2), (3, 5)], torch.tensor(positions) / 1):
        with pytest.raises(TypeError, match="positions must be ints"):
            FeatureMapDeconvNet(model, model[4]).attribute(
                images, channels, positions=floats
            )


def test_feature_maps_of_a_batch_equal_one_at_a_time(images):
    model = zfnet_like()
    layer = model[8]
    channels = [0, 5, 9]
    for keep in ("strongest", "map"):
        batched = FeatureMapDeconvNet(model, layer).attribute(
            images, channels, keep=keep
        )
        for i, c in enumerate(channels):
            alone = FeatureMapDeconvNet(model, layer).attribute(
                images[i : i + 1], c, keep=keep
            )
            torch.testing.assert_close(batched[i : i + 1], alone, **TIGHT)


def test_whole_map_equals_reference(images):
    model = zfnet_like()

    def whole_map(output):
        seed = torch.zeros_like(output)
        seed[:, 6] = output[:, 6]
        return seed

    expected = reference_projection(model, images, 8, whole_map)
    result = FeatureMapDeconvNet(model, model[8]).attribute(images, 6, keep="map")
    torch.testing.assert_close(result, expected, **TIGHT)


def test_gradient_normalization_equals_captum_deconvolution(images):
    model = zfnet_like()
    ours = DeconvNet(model, normalization="gradient").attribute(images, target=1)
    theirs = Deconvolution(model).attribute(images, target=1)
    torch.testing.assert_close(ours, theirs, **TIGHT)
    # The paper's "skip" differs from it exactly at the contrast normalisation.
    assert not torch.allclose(DeconvNet(model).attribute(images, target=1), theirs)


@pytest.mark.parametrize(
    "selector", [(3, 1, 1), (slice(0, 4), 1, slice(None)), (-1, 1, -2)]
)
def test_neuron_equals_captum_neuron_deconvolution(images, selector):
    model = zfnet_like()
    ours = NeuronDeconvNet(model, model[4], normalization="gradient").attribute(
        images, selector
    )
    theirs = NeuronDeconvolution(model, model[4]).attribute(images, selector)
    torch.testing.assert_close(ours, theirs, **TIGHT)


def test_neuron_selector_callable_and_layer_input(images):
    model = zfnet_like()
    ours = NeuronDeconvNet(model, model[12], "gradient").attribute(
        images, lambda a: a[:, 3] + a[:, 7], attribute_to_neuron_input=True
    )
    theirs = NeuronDeconvolution(model, model[12]).attribute(
        images, lambda a: a[:, 3] + a[:, 7], attribute_to_neuron_input=True
    )
    torch.testing.assert_close(ours, theirs, **TIGHT)


@pytest.mark.parametrize("activation", [nn.ReLU6(inplace=True), nn.ReLU(inplace=True)])
def test_the_input_of_an_in_place_layer_is_taken_before_it_runs(activation):
    """``attribute_to_neuron_input`` on a layer that overwrites its input: the
    neuron is the input's, as Captum's and the previous layer's output give it."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), activation, nn.Flatten(), nn.Linear(256, 2)
    ).eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    model.double()
    selector = lambda a: -a[:, 1, 2:5, 3].sum(1)  # noqa: E731 - negative values too
    ours = NeuronDeconvNet(model, model[1], "gradient").attribute(
        x, selector, attribute_to_neuron_input=True
    )
    theirs = NeuronDeconvolution(model, model[1]).attribute(
        x, selector, attribute_to_neuron_input=True
    )
    as_output = NeuronDeconvNet(model, model[0], "gradient").attribute(x, selector)
    torch.testing.assert_close(ours, as_output, **TIGHT)
    torch.testing.assert_close(ours, theirs, **TIGHT)
    assert ours.abs().max() > 0


class SharedPool(nn.Module):
    """A max pool's output fed both to a ReLU module and to a convolution."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.r1, self.ra, self.fc = nn.ReLU(), nn.ReLU(), nn.Linear(6 * 64, 5)

    def forward(self, x):
        h = F.max_pool2d(self.r1(self.c1(x)), 2)
        return self.fc((self.c2(h) + self.ra(h)).flatten(1))


def test_a_rectified_tensor_used_twice_equals_the_hand_written_reverse_network():
    model = SharedPool().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        before_pool = model.c1(x)
        _, switches = F.max_pool2d(F.relu(before_pool), 2, return_indices=True)
        g = model.fc.weight[2].reshape(1, 6, 8, 8).expand(2, -1, -1, -1)
        g = F.conv_transpose2d(g, model.c2.weight, padding=1) + F.relu(g)
        g = F.max_unpool2d(g, switches, 2, output_size=before_pool.shape[2:])
        expected = F.conv_transpose2d(F.relu(g), model.c1.weight, padding=1)
    ours = DeconvNet(model, normalization="gradient").attribute(x, target=2)
    torch.testing.assert_close(ours, expected, **TIGHT)
    # Captum's hooks give another result here (the README says so).
    assert not torch.allclose(Deconvolution(model).attribute(x, target=2), expected)


class ReLUStyles(nn.Module):
    """The same network with its ReLUs written in each way a forward can call them."""

    def __init__(self, style: str):
        super().__init__()
        torch.manual_seed(1)
        self.style = style
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 4)
        self.relu = nn.ReLU(inplace=True)  # one module, used twice

    def rectify(self, x):
        return {
            "module": lambda t: self.relu(t),
            "F.relu": F.relu,
            "F.relu_inplace": lambda t: F.relu(t, inplace=True),
            "F.relu_": F.relu_,
            "torch.relu": torch.relu,
            "torch.relu_": torch.relu_,
            "Tensor.relu": lambda t: t.relu(),
            "Tensor.relu_": lambda t: t.relu_(),
            "torch.relu(input=)": lambda t: torch.relu(input=t),
            "torch.relu_(input=)": lambda t: torch.relu_(input=t),
            "nn.Threshold(0, 0)": nn.Threshold(0, 0),
            "F.threshold(inplace=True)": lambda t: F.threshold(t, 0.0, 0, True),
            "aten.relu": torch.ops.aten.relu.default,
            "nn.Hardtanh(0, inf)": nn.Hardtanh(0.0, math.inf),
            "F.hardtanh(inplace=True)": lambda t: F.hardtanh(t, 0, math.inf, True),
            "F.hardtanh_": lambda t: F.hardtanh_(t, min_val=0.0, max_val=math.inf),
            "nn.LeakyReLU(0)": nn.LeakyReLU(0.0),
            "F.leaky_relu(inplace=True)": lambda t: F.leaky_relu(t, 0, inplace=True),
            "F.leaky_relu_": lambda t: F.leaky_relu_(t, -0.0),
            "aten.hardtanh": lambda t: torch.ops.aten.hardtanh(t, 0, math.inf),
            "Tensor.clamp(min=0)": lambda t: t.clamp(min=0),
            "Tensor.clamp_(0, None)": lambda t: t.clamp_(0, None),
            "torch.clamp_min_": lambda t: torch.clamp_min_(t, 0),
            "clamp(min=tensor(0.))": lambda t: t.clamp(min=torch.tensor(0.0)),
            "torch.maximum(t, zeros)": lambda t: torch.maximum(t, torch.zeros(1)),
            "torch.max(zeros, t)": lambda t: torch.max(torch.zeros_like(t), t),
        }[self.style](x)

    def forward(self, x):
        x = F.max_pool2d(self.rectify(self.conv1(x)), 2)
        x = F.max_pool2d(self.rectify(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


STYLES = ["F.relu", "F.relu_inplace", "F.relu_", "torch.relu", "torch.relu_"]
STYLES += ["Tensor.relu", "Tensor.relu_", "torch.relu(input=)", "torch.relu_(input=)"]
STYLES += ["nn.Threshold(0, 0)", "F.threshold(inplace=True)", "aten.relu"]
# Hardtanh from 0 to infinity and LeakyReLU of slope 0 are exact ReLUs.
STYLES += ["nn.Hardtanh(0, inf)", "F.hardtanh(inplace=True)", "F.hardtanh_"]
STYLES += ["nn.LeakyReLU(0)", "F.leaky_relu(inplace=True)", "F.leaky_relu_"]
STYLES += ["aten.hardtanh"]
# A clamp at 0 may be a ReLU or guard a value such as a variance: it keeps its
# gradient and is named.
CLAMPS = ["Tensor.clamp(min=0)", "Tensor.clamp_(0, None)", "torch.clamp_min_"]
CLAMPS += ["clamp(min=tensor(0.))", "torch.maximum(t, zeros)", "torch.max(zeros, t)"]


@pytest.mark.parametrize("style", STYLES)
def test_every_way_of_calling_relu_is_rectified(style):
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    reference = Deconvolution(ReLUStyles("module").double()).attribute(x, target=1)
    model = ReLUStyles(style).double().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no activation is left without its rule
        ours = DeconvNet(model).attribute(x, target=1)
    torch.testing.assert_close(ours, reference, **TIGHT)
    # Captum's Deconvolution sees no nn.ReLU here and silently returns the gradient.
    plain = Saliency(model).attribute(x, target=1, abs=False)
    torch.testing.assert_close(Deconvolution(model).attribute(x, target=1), plain)
    assert not torch.allclose(reference, plain)


@pytest.mark.parametrize("style", CLAMPS)
def test_a_clamp_at_zero_keeps_its_gradient_and_is_named(style):
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    model = ReLUStyles(style).double().eval()
    with pytest.warns(UserWarning, match="at 0.*write an activation as F.relu"):
        ours = DeconvNet(model).attribute(x, target=1)
    gradient = Saliency(model).attribute(x, target=1, abs=False)
    torch.testing.assert_close(ours, gradient, **TIGHT)


def test_resnet_with_batchnorm_and_reused_inplace_relus_matches_captum():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ours = DeconvNet(model).attribute(x, target=[0, 3])
    torch.testing.assert_close(ours, Deconvolution(model).attribute(x, target=[0, 3]))


def test_googlenet_without_relu_modules_is_rectified():
    torch.manual_seed(0)
    model = torchvision.models.googlenet(
        num_classes=5, aux_logits=False, init_weights=True
    ).eval()
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    x = torch.randn(1, 3, 64, 64)
    ours = DeconvNet(model).attribute(x, target=2)
    gradient = Saliency(model).attribute(x, target=2, abs=False)
    torch.testing.assert_close(Deconvolution(model).attribute(x, target=2), gradient)
    assert (ours - gradient).abs().max() > 0.1 * ours.abs().max()


class Checkpointed(ReLUStyles):
    """ReLUStyles("module") with its first block recomputed in the backward pass."""

    def __init__(self, use_reentrant):
        super().__init__("module")
        self.use_reentrant = use_reentrant

    def forward(self, x):
        block = lambda t: F.max_pool2d(self.relu(self.conv1(t)), 2)  # noqa: E731
        x = checkpoint(block, x, use_reentrant=self.use_reentrant)
        x = F.max_pool2d(self.rectify(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_checkpointed_blocks_are_refused_by_name(use_reentrant):
    """Their forward reruns in the backward pass, where the rules do not reach."""
    model, x = Checkpointed(use_reentrant).eval(), torch.randn(2, 3, 16, 16)
    state = snapshot(model)
    with pytest.raises(ValueError, match="checkpoint"):
        DeconvNet(model).attribute(x, target=1)
    assert snapshot(model) == state


class Apply(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


@pytest.mark.parametrize(
    "activation, name",
    [
        (nn.GELU(), "gelu"), (nn.LeakyReLU(), "leaky_relu"), (nn.ReLU6(), "hardtanh"),
        (nn.Sigmoid(), "sigmoid"), (nn.Tanh(), "tanh"),
        (nn.Hardsigmoid(), "hardsigmoid"),
        (nn.Threshold(0.1, 0.0), "threshold"), (nn.Softshrink(), "softshrink"),
        (Apply(lambda t: t.clamp(0, 6)), "clamp at 0"),
        (Apply(lambda t: torch.clip(t, 0, 1)), "clip at 0"),
        (nn.Threshold(0.0, -1.0), "threshold"),
        # Hardtanh and LeakyReLU are ReLUs only from 0 to infinity, of slope 0
        (nn.Hardtanh(0.0, 1e30), "hardtanh"),
        (nn.Hardtanh(-1e-9, math.inf), "hardtanh"),
        (Apply(lambda t: F.hardtanh_(t, 0.0, 6.0)), "hardtanh"),
        (nn.LeakyReLU(1e-9), "leaky_relu"),
        (Apply(lambda t: F.leaky_relu_(t, 0.5)), "leaky_relu"),
    ],
)  # fmt: skip
def test_activations_without_a_rule_are_named_in_a_warning(activation, name):
    model = nn.Sequential(nn.Linear(4, 4), activation, nn.Linear(4, 2)).eval()
    x = torch.randn(3, 4)
    with pytest.warns(UserWarning, match=f"applies {name},") as caught:
        ours = DeconvNet(model).attribute(x, target=0)
    assert {w.filename for w in caught} == {__file__}  # the caller's line
    gradient = Saliency(model).attribute(x, target=0, abs=False)
    torch.testing.assert_close(ours, gradient)  # the ordinary gradient


def test_tuple_inputs_and_additional_forward_args():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(5, 4)

        def forward(self, x, y, scale):
            return torch.relu(self.a(x) + self.b(y)) * scale

    model = TwoInputs().double().eval()
    x, y = (
        torch.randn(2, 3, dtype=torch.float64),
        torch.randn(2, 5, dtype=torch.float64),
    )
    ours = DeconvNet(model).attribute((x, y), target=1, additional_forward_args=2.0)
    assert (
        isinstance(ours, tuple)
        and ours[0].shape == x.shape
        and ours[1].shape == y.shape
    )
    # By hand: the seed 2 at output 1, rectified, times each input's weights.
    torch.testing.assert_close(ours[0], (2.0 * model.a.weight[1]).expand(2, 3))
    torch.testing.assert_close(ours[1], (2.0 * model.b.weight[1]).expand(2, 5))
