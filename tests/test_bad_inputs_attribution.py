"""Bad arguments to the attribution classes, the occlusion pictures, receptive
fields and the correspondence masks: each is refused by name, none gives a result."""

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from captum_deconvnet import (
    FeatureMapDeconvNet,
    NeuronDeconvNet,
    OcclusionSensitivity,
    ReceptiveField,
    box_part_masks,
    normalize_projection,
    occlusion_figure,
    random_masks_like,
    receptive_field,
    save_overlay,
    upsample_grid,
)
from tests.helpers import snapshot
from tests.test_occlusion import images, small_cnn

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def maps():
    """Sensitivity maps of 2 images of 12x12 for a window of 4 at stride 2: 5x5."""
    return OcclusionSensitivity(small_cnn()).sensitivity_maps(images(2), 4, 2)


def test_upsample_grid_refuses_a_zero_stride_and_a_grid_of_other_positions(maps):
    grid = maps.probability
    with pytest.raises(ValueError, match="stride must be a positive int, got 0"):
        upsample_grid(grid, (12, 12), (4, 4), (0, 0))
    # A window and stride that give 3x3 positions, not the grid's 5x5
    with pytest.raises(ValueError, match=r"\(2, 5, 5\) is not a map of the 3x3"):
        upsample_grid(grid, (12, 12), (4, 4), (4, 4))
    with pytest.raises(ValueError, match=r"window \(16, 16\) is larger"):
        upsample_grid(grid, (12, 12), 16, 2)
    with pytest.raises(TypeError, match="grid must be a tensor .* got list"):
        upsample_grid(grid.tolist(), (12, 12), (4, 4), (2, 2))
    with pytest.raises(TypeError, match="window must be an int or two ints"):
        upsample_grid(grid, (12, 12), 4.0, 2)


def test_upsample_grid_takes_ints_for_squares(maps):
    grid = maps.probability
    squares = upsample_grid(grid, 12, 4, 2)
    # Pixel y takes row round((y - 1.5) / 2) clipped to 0..4, as by hand
    rows = [min(max(round((y - 1.5) / 2 + 1e-9), 0), 4) for y in range(12)]
    expected = grid[:, rows][:, :, rows]
    assert torch.equal(squares, expected)
    assert torch.equal(squares, upsample_grid(grid, (12, 12), (4, 4), (2, 2)))


def test_occlusion_figure_names_a_bad_index_image_or_maps(maps):
    x = images(2)
    with pytest.raises(ValueError, match=r"index 5 is out of range for maps of 2"):
        occlusion_figure(x[0], maps, 5)
    with pytest.raises(TypeError, match="index must be an int, got 1.0"):
        occlusion_figure(x[0], maps, 1.0)
    with pytest.raises(ValueError, match=r"one image \(C, H, W\).*\(2, 3, 12, 12\)"):
        occlusion_figure(x, maps, 0)
    with pytest.raises(TypeError, match="SensitivityMaps .* got Tensor"):
        occlusion_figure(x[0], maps.probability)
    with pytest.raises(TypeError, match="image must be a tensor .* got list"):
        occlusion_figure(x[0].tolist(), maps, 0)
    with pytest.raises(ValueError, match=r"projection must be one image"):
        occlusion_figure(x[0], maps, 0, projection=x)
    # the maps' 5x5 positions are those of a 12x12 image, by hand: (12 - 4) // 2 + 1
    made_on = r"image of {} is not the size the maps were made on: their 5x5"
    for side in (24, 14, 3):
        with pytest.raises(ValueError, match=made_on.format(f"{side}x{side}")):
            occlusion_figure(torch.rand(3, side, side), maps, 0)
    occlusion_figure(torch.rand(3, 13, 12), maps, 0)  # 13 rows give 5 positions too


def test_overlay_and_normalize_projection_refuse_lists(tmp_path):
    image, heatmap = torch.rand(3, 8, 8), torch.rand(8, 8)
    with pytest.raises(TypeError, match="image must be a tensor .* got list"):
        save_overlay(tmp_path / "a.png", image.tolist(), heatmap)
    with pytest.raises(TypeError, match="heatmap must be a tensor .* got list"):
        save_overlay(tmp_path / "a.png", image, heatmap.tolist())
    with pytest.raises(ValueError, match=r"one image .* got shape \(8, 8\)"):
        save_overlay(tmp_path / "a.png", heatmap, heatmap)
    with pytest.raises(TypeError, match="projection must be a tensor .* got list"):
        normalize_projection([[1.0, -2.0]])
    with pytest.raises(ValueError, match="projection needs a batch dimension"):
        normalize_projection(torch.tensor(1.0))
    assert not list(tmp_path.iterdir())


