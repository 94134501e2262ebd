"""Sizes, indices and positions given as numpy ints, numpy arrays or integer tensors
(what ``np.argmax``, ``torch.unravel_index``, ``image.shape`` and arrays hold) are
taken as the ints they hold, with the results the ints give."""

import numpy as np
import pytest
import torch
from captum.attr import NeuronDeconvolution

from captum_deconvnet import (
    NeuronDeconvNet,
    OcclusionSensitivity,
    box_part_masks,
    occlusion_figure,
    receptive_field,
    upsample_grid,
)
from tests.test_deconvnet import TIGHT, zfnet_like
from tests.test_occlusion import images, small_cnn

SIZES = {
    "numpy ints": (np.int64(16), np.int32(12)),
    "numpy array": np.array([16, 12]),
    "tensor": torch.tensor([16, 12]),
    "0-d tensors": (torch.tensor(16), torch.tensor(12)),
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_box_part_masks_take_an_image_size_of_numpy_or_tensor_ints(size):
    boxes = torch.tensor([[2, 3, 8, 12], [0, 0, 3, 4]])
    masks = box_part_masks(boxes, size)
    # by hand: box 0's rows 3..11 in thirds 3..5, 6..8, 9..11, columns 2..7; box
    # 1's rows 0..3 in thirds 0, 1, 2..3, columns 0..2; on a 16x12 image
    expected = {part: torch.zeros(2, 16, 12, dtype=torch.bool) for part in masks}
    for part, rows0, rows1 in (
        ("top", slice(3, 6), slice(0, 1)),
        ("middle", slice(6, 9), slice(1, 2)),
        ("bottom", slice(9, 12), slice(2, 4)),
    ):
        expected[part][0, rows0, 2:8] = True
        expected[part][1, rows1, 0:3] = True
    for part in expected:
        assert torch.equal(masks[part], expected[part]), part


def _nearest_centres(size: int, window: int, stride: int, count: int) -> list[int]:
    """Per pixel, the position whose window is centred nearest to it (no ties for
    an even window and stride)."""
    centres = [r * stride + (window - 1) / 2 for r in range(count)]
    return [min(range(count), key=lambda r: abs(y - centres[r])) for y in range(size)]


@pytest.mark.parametrize(
    "sizes",
    [
        (np.int64(16), np.int64(8), np.int64(4)),
        (np.array([16, 16]), np.array([8, 8]), np.array([4, 4])),
        (torch.tensor([16, 16]), torch.tensor(8), (torch.tensor(4), np.int32(4))),
    ],
    ids=["numpy ints", "numpy arrays", "tensors"],
)
def test_upsample_grid_takes_sizes_of_numpy_or_tensor_ints(sizes):
    grid = torch.arange(18.0).reshape(2, 3, 3)
    up = upsample_grid(grid, *sizes)
    nearest = _nearest_centres(16, 8, 4, 3)
    expected = torch.tensor(
        [[[grid[n, nearest[y], nearest[x]] for x in range(16)] for y in range(16)]
         for n in range(2)]
    )  # fmt: skip
    assert torch.equal(up, expected)


def test_sensitivity_maps_take_a_window_and_stride_of_numpy_ints():
    model, x = small_cnn(), images(2)
    maps = OcclusionSensitivity(model).sensitivity_maps(
        x, np.int64(4), (np.int64(2), np.int32(2))
    )
    assert maps.window == (4, 4) and maps.stride == (2, 2)
    # the window's first position, by hand: the top-left 4x4 square in each
    # image's mean per channel
    occluded = x.clone()
    occluded[:, :, :4, :4] = x.mean(dim=(2, 3), keepdim=True)
    with torch.no_grad():
        probability = model(occluded).softmax(1)
    target = maps.target
    assert torch.allclose(
        maps.probability[:, 0, 0], probability[torch.arange(2), target], atol=1e-6
    )


def test_sizes_that_are_not_integers_are_still_refused():
    grid = torch.zeros(1, 3, 3)
    with pytest.raises(TypeError, match=r"window must be an int or two ints, got 8\.0"):
        upsample_grid(grid, 16, 8.0, 4)
    with pytest.raises(TypeError, match="stride must be an int or two ints"):
        upsample_grid(grid, 16, 8, torch.tensor(4.0))
    with pytest.raises(ValueError, match=r"window must be a positive int, got 8\.0"):
        upsample_grid(grid, 16, (8.0, 8), 4)
    with pytest.raises(TypeError, match="image_size must be an int or two ints"):
        box_part_masks(torch.tensor([[0, 0, 4, 4]]), np.float64(16))


INDICES = {
    "numpy int": np.int64(1),
    "numpy int32": np.int32(1),
    "0-d tensor": torch.tensor(1),
    "0-d int32 tensor": torch.tensor(1, dtype=torch.int32),
}


@pytest.mark.parametrize("index", INDICES.values(), ids=INDICES.keys())
def test_occlusion_figure_takes_an_index_of_numpy_or_tensor_int(index):
    model, x = small_cnn(), images(2)
    maps = OcclusionSensitivity(model).sensitivity_maps(x, 4, 2, layer=model[3])
    figure = occlusion_figure(x[1], maps, index)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    # image 1's channel and target, as the maps hold them
    assert f"map {int(maps.channel[1])}" in titles[1]
    assert f"p({int(maps.target[1])})" in titles[-2]


def test_neuron_selector_of_unravel_index_equals_captum_with_ints():
    model = zfnet_like()
    x = torch.randn(2, 3, 100, 100, dtype=torch.float64)
    with torch.no_grad():
        activation = model[:5](x)
    # the strongest neuron of image 0, as torch.unravel_index gives it: 0-d tensors
    selector = torch.unravel_index(activation[0].argmax(), activation.shape[1:])
    assert all(isinstance(i, torch.Tensor) and i.ndim == 0 for i in selector)
    ours = NeuronDeconvNet(model, model[4], normalization="gradient")
    theirs = NeuronDeconvolution(model, model[4])
    as_ints = tuple(int(i) for i in selector)
    torch.testing.assert_close(
        ours.attribute(x, selector), theirs.attribute(x, as_ints), **TIGHT
    )
    numpy_ints = tuple(np.int64(i) for i in as_ints)
    torch.testing.assert_close(
        ours.attribute(x, (slice(None), numpy_ints[1], torch.tensor(0))),
        theirs.attribute(x, (slice(None), as_ints[1], 0)),
        **TIGHT,
    )
    # one neuron of a linear layer, as a bare 0-d tensor
    torch.testing.assert_close(
        NeuronDeconvNet(model, model[12], "gradient").attribute(x, torch.tensor(3)),
        NeuronDeconvolution(model, model[12]).attribute(x, 3),
        **TIGHT,
    )


def test_neuron_selector_refuses_what_is_not_an_int():
    model, x = zfnet_like(), torch.randn(1, 3, 100, 100, dtype=torch.float64)
    explainer = NeuronDeconvNet(model, model[4])
    for selector in [(torch.tensor(1.0), 0, 0), (torch.tensor([1]), 0, 0), [1, 0, 0]]:
        with pytest.raises(TypeError, match="neuron_selector must be an int"):
            explainer.attribute(x, selector)


@pytest.mark.parametrize(
    "shape",
    [(np.int64(1), np.int64(16), np.int64(16)), np.array([1, 16, 16])],
    ids=["numpy ints", "numpy array"],
)
def test_receptive_field_takes_an_input_shape_of_numpy_ints(shape):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3)
    )
    field = receptive_field(model, model[2], shape)
    # by hand: 3 + (3 - 1) * 2 = 7 pixels, a step of 2, from -0 (no padding); the
    # second convolution's 5x5 map of (16 - 3) // 2 + 1 = 7 rows, less 2
    assert (field.size, field.jump, field.start) == ((7, 7), (2, 2), (0, 0))
    assert field.image_size == (16, 16) and field.map_size == (5, 5)


def test_an_input_shape_of_another_length_is_named_as_such():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    for shape in [(1, 1, 16, 16), (16, 16)]:  # a batch's shape; an image's [1:]
        with pytest.raises(ValueError, match=r"\(N, C, H, W\) images.shape\[1:\]"):
            receptive_field(model, model[0], shape)
    for shape in [(1, 16.0, 16), (1, 0, 16)]:
        with pytest.raises(ValueError, match=r"\(C, H, W\) of positive ints; got"):
            receptive_field(model, model[0], shape)
