"""Every entry point x the networks and calls users bring.

Each cell runs one public entry point on one kind of model or call and checks that
it equals the same call on a plain reference network that computes the same thing
(a hook's effect built into the network, the module a wrapper holds, the model in
eval mode, float32), or raises a TypeError/ValueError naming the problem; and that
the model is exactly as it was afterwards, also when the call raised. The plain
calls themselves are checked against Captum and hand computations in
``test_contract_references.py``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from captum_deconvnet import (
    DeconvNet,
    FeatureMapDeconvNet,
    NeuronDeconvNet,
    OcclusionSensitivity,
    correspondence,
    feature_atlas,
    invariance_curves,
    receptive_field,
    top_activations,
)

from .helpers import snapshot


class Net(nn.Module):
    """conv-ReLU-pool-conv-BN-ReLU-dropout-linear, with identity slots where a
    reference network puts what a kind's hook computes."""

    def __init__(self, stem=None, mid=None, before_conv2=None, head=None) -> None:
        super().__init__()
        self.stem = stem or nn.Identity()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.mid = mid or nn.Identity()
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.before_conv2 = before_conv2 or nn.Identity()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu2 = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6 * 4 * 4, 5)
        self.head = head or nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu1(self.mid(self.conv1(self.stem(x)))))
        x = self.drop(self.relu2(self.bn(self.conv2(self.before_conv2(x)))))
        return self.head(self.fc(x.flatten(1)))


class TupleOutput(Net):
    def forward(self, x):
        return super().forward(x), x


class DictOutput(Net):
    def forward(self, x):
        return {"logits": super().forward(x)}


class ListOutput(Net):
    def forward(self, x):
        return [super().forward(x)]


def net(cls: type[Net] = Net, **slots: nn.Module) -> Net:
    """The same weights and batch-norm statistics for every kind (the slots have no
    parameters); statistics far from a batch's, so train mode would show."""
    torch.manual_seed(0)
    model = cls(**slots)
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


IMAGES = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@dataclass
class Case:
    model: nn.Module
    reference: nn.Module
    images: Callable[[], Tensor] = lambda: IMAGES.clone()
    context: Callable = nullcontext
    error: tuple[type[Exception], str] | None = None  # for every entry point
    output_error: tuple[type[Exception], str] | None = None  # where outputs count
    tolerance: float = 0.0  # of the reference's largest magnitude; 0: float32's
    warns: bool = False


def hooked(register: str, where: str, hook: Callable) -> nn.Module:
    model = net()
    getattr(model.get_submodule(where), register)(hook)
    return model


@functools.cache
def compiled() -> nn.Module:
    model = torch.compile(net(), backend="eager")
    model(IMAGES)  # compiled for these shapes, as a user's model would be
    return model


def half(dtype: torch.dtype, tolerance: float) -> Case:
    return Case(net().to(dtype), net(), lambda: IMAGES.to(dtype), tolerance=tolerance)


NOT_ONE_TENSOR = (TypeError, r"must return one \(N, \.\.\.\) tensor.*model\(x\)")
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}  # as the README states

KINDS: dict[str, Callable[[], Case]] = {
    "plain": lambda: Case(net(), net()),
    "forward hook on the model": lambda: Case(
        hooked("register_forward_hook", "", lambda m, a, out: out.softmax(1)),
        net(head=nn.Softmax(1)),
    ),
    "forward hook on conv1": lambda: Case(
        hooked("register_forward_hook", "conv1", lambda m, a, out: out.tanh()),
        net(mid=nn.Tanh()),
    ),
    "pre-hook on the model": lambda: Case(
        hooked("register_forward_pre_hook", "", lambda m, a: (a[0].tanh(),)),
        net(stem=nn.Tanh()),
    ),
    "pre-hook on conv2": lambda: Case(
        hooked("register_forward_pre_hook", "conv2", lambda m, a: (a[0].tanh(),)),
        net(before_conv2=nn.Tanh()),
    ),
    "torch.compile": lambda: Case(compiled(), net()),
    "tuple output": lambda: Case(net(TupleOutput), net(), output_error=NOT_ONE_TENSOR),
    "dict output": lambda: Case(net(DictOutput), net(), output_error=NOT_ONE_TENSOR),
    "list output": lambda: Case(net(ListOutput), net(), output_error=NOT_ONE_TENSOR),
    "train mode": lambda: Case(net().train(), net(), warns=True),
    "float16": lambda: half(torch.float16, TOLERANCE[torch.float16]),
    "bfloat16": lambda: half(torch.bfloat16, TOLERANCE[torch.bfloat16]),
    "channels_last": lambda: Case(
        net().to(memory_format=torch.channels_last),
        net(),
        lambda: IMAGES.contiguous(memory_format=torch.channels_last),
        tolerance=1e-5,
    ),
    "DataParallel": lambda: Case(nn.DataParallel(net()), net()),
    "inference_mode": lambda: Case(net(), net(), context=torch.inference_mode),
    "no_grad": lambda: Case(net(), net(), context=torch.no_grad),
    "unbatched image": lambda: Case(
        net(), net(), lambda: IMAGES[0].clone(), error=(ValueError, r"\(N, C, H, W\)")
    ),
}


def find(model: nn.Module, name: str) -> nn.Module:
    """The submodule ``name``, inside whatever wrapper the kind puts around it."""
    return next(m for n, m in model.named_modules() if n.split(".")[-1] == name)


def maps(model: nn.Module, x: Tensor, incremental: bool) -> dict:
    occlusion = OcclusionSensitivity(model, incremental=incremental)
    result = occlusion.sensitivity_maps(x, 4, 2, layer=find(model, "conv2"))
    return {k: v for k, v in vars(result).items() if isinstance(v, Tensor)}


