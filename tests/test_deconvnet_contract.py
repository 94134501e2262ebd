"""DeconvNet as a Captum class: model left alone, bad input named, Captum tools work."""

import contextlib
import warnings

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Deconvolution, NoiseTunnel, Saliency, visualization
from captum.metrics import infidelity, sensitivity_max
from PIL import Image
from torch import nn

from captum_deconvnet import (
    DeconvNet,
    FeatureMapDeconvNet,
    NeuronDeconvNet,
    normalize_projection,
    save_grid,
)
from tests.helpers import snapshot

matplotlib.use("Agg")


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.LocalResponseNorm(3),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    ).eval()


EXPLAINERS = {
    "deconvnet": lambda m: (DeconvNet(m), {"target": 1}),
    "neuron": lambda m: (NeuronDeconvNet(m, m[4]), {"neuron_selector": (1, 2, 2)}),
    "feature_map": lambda m: (FeatureMapDeconvNet(m, m[4]), {"channels": 2}),
}


@pytest.mark.parametrize("kind", EXPLAINERS)
@pytest.mark.parametrize("training", [False, True])
def test_model_is_left_exactly_as_it_was(kind, training):
    model = small_cnn().train(training)
    model[0].weight.requires_grad_(False)
    before = snapshot(model)
    explainer, kwargs = EXPLAINERS[kind](model)
    warns = pytest.warns(UserWarning, match="training mode")
    with warns if training else contextlib.nullcontext():
        explainer.attribute(torch.randn(2, 3, 8, 8), **kwargs)
    assert snapshot(model) == before


def test_model_is_left_as_it_was_when_the_forward_raises():
    class Failing(nn.Sequential):
        def forward(self, x):
            self[0](x)
            raise RuntimeError(
                "boom"
            )  # before the layer that FeatureMapDeconvNet hooks

    model = Failing(*small_cnn()).eval()
    before = snapshot(model)
    for explainer, kwargs in (
        (DeconvNet(model), {"target": 0}),
        (FeatureMapDeconvNet(model, model[4]), {"channels": 0}),
    ):
        with pytest.raises(RuntimeError, match="boom"):
            explainer.attribute(torch.randn(2, 3, 8, 8), **kwargs)
        assert snapshot(model) == before


@pytest.mark.parametrize("kind", EXPLAINERS)
def test_model_is_left_as_it_was_after_an_invalid_target(kind):
    model = small_cnn()
    before = snapshot(model)
    explainer, kwargs = EXPLAINERS[kind](model)
    bad = {"target": 9, "neuron_selector": (9, 0, 0), "channels": 9}
    key = next(iter(kwargs))
    with pytest.raises(ValueError, match="9"):
        explainer.attribute(torch.randn(2, 3, 8, 8), **{key: bad[key]})
    assert snapshot(model) == before


def test_bad_input_is_named():
    model = small_cnn()
    with pytest.raises(TypeError, match="uint8"):
        DeconvNet(model).attribute(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), target=0)
    with pytest.raises(ValueError, match="batch dimension"):
        DeconvNet(model).attribute(torch.tensor(1.0), target=0)
    with pytest.raises(ValueError, match="batch dimension"):  # input= by name
        DeconvNet(_ByName(model[0])).attribute(torch.randn(3, 8, 8), target=0)
    with pytest.raises(ValueError, match="not a submodule"):
        NeuronDeconvNet(model, nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="not a submodule"):
        FeatureMapDeconvNet(model, nn.ReLU())
    with pytest.raises(ValueError, match="normalization"):
        DeconvNet(model, normalization="invert")
    with pytest.raises(ValueError, match="keep"):
        FeatureMapDeconvNet(model, model[4]).attribute(
            torch.randn(1, 3, 8, 8), 0, keep="all"
        )
    with pytest.raises(ValueError, match="2 entries"):
        FeatureMapDeconvNet(model, model[4]).attribute(
            torch.randn(2, 3, 8, 8), [0, 1, 2]
        )
    with pytest.raises(ValueError, match="neuron_selector 3"):
        NeuronDeconvNet(model, model[4]).attribute(torch.randn(2, 3, 8, 8), 3)
    with pytest.raises(ValueError, match="out of range"):
        selector = (np.int64(9), 0, 0)
        NeuronDeconvNet(model, model[4]).attribute(torch.randn(2, 3, 8, 8), selector)
    with pytest.raises(TypeError, match="list"):
        NeuronDeconvNet(model, model[4]).attribute(
            torch.randn(2, 3, 8, 8), lambda a: [a[0, 0, 0, 0]]
        )
    with pytest.raises(TypeError, match="channels"):
        FeatureMapDeconvNet(model, model[4]).attribute(torch.randn(1, 3, 8, 8), 1.7)
    with pytest.raises(ValueError, match="2-D feature maps"):
        FeatureMapDeconvNet(model, model[-1]).attribute(
            torch.randn(1, 3, 8, 8), 0, positions=[(0, 0)]
        )
    with pytest.raises(ValueError, match="did not run"):
        unused = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        NeuronDeconvNet(nn.Sequential(unused[0], nn.Identity()), unused[0])  # runs
        NeuronDeconvNet(_skips_second(unused), unused[1]).attribute(
            torch.randn(1, 2), 0
        )