def test_box_of_a_position_outside_the_layers_map_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Conv2d(2, 2, 3))
    field = receptive_field(model, model[2], (1, 16, 16))
    rows, cols = model(torch.zeros(1, 1, 16, 16)).shape[-2:]  # 5x5
    assert field.map_size == (rows, cols) == (5, 5)
    # The last position: rows 8..14 of the 15 that conv1 reads
    assert field.box(4, 4, (16, 16)) == (8, 8, 15, 15)
    with pytest.raises(ValueError, match=r"\(5, 0\) is outside the layer's 5x5"):
        field.box(5, 0, (16, 16))
    with pytest.raises(ValueError, match=r"\(100, 100\) is outside .* 5x5"):
        field.box(100, 100, (16, 16))
    with pytest.raises(ValueError, match=r"\(-1, 2\) is outside the layer's map"):
        field.box(-1, 2, (16, 16))
    with pytest.raises(TypeError, match="col must be an int, got 2.0"):
        field.box(1, 2.0, (16, 16))
    # an argmax's row and column, as numpy or 0-d integer tensors, are positions
    flat = torch.tensor(23)  # row 4, col 3 of the 5x5 map
    expected = field.box(4, 3, (16, 16))
    assert field.box(flat // 5, flat % 5, (16, 16)) == expected
    assert field.box(np.int64(4), np.int32(3), (16, 16)) == expected
    assert all(type(v) is int for v in field.box(flat // 5, flat % 5, (16, 16)))
    with pytest.raises(TypeError, match=r"row must be an int, got tensor\(4.\)"):
        field.box(torch.tensor(4.0), 3, (16, 16))
    by_hand = ReceptiveField(size=(3, 3), jump=(2, 2), start=(-1, -1))
    with pytest.raises(ValueError, match=r"\(0, -3\) is outside"):
        by_hand.box(0, -3, (16, 16))


def test_boxes_outside_the_image_are_refused_by_name():
    with pytest.raises(ValueError, match=r"box \[70, 70, 100, 100\] .* no pixel in"):
        box_part_masks([[10, 10, 40, 40], [70, 70, 100, 100]], (64, 64))
    # Rows 10..39 in the image, 40..99 not: the bottom third would mask nothing
    with pytest.raises(ValueError, match=r"\[10, 10, 100, 100\] .* bottom third"):
        box_part_masks(torch.tensor([[10, 10, 100, 100]]), (64, 64))
    with pytest.raises(ValueError, match=r"\[10, 10, 20, 12\] .* top third"):
        box_part_masks(torch.tensor([[10, 10, 20, 12]]), (64, 64))  # 2 rows high
    with pytest.raises(TypeError, match="masks must be a tensor .* got list"):
        random_masks_like([[[True, False]]])


def test_a_channel_without_a_layer_is_refused():
    model = small_cnn()
    before = snapshot(model)
    with pytest.raises(ValueError, match="channel 3 is a channel of layer"):
        OcclusionSensitivity(model).sensitivity_maps(images(2), 4, 2, channel=3)
    assert snapshot(model) == before


@pytest.mark.parametrize(
    "selector, match",
    [((5.0, 0, 0), r"\(5.0, 0, 0\)"), ([1, 0, 0], r"\[1, 0, 0\]"), (True, "True")],
)
def test_neuron_selector_of_another_kind_is_a_type_error(selector, match):
    model = small_cnn()
    before = snapshot(model)
    with pytest.raises(TypeError, match=f"neuron_selector must be .* got {match}"):
        NeuronDeconvNet(model, model[3]).attribute(images(2), selector)
    assert snapshot(model) == before


@pytest.mark.parametrize("channels", ["0", [0, "1"], [[0], [1, 2]], [True, False]])
def test_channels_that_are_not_ints_are_named(channels):
    model = small_cnn()
    before = snapshot(model)
    with pytest.raises(TypeError, match=r"channels must be an int, .* got"):
        FeatureMapDeconvNet(model, model[3]).attribute(images(2), channels)
    assert snapshot(model) == before
