import pytest
import torch
from PIL import Image
from torch import nn

from captum_deconvnet import filter_images, save_filters


def test_each_filter_is_scaled_on_its_own_around_grey():
    conv = nn.Conv2d(1, 2, 2, bias=False)
    with torch.no_grad():
        conv.weight[0, 0] = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
        conv.weight[1, 0] = torch.tensor([[0.0, 0.0], [0.0, -0.01]])  # weak
    pictures = filter_images(conv)
    assert pictures[0, 0].tolist() == [[1.0, 0.0], [0.75, 0.5]]
    assert pictures[1, 0].tolist() == [[0.5, 0.5], [0.5, 0.0]]


def test_png_is_a_grid_of_enlarged_filters(tmp_path):
    conv = nn.Conv2d(3, 10, 7)
    save_filters(conv, tmp_path / "filters.png", per_row=5)
    # 7x7 filters enlarged 4 times to 28, 2 pixels between and around them
    assert Image.open(tmp_path / "filters.png").size == (5 * 30 + 2, 2 * 30 + 2)


def test_bad_layers_are_named(tmp_path):
    with pytest.raises(TypeError, match="Linear"):
        filter_images(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="over 8 channels"):
        filter_images(nn.Conv2d(8, 4, 3))
    for per_row in (0, -2, 2.5):  # 0 drew the default, -2 a RuntimeError
        with pytest.raises(
            ValueError, match=rf"per_row must be a positive int, got {per_row}"
        ):
            save_filters(nn.Conv2d(3, 4, 3), tmp_path / "f.png", per_row=per_row)
