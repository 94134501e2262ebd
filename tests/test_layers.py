"""The analyses leave the model as it was, also when its forward pass raises."""

import dataclasses
from contextlib import nullcontext

import pytest
import torch
from torch import nn

from captum_deconvnet import (
    DeconvNet,
    OcclusionSensitivity,
    TopKActivations,
    correspondence,
    feature_atlas,
    invariance_curves,
    top_activations,
)
from captum_deconvnet.layers import layer_outputs
from captum_deconvnet.model_state import eval_mode
from lightning_zfnet import scan_top_activations

from .test_deconvnet_contract import snapshot


def test_outputs_are_copies_taken_before_in_place_changes():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten())
    model.eval()
    x = torch.randn(2, 1, 5, 5)
    (conv,), output = layer_outputs(model, [model[0]], x, stop_early=False)
    torch.testing.assert_close(conv, model[0](x))  # negative values kept
    assert conv.min() < 0 and output.shape == (2, 18)
    _, output = layer_outputs(model, [model[0]], x)
    assert output is None  # stopped once the conv had run


def test_a_layer_that_does_not_run_is_named():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="did not run"):
        other = nn.Sequential(nn.Linear(2, 2)).eval()
        layer_outputs(other, [model[0]], torch.randn(1, 2))


def test_eval_mode_restores_each_modules_own_mode():
    model = nn.Sequential(nn.Dropout(), nn.BatchNorm1d(2)).train()
    model[1].eval()
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        assert not model.training and not model[0].training
        raise RuntimeError("boom")
    assert model.training and model[0].training and not model[1].training


class Failing(nn.Module):
    """Raises after its first layer has run, before the second."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        self.conv(x)
        raise RuntimeError("boom")
        return self.bn(x)


ANALYSES = {
    "layer_outputs": lambda m, x: layer_outputs(m, [m.conv], x, stop_early=False),
    "top_activations": lambda m, x: top_activations(m, [m.conv, m.bn], x),
    "scan": lambda m, x: scan_top_activations(m, [m.conv, m.bn], x),
    "atlas": lambda m, x: feature_atlas(m, [m.bn], x),
    "invariance": lambda m, x: invariance_curves(m, x, torch.zeros(2).long(), [m.conv]),
    "correspondence": lambda m, x: correspondence(
        m, x, {"a": torch.ones(2, 6, 6, dtype=torch.bool)}, [m.conv, m.bn]
    ),
}


@pytest.mark.parametrize("analysis", ANALYSES)
def test_no_hook_is_left_when_the_forward_raises(analysis):
    model = Failing().train()
    before = snapshot(model)
    # Lightning's scan puts the model in eval mode itself: no warning there.
    warns = pytest.warns(UserWarning, match="training mode")
    with nullcontext() if analysis == "scan" else warns:
        with pytest.raises(RuntimeError, match="boom"):
            ANALYSES[analysis](model, torch.randn(2, 1, 6, 6))
    assert snapshot(model) == before


# The entry points that take a list of layers, given one.
LAYER_LISTS = {
    "layer_outputs": lambda m, layers, x: layer_outputs(m, layers, x),
    "top_activations": lambda m, layers, x: top_activations(m, layers, x),
    "scan": lambda m, layers, x: scan_top_activations(m, layers, x),
    "invariance": lambda m, layers, x: invariance_curves(
        m, x, torch.zeros(2).long(), layers
    ),
}


@pytest.mark.parametrize("entry", LAYER_LISTS)
def test_one_layer_given_alone_is_named(entry):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(32, 3)).eval()
    x = torch.randn(2, 1, 6, 6)
    with pytest.raises(ValueError, match=r"list of submodules, got Conv2d.*\[layer\]"):
        LAYER_LISTS[entry](model, model[0], x)
    with pytest.raises(TypeError, match=r"got '0' \(str\).*get_submodule\(name\)"):
        LAYER_LISTS[entry](model, ["0"], x)  # a name, not the layer


@pytest.mark.parametrize("entry", LAYER_LISTS)
def test_a_module_list_of_layers_is_a_list(entry):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    model.eval()
    x = torch.randn(2, 1, 6, 6)
    as_modules = LAYER_LISTS[entry](model, nn.ModuleList([model[0], model[1]]), x)
    as_list = LAYER_LISTS[entry](model, [model[0], model[1]], x)
    torch.testing.assert_close(_tensors(as_modules), _tensors(as_list))
    if entry == "layer_outputs":  # each layer's output, computed directly
        with torch.no_grad():
            (conv, relu), _ = as_modules
            torch.testing.assert_close(conv, model[0](x))
            torch.testing.assert_close(relu, model[0](x).relu())


def _tensors(result: object) -> object:
    """A result as nested lists and dicts of tensors."""
    if isinstance(result, TopKActivations):
        return {name: list(result.entries(name)) for name in result.layers}
    if dataclasses.is_dataclass(result):
        return {k: _tensors(v) for k, v in vars(result).items() if k != "transform"}
    if isinstance(result, dict):
        return {k: _tensors(v) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return [_tensors(v) for v in result]
    return result


def test_layers_that_are_no_list_are_named_with_what_to_pass():
    model = nn.Sequential(nn.Conv2d(1, 2, 3)).eval()
    x = torch.randn(2, 1, 6, 6)
    for layers in ({model[0]}, (m for m in model), {"conv": model[0]}.values()):
        with pytest.raises(ValueError, match=r"got \w+; pass the layers as a list"):
            layer_outputs(model, layers, x)
    for empty in ([], nn.ModuleList()):
        with pytest.raises(ValueError, match="got .*; name at least one layer"):
            layer_outputs(model, empty, x)


def test_inputs_that_are_not_a_tensor_are_named():
    model = nn.Sequential(nn.Conv2d(1, 2, 3)).eval()
    with pytest.raises(
        TypeError, match=r"inputs must be a tensor \(N, ...\), got list"
    ):
        layer_outputs(model, [model[0]], torch.randn(2, 1, 6, 6).tolist())


class Counting(nn.Module):
    """Writes its buffers in its forward: counts its calls in place and replaces
    its last input's mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_mean", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.last_mean = x.mean()
        return self.fc(self.conv(x).relu().mean((2, 3)))