class _FrozenBackbone(nn.Module):
    """A linear probe: the backbone runs without gradients inside forward."""

    def __init__(self):
        super().__init__()
        self.backbone, self.head = small_cnn()[:-1], nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        with torch.no_grad():
            features = self.backbone(x)
        return self.head(features)


def test_inputs_cut_off_by_no_grad_are_refused_not_projected_as_zeros():
    model, x = _FrozenBackbone().eval(), torch.randn(2, 3, 8, 8)
    before = snapshot(model)
    for explainer, kwargs in (
        (DeconvNet(model), {"target": 0}),
        (NeuronDeconvNet(model, model.head), {"neuron_selector": 1}),
        (FeatureMapDeconvNet(model, model.head), {"channels": 1}),
    ):
        with pytest.raises(ValueError, match=r"torch.no_grad\(\) block"):
            explainer.attribute(x, **kwargs)
        assert snapshot(model) == before
    # an input the model does not use, next to one it does, projects to zeros
    probe = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
    used, unused = DeconvNet(_TwoInputs(probe).eval()).attribute(
        (x, x[:, :1]), target=1
    )
    torch.testing.assert_close(used, probe[1].weight[1].view(1, 3, 8, 8).expand_as(x))
    assert not unused.any()


class _TwoInputs(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        return self.model(x)


@pytest.mark.parametrize("compile_with", ["script", "trace"])
def test_a_torchscript_model_gets_its_plain_gradient_and_is_left_as_it_was(
    compile_with,
):
    """The rules do not see TorchScript's operations: the gradient, as from Captum."""
    torch.manual_seed(0)
    plain = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(144, 3),
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
        # by name: torch.compile, run by other tests, replaces torch.jit.trace
        if compile_with == "trace":
            model = torch.jit.trace(plain, x)
        else:
            model = torch.jit.script(plain)
    before = snapshot(model)
    ours = DeconvNet(model).attribute(x, target=[0, 2])
    gradient = Saliency(plain).attribute(x, target=[0, 2], abs=False)
    torch.testing.assert_close(ours, gradient)
    assert snapshot(model) == before


def test_cross_map_lrn_is_refused_by_skip_and_backpropagated_by_gradient():
    """nn.CrossMapLRN2d is an autograd function, out of the rules' sight."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3),
        nn.ReLU(),
        nn.CrossMapLRN2d(5, 5e-4, 0.75, 2.0),
        nn.Flatten(),
        nn.Linear(6 * 36, 3),
    ).double()
    model.eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"2 \(CrossMapLRN2d\).*'gradient'"):
        DeconvNet(model)
    with pytest.raises(ValueError, match="CrossMapLRN2d"):
        FeatureMapDeconvNet(model, model[0])
    ours = DeconvNet(model, normalization="gradient").attribute(x, target=1)
    torch.testing.assert_close(ours, Deconvolution(model).attribute(x, target=1))


class _ByName(nn.Module):
    """A convolution called with its input by keyword."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x):
        out = F.conv2d(input=x, weight=self.conv.weight, padding=1)
        return out.flatten(-3).sum(-1, keepdim=True)


def _skips_second(seq: nn.Sequential) -> nn.Module:
    class SkipSecond(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = seq

        def forward(self, x):
            return self.seq[0](x)

    return SkipSecond().eval()


def test_captum_tools_accept_it():
    model = small_cnn().eval()
    x = torch.randn(2, 3, 8, 8)
    deconv = DeconvNet(model)
    smooth = NoiseTunnel(deconv).attribute(
        x, nt_type="smoothgrad", nt_samples=3, target=1
    )
    assert smooth.shape == x.shape and torch.isfinite(smooth).all()

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.01
        return noise, inputs - noise

    attribution = deconv.attribute(x, target=1)
    score = infidelity(model, perturb, x, attribution, target=1, normalize=True)
    assert score.shape == (2,) and torch.isfinite(score).all()
    # sensitivity_max calls the explanation under no_grad and with tuples.
    sensitivity = sensitivity_max(deconv.attribute, x, target=1, n_perturb_samples=3)
    assert sensitivity.shape == (2,) and torch.isfinite(sensitivity).all()
    figure, _ = visualization.visualize_image_attr(
        attribution[0].permute(1, 2, 0).numpy(), method="heat_map", use_pyplot=False
    )
    assert figure is not None


def test_captum_flags_and_name():
    deconv = DeconvNet(small_cnn())
    assert deconv.multiplies_by_inputs is False
    assert deconv.has_convergence_delta() is False
    assert deconv.get_name() == "DeconvNet"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_normalize_projection_centres_zero_by_hand(dtype):
    projection = torch.tensor([[[[2.0, -4.0], [0.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    expected = torch.tensor([[[[0.75, 0.0], [0.5, 0.625]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    result = normalize_projection(projection.to(dtype))  # all zeros: grey, not 0 / 0
    assert result.dtype == dtype
    torch.testing.assert_close(result, expected.to(dtype))


def test_save_grid_writes_a_png(tmp_path):
    images = torch.randn(5, 3, 10, 10)
    save_grid(images, tmp_path / "grid.png", nrow=3, padding=2)
    picture = np.asarray(Image.open(tmp_path / "grid.png"))
    assert picture.shape == (2 + 2 * 12, 2 + 3 * 12, 3)
    with pytest.raises(ValueError, match="images"):
        save_grid(torch.randn(2, 5, 4, 4), tmp_path / "bad.png")
