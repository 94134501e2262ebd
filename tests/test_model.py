import re

import pytest
import torch
from torch import nn

from lightning_zfnet import ZFNet, zfnet
from lightning_zfnet.model import contrast_norm


def test_paper_network_has_the_papers_sizes_and_parameter_count():
    model = zfnet().eval()
    assert sum(p.numel() for p in model.parameters()) == 62_357_608
    sides, channels = [], []

    def record(module, inputs, output):
        sides.append(output.shape[-1])
        channels.append(output.shape[1])

    layers = [m for m in model.features if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
    handles = [m.register_forward_hook(record) for m in layers]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    for h in handles:
        h.remove()
    assert out.shape == (1, 1000)
    assert sides == [110, 55, 26, 13, 13, 13, 13, 6]
    assert channels == [96, 96, 256, 256, 384, 384, 256, 256]


def test_contrast_norm_is_krizhevskys_formula():
    # b_c = a_c / (k + alpha * sum_{|c'-c| <= n/2} a_c'^2)^beta, n=5, k=2, alpha=1e-4,
    # beta=0.75, computed channel by channel.
    a = torch.randn(2, 9, 4, 4, dtype=torch.float64) * 20
    expected = torch.empty_like(a)
    for c in range(9):
        window = a[:, max(0, c - 2) : c + 3]
        expected[:, c] = a[:, c] / (2 + 1e-4 * window.pow(2).sum(1)) ** 0.75
    torch.testing.assert_close(contrast_norm()(a), expected)


def test_contrast_norm_follows_each_pool_of_layers_1_and_2():
    kinds = [type(m).__name__ for m in zfnet().features][:8]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "LocalResponseNorm"] * 2


def test_wide_variant_b_has_512_1024_512_maps():
    model = zfnet(wide=True)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 512, 1024, 512]


def test_small_input_and_width_multiplier_train():
    model = zfnet(num_classes=10, in_channels=1, input_size=64, width=0.25)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [24, 64, 96, 96, 64]
    x, y = torch.randn(4, 1, 64, 64), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # the output layer starts at zero: the second step reaches all
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_kaiming_init_starts_at_chance():
    model = zfnet(num_classes=10, in_channels=1, input_size=64)
    with torch.no_grad():
        probabilities = model(torch.randn(3, 1, 64, 64)).softmax(1)
    torch.testing.assert_close(probabilities, torch.full((3, 10), 0.1))


def test_paper_init_is_normal_001_with_zero_bias():
    model = zfnet(init="paper", num_classes=10)
    fc6 = model.classifier[0]
    assert abs(fc6.weight.std().item() - 0.01) < 1e-3
    assert fc6.bias.abs().sum() == 0


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"input_size": 40}, "input_size"),
        ({"num_classes": 0}, "num_classes"),
        ({"width": 0.0}, "width"),
        ({"dropout": 1.0}, "dropout"),
        ({"init": "xavier"}, "xavier"),
    ],
)
def test_bad_arguments_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ZFNet(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"conv1_stride": 2}, {"conv1_stride": 1}, {"layer1": "krizhevsky"}]
)
def test_too_small_an_input_names_the_smallest_the_network_takes(kwargs):
    with pytest.raises(ValueError, match="input_size 8 is too small") as refused:
        ZFNet(input_size=8, width=0.25, **kwargs)
    smallest = int(
        re.search(r"smallest input is (\d+)x\1 pixels", str(refused.value))[1]
    )
    features = ZFNet(in_channels=1, width=0.25, **kwargs).features.eval()

    def runs(size):  # the reference: torch's own layers on such an input
        try:
            with torch.no_grad():
                features(torch.zeros(1, 1, size, size))
        except RuntimeError:
            return False
        return True

    assert [runs(size) for size in (smallest - 1, smallest, smallest + 1)] == [
        False,
        True,
        True,
    ]
    ZFNet(input_size=smallest, width=0.25, **kwargs)
    with pytest.raises(ValueError, match=f"input_size {smallest - 1} is too small"):
        ZFNet(input_size=smallest - 1, width=0.25, **kwargs)


def test_builder_is_keyword_only():
    with pytest.raises(TypeError):
        zfnet(10)  # type: ignore[misc]
