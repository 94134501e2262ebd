"""The contract grid's reference calls against independent ones (Captum's classes,
naive loops, a hand computation), on the plain network and on hooked ones; and the
kinds the grid does not cover: watched layers that return a tuple or do not run,
per-example arguments in ``NoiseTunnel``, batch norm without running statistics,
hooks on a wrapper, inference tensors, ranks of non-image models."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from captum.attr import Deconvolution, NeuronDeconvolution, NoiseTunnel, Occlusion
from torch import nn

from captum_deconvnet import (
    DeconvNet,
    FeatureMapDeconvNet,
    NeuronDeconvNet,
    OcclusionSensitivity,
    ReceptiveField,
    correspondence,
    feature_atlas,
    invariance_curves,
    receptive_field,
    top_activations,
)

from .test_contract import IMAGES, KINDS, assert_unchanged, net, state
from .test_occlusion import naive_maps
from .test_topk import as_lists, naive_top

HOOKED = ["plain"] + [kind for kind in KINDS if "hook" in kind]


def conv2_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.conv2.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("kind", HOOKED)
def test_deconvnets_equal_captums_deconvolution(kind):
    model, x = KINDS[kind]().model, IMAGES
    torch.testing.assert_close(
        DeconvNet(model).attribute(x, target=[1, 3]),
        Deconvolution(model).attribute(x, target=[1, 3]),
    )
    neuron = NeuronDeconvolution(model, model.conv2)
    torch.testing.assert_close(
        NeuronDeconvNet(model, model.conv2).attribute(x, (1, 2, 2)),
        neuron.attribute(x, (1, 2, 2)),
    )
    # A feature map's strongest activation, projected with its value.
    maps = FeatureMapDeconvNet(model, model.conv2).attribute(x, [0, 5])
    activation = conv2_output(model, x)
    for i, channel in enumerate([0, 5]):
        row, col = divmod(int(activation[i, channel].argmax()), activation.shape[3])
        one = neuron.attribute(x[i : i + 1], (channel, row, col))
        torch.testing.assert_close(
            maps[i : i + 1], activation[i, channel, row, col] * one
        )


@pytest.mark.parametrize("incremental", [True, False])
@pytest.mark.parametrize("kind", HOOKED)
def test_occlusion_equals_captum_and_a_naive_loop(kind, incremental):
    model, x = KINDS[kind]().model, IMAGES
    occlusion = OcclusionSensitivity(model, incremental=incremental)
    torch.testing.assert_close(
        occlusion.attribute(x, (3, 4, 4), 2, target=1),
        Occlusion(model).attribute(x, (3, 4, 4), 2, target=1),
    )
    maps = occlusion.sensitivity_maps(x, 4, 2, layer=model.conv2)
    fill = x.mean((2, 3), keepdim=True)
    expected = naive_maps(model, model.conv2, x, 4, 2, fill, maps.target, maps.channel)
    for ours, theirs in zip(
        (maps.probability, maps.top_class, maps.activation), expected, strict=True
    ):
        torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", HOOKED)
def test_top_activations_and_field_equal_a_naive_sort_and_a_hand_count(kind):
    model, x = KINDS[kind]().model, IMAGES
    top = top_activations(model, [model.conv2], x, k=4)
    batches = [(conv2_output(model, x).double(), torch.arange(len(x)))]
    assert as_lists(top, "conv2") == naive_top(batches, 4)
    # conv 3x3 pad 1, pool 2, conv 3x3 pad 1
    field = ReceptiveField(size=(8, 8), jump=(2, 2), start=(-3, -3))
    assert receptive_field(model, model.conv2, (3, 8, 8)) == field


@pytest.mark.parametrize("batch_size", [None, 2])  # 3 copies: in one batch, 2 + 1
def test_per_example_arguments_follow_noise_tunnels_copies(batch_size):
    model, x = net(), torch.randn(3, 3, 8, 8)
    per_example = {"channels": [0, 5, 2], "positions": [[0, 1], [3, 3], [2, 0]]}
    calls = [
        (FeatureMapDeconvNet(model, model.conv2), per_example),
        (
            FeatureMapDeconvNet(model, model.conv2),
            {"channels": [4, 1, 3], "keep": "map"},
        ),
        (NeuronDeconvNet(model, model.conv2), {"neuron_selector": (1, 2, 2)}),
        (DeconvNet(model), {"target": [1, 0, 4]}),
        (
            OcclusionSensitivity(model),
            {
                "sliding_window_shapes": (3, 4, 4),
                "strides": 4,
                "target": torch.tensor([1, 0, 4]),
                "baselines": torch.rand(3, 3, 8, 8),
            },
        ),
    ]
    for explainer, kwargs in calls:
        smooth = NoiseTunnel(explainer).attribute(
            x, nt_samples=3, nt_samples_batch_size=batch_size, stdevs=0.0, **kwargs
        )
        torch.testing.assert_close(smooth, explainer.attribute(x, **kwargs))


def test_per_example_arguments_that_do_not_fit_the_batch_are_named():
    model = net()
    explainer = FeatureMapDeconvNet(model, model.conv2)
    with pytest.raises(ValueError, match="channels needs 1 or 4 entries"):
        explainer.attribute(torch.randn(4, 3, 8, 8), [0, 1, 2])
    with pytest.raises(ValueError, match="positions needs 1 or 4 entries"):
        explainer.attribute(torch.randn(4, 3, 8, 8), 0, positions=[[0, 0]] * 3)


class AuxiliaryNet(nn.Module):
    """A max-pool that returns its switches too, and a head run in training only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.aux = nn.Conv2d(4, 2, 1)
        self.fc = nn.Linear(64, 5)

    def forward(self, x):
        y = self.pool(self.conv(x).relu())[0]
        out = self.fc(y.flatten(1))
        if self.training:
            out = out + self.aux(y).mean((1, 2, 3))[:, None]
        return out