@pytest.mark.parametrize("incremental", [True, False])
def test_buffers_a_forward_writes_are_put_back(incremental):
    model, x = Counting().eval(), torch.randn(2, 3, 8, 8)
    before = snapshot(model)
    kwargs = {"sliding_window_shapes": (3, 2, 2), "strides": 2, "target": 0}
    OcclusionSensitivity(model, incremental=incremental).attribute(x, **kwargs)
    assert snapshot(model) == before
    DeconvNet(model).attribute(x, target=1)
    with pytest.raises(ValueError, match="target"):
        OcclusionSensitivity(model).attribute(x, (3, 2, 2), target=7)
    assert snapshot(model) == before
    model(x)  # a plain call keeps what it writes
    assert model.calls == 1 and model.last_mean == x.mean()


class Unwritable(nn.Module):
    """Buffers that cannot be written in place: an expanded view; with ``resizes``
    the forward resizes a buffer and registers a non-persistent one."""

    def __init__(self, resizes: bool = False) -> None:
        super().__init__()
        self.resizes = resizes
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer(
            "position", torch.arange(4.0).view(4, 1, 1).expand(4, 8, 8)
        )
        self.register_buffer("scratch", torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resizes:
            self.scratch.resize_(len(x)).fill_(1.0)
            self.register_buffer("seen", x.detach(), persistent=False)
        return (self.conv(x) + self.position).mean((2, 3))


@pytest.mark.parametrize("kind", ["expanded", "inference", "resizes"])
def test_buffers_that_cannot_be_written_in_place_pass_or_are_put_back(kind):
    if kind == "inference":
        with torch.inference_mode():
            model = Unwritable().eval()
    else:
        model = Unwritable(resizes=kind == "resizes").eval()
    x = torch.randn(2, 3, 8, 8)
    before = snapshot(model)
    kwargs = {"sliding_window_shapes": (3, 4, 4), "strides": 4, "target": 0}
    OcclusionSensitivity(model).attribute(x, **kwargs)
    if kind != "inference":  # no gradients of inference tensors
        DeconvNet(model).attribute(x, target=1)
    assert snapshot(model) == before
    assert "seen" not in model._non_persistent_buffers_set