def attribute(model: nn.Module, x: Tensor, incremental: bool) -> dict:
    occlusion = OcclusionSensitivity(model, incremental=incremental)
    window = (3, 4, 4)
    result = occlusion.attribute(x, window, 2, target=1, perturbations_per_eval=3)
    return {"attribution": result}


def tops(model: nn.Module, x: Tensor) -> dict:
    top = top_activations(model, [find(model, "conv2"), find(model, "fc")], x, k=3)
    return {
        f"{name}.{field}": value
        for name in top.layers
        for field, value in top.entries(name)._asdict().items()
    }


def atlas(model: nn.Module, x: Tensor) -> dict:
    (name, layer_atlas), *_ = feature_atlas(model, [find(model, "conv2")], x, 2).items()
    return {f"{name}.{k}": v for k, v in vars(layer_atlas).items() if k != "layer"}


def invariance(model: nn.Module, x: Tensor) -> dict:
    layers = [find(model, "relu1"), find(model, "fc")]
    curves = invariance_curves(
        model, x, torch.tensor([0, 3]), layers, [0, 2], [1.0, 1.25], [0, 90]
    )
    return {
        f"{kind}.{name}": value
        for kind, sweep in curves.items()
        for name, value in [("probabilities", sweep.probabilities)]
        + [(f"distances.{k}", v) for k, v in sweep.distances.items()]
    }


def parts(model: nn.Module, x: Tensor) -> dict:
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 2:5, 1:6] = True
    layers = [find(model, "conv2"), find(model, "fc")]
    return correspondence(model, x, {"box": mask}, layers)["box"]


# name: (call, whether it uses the model's output)
ENTRY_POINTS: dict[str, tuple[Callable[[nn.Module, Tensor], dict], bool]] = {
    "DeconvNet": (
        lambda m, x: {"a": DeconvNet(m).attribute(x, target=[1, 3])},
        True,
    ),
    "NeuronDeconvNet": (
        lambda m, x: {
            "a": NeuronDeconvNet(m, find(m, "conv2")).attribute(x, (1, 2, 2))
        },
        False,
    ),
    "FeatureMapDeconvNet": (
        lambda m, x: {
            "a": FeatureMapDeconvNet(m, find(m, "conv2")).attribute(x, [0, 5])
        },
        False,
    ),
    "attribute": (lambda m, x: attribute(m, x, True), True),
    "attribute, incremental=False": (lambda m, x: attribute(m, x, False), True),
    "sensitivity_maps": (lambda m, x: maps(m, x, True), True),
    "sensitivity_maps, incremental=False": (lambda m, x: maps(m, x, False), True),
    "top_activations": (tops, False),
    "feature_atlas": (atlas, False),
    "invariance_curves": (invariance, True),
    "correspondence": (parts, False),
    "receptive_field": (
        lambda m, x: {"field": receptive_field(m, find(m, "conv2"), x.shape[1:])},
        False,
    ),
}


def state(model: nn.Module) -> tuple:
    """Hooks, modes, requires_grad and gradients; buffers and parameters."""
    tensors = [(n, t.detach().clone()) for n, t in model.state_dict().items()]
    return snapshot(model), tensors


def assert_unchanged(before: tuple, after: tuple) -> None:
    assert after[0] == before[0]
    assert [n for n, _ in after[1]] == [n for n, _ in before[1]]
    for (name, old), (_, new) in zip(before[1], after[1], strict=True):
        assert torch.equal(old, new), f"{name} changed"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_each_entry_point_on_each_kind(entry, kind):
    case = KINDS[kind]()
    call, uses_output = ENTRY_POINTS[entry]
    error = case.error or (case.output_error if uses_output else None)
    before = state(case.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with case.context():
            x = case.images()
            if error is not None:
                with pytest.raises(error[0], match=error[1]):
                    call(case.model, x)
            else:
                result = call(case.model, x)
    assert_unchanged(before, state(case.model))
    mode_warnings = [w for w in caught if "training mode" in str(w.message)]
    # A receptive field does not depend on the mode: it switches without a word.
    warns = case.warns and entry != "receptive_field"
    assert len(mode_warnings) == warns
    if warns:  # it names the modules and points at the caller's line
        assert "bn (BatchNorm2d), drop (Dropout)" in str(mode_warnings[0].message)
        assert mode_warnings[0].filename == __file__
    if error is None:
        assert_equal(result, call(case.reference, IMAGES), x.dtype, case.tolerance)


def assert_equal(result: dict, expected: dict, dtype: torch.dtype, tolerance: float):
    assert result.keys() == expected.keys()  # also: the layers' names
    for key, value in result.items():
        reference = expected[key]
        if not isinstance(value, Tensor):
            if tolerance > 1e-5 and isinstance(value, float):
                assert value == pytest.approx(reference, abs=tolerance), key
            else:
                assert value == reference, key
        elif not value.is_floating_point():
            assert torch.equal(value, reference), key
        else:
            # the top-k state keeps exact float64; everything else the input's dtype
            kept = torch.float64 if key.endswith("values") else dtype
            assert value.dtype == kept, key
            if not tolerance:  # float32's
                torch.testing.assert_close(value, reference, msg=key)
                continue
            empty = reference.isinf()  # the top-k's unfilled slots
            assert torch.equal(value[empty], reference[empty].to(value.dtype)), key
            value, reference = value[~empty].double(), reference[~empty].double()
            atol = tolerance * float(reference.abs().max())
            error = (value - reference).abs().max()
            assert error <= atol, f"{key}: {error} > {atol}"