LAYER_CALLS = {
    "NeuronDeconvNet": lambda m, layer: NeuronDeconvNet(m, layer).attribute(
        IMAGES, (0, 1, 1)
    ),
    "FeatureMapDeconvNet": lambda m, layer: FeatureMapDeconvNet(m, layer).attribute(
        IMAGES, 0
    ),
    "sensitivity_maps": lambda m, layer: OcclusionSensitivity(m).sensitivity_maps(
        IMAGES, 4, 2, layer=layer
    ),
    "sensitivity_maps, incremental=False": lambda m, layer: OcclusionSensitivity(
        m, incremental=False
    ).sensitivity_maps(IMAGES, 4, 2, layer=layer),
    "top_activations": lambda m, layer: top_activations(m, [layer], IMAGES),
    "feature_atlas": lambda m, layer: feature_atlas(m, [layer], IMAGES, k=1),
    "invariance_curves": lambda m, layer: invariance_curves(
        m, IMAGES, torch.tensor([0, 1]), [layer], [0], [1.0], [0]
    ),
    "correspondence": lambda m, layer: correspondence(
        m, IMAGES, {"all": torch.ones(2, 8, 8, dtype=torch.bool)}, [layer]
    ),
    "receptive_field": lambda m, layer: receptive_field(m, layer, (3, 8, 8)),
}


@pytest.mark.parametrize(
    "layer, error, message",
    [
        ("pool", TypeError, "output of layer .* must be one tensor, got a tuple"),
        ("aux", ValueError, "did not run|does not run"),
    ],
)
@pytest.mark.parametrize("entry", LAYER_CALLS)
def test_layers_that_return_a_tuple_or_do_not_run_are_named(
    entry, layer, error, message
):
    model = AuxiliaryNet().eval()
    before = state(model)
    if entry == "receptive_field" and layer == "pool":
        # Its values and switches share positions: the field is the pool's.
        field = LAYER_CALLS[entry](model, model.pool)
        assert field == ReceptiveField(size=(4, 4), jump=(2, 2), start=(-1, -1))
    else:
        with pytest.raises(error, match=message):
            LAYER_CALLS[entry](model, getattr(model, layer))
    assert_unchanged(before, state(model))


@pytest.mark.parametrize(
    "call",
    [
        lambda m: DeconvNet(m).attribute(IMAGES, target=0),
        lambda m: OcclusionSensitivity(m).attribute(IMAGES, (3, 4, 4), 4, target=0),
        lambda m: top_activations(m, [m.conv2], IMAGES),
    ],
)
def test_batch_norm_without_running_statistics_is_refused(call):
    model = net()
    model.bn = nn.BatchNorm2d(6, track_running_stats=False).eval()
    before = state(model)
    with pytest.raises(ValueError, match="bn .*running statistics"):
        call(model)
    assert_unchanged(before, state(model))


def test_hooks_on_a_wrapper_are_refused_not_skipped():
    model = nn.DataParallel(net())
    model.register_forward_hook(lambda m, a, out: out * 2)
    with pytest.raises(ValueError, match="DataParallel wrapper has hooks"):
        DeconvNet(model).attribute(IMAGES, target=0)


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = net()

    def forward(self, x, vector, scale):
        return self.net(x) * scale + vector.sum(1, keepdim=True)


def test_inference_tensors_in_inputs_and_extra_arguments():
    model, vector = Scaled().eval(), torch.randn(2, 4)
    kwargs = {"target": 1, "additional_forward_args": torch.tensor(2.0)}
    plain = DeconvNet(model).attribute((IMAGES, vector), **kwargs)
    with torch.inference_mode():
        inputs = (IMAGES.clone(), vector.clone())
        scale = torch.tensor(2.0)
        ours = DeconvNet(model).attribute(
            inputs, target=1, additional_forward_args=scale
        )
    for a, b in zip(ours, plain, strict=True):
        torch.testing.assert_close(a, b)


def test_ranks_the_model_does_not_take_are_named():
    mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    with pytest.raises(ValueError, match=r"shape \(2,\) for a batch of 4"):
        DeconvNet(mlp).attribute(torch.randn(4), target=0)  # one unbatched vector
    with pytest.raises(
        ValueError, match=r"conv2d got an input of shape .*\(N, C, H, W\)"
    ):
        DeconvNet(net()).attribute(IMAGES[None], target=0)  # an extra dimension
    with pytest.raises(ValueError, match=r"one image's \(C, H, W\)"):
        receptive_field(net(), net().conv2, (1, 3, 8, 8))


def test_distributed_data_parallel_runs_the_module_it_holds(tmp_path):
    if dist.is_initialized():
        pytest.skip("a process group is already running in this process")
    store = f"file://{tmp_path / 'store'}"
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(net())
        before = state(model)
        torch.testing.assert_close(
            DeconvNet(model).attribute(IMAGES, target=1),
            DeconvNet(net()).attribute(IMAGES, target=1),
        )
        top = top_activations(model, [model.module.conv2], IMAGES)
        assert top.layers == ["conv2"]  # named inside the wrapped module
        assert_unchanged(before, state(model))
    finally:
        dist.destroy_process_group()
