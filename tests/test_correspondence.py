import itertools

import pytest
import torch
from PIL import Image
from torch import nn

from captum_deconvnet import (
    box_part_masks,
    correspondence,
    mean_hamming_distance,
    occlude,
    plot_correspondence,
    random_masks_like,
)

from .test_deconvnet_contract import snapshot


def test_mean_hamming_distance_by_hand():
    signs = torch.tensor([[1, -1, 0, 1], [1, 1, 0, -1], [-1, -1, 0, 1]])
    # pairs (0, 1): 2 of 4 differ; (0, 2): 1 of 4; (1, 2): 3 of 4
    assert mean_hamming_distance(signs) == pytest.approx((0.5 + 0.25 + 0.75) / 3)
    with pytest.raises(ValueError, match="N >= 2"):
        mean_hamming_distance(signs[:1])
    with pytest.raises(ValueError, match="D >= 1"):  # no entries: no distance
        mean_hamming_distance(signs[:, :0])
    # a nested list is the same signs (an AttributeError on .ndim, before)
    assert mean_hamming_distance(signs.tolist()) == mean_hamming_distance(signs)


def test_correspondence_equals_a_direct_computation():
    class Features(nn.Module):
        def __init__(self):
            super().__init__()
            self.flat, self.square = nn.Flatten(), nn.Flatten()

        def forward(self, x):
            return self.square(self.flat(x) ** 2 - 1)

    model = Features().train()
    before = snapshot(model)
    torch.manual_seed(0)
    images = torch.randn(4, 1, 5, 5)
    masks = torch.rand(4, 5, 5) > 0.6
    fill = 0.5
    with pytest.warns(UserWarning, match="training mode"):
        table = correspondence(
            model, images, {"part": masks}, [model.flat, model.square], fill
        )
    assert snapshot(model) == before
    occluded = torch.where(masks[:, None], fill, images)
    for name, f in (("flat", lambda x: x), ("square", lambda x: x**2 - 1)):
        signs = (f(images) - f(occluded)).flatten(1).sign()
        distances = [
            (signs[i] != signs[j]).float().mean().item()
            for i, j in itertools.combinations(range(4), 2)
        ]
        assert table["part"][name] == pytest.approx(sum(distances) / 6)
    layers = [model.flat]
    with pytest.raises(ValueError, match="N >= 2"):
        correspondence(model.eval(), images[:1], {"part": masks[:1]}, layers)
    with pytest.raises(TypeError, match="dict"):
        correspondence(model, images, masks, layers)
    with pytest.raises(ValueError, match=r"masks\['part'\]"):
        correspondence(model, images, {"part": masks[:3]}, layers)
    # a numpy array of masks is the same masks
    as_array = correspondence(model, images, {"part": masks.numpy()}, layers)
    assert as_array == correspondence(model, images, {"part": masks}, layers)
    with pytest.raises(TypeError, match=r"masks\['part'\] must be .* got str"):
        correspondence(model, images, {"part": "middle"}, layers)
    with pytest.raises(ValueError, match="N, H, W"):
        random_masks_like(masks[0])
    # one layer alone (a TypeError from iterating it, before) names what to pass
    with pytest.raises(ValueError, match=r"got Flatten; pass one layer as \[layer\]"):
        correspondence(model, images, {"part": masks}, model.flat)
    with pytest.raises(TypeError, match="got 'flat'"):
        correspondence(model, images, {"part": masks}, ["flat"])


def test_box_thirds_by_hand():
    boxes = torch.tensor([[2, 3, 8, 12], [0, 0, 3, 4]])
    masks = box_part_masks(boxes, (16, 16))
    expected = torch.zeros(2, 16, 16, dtype=torch.bool)
    expected[0, 6:9, 2:8] = True  # rows 3..11 in thirds: 3..5, 6..8, 9..11
    expected[1, 1:2, 0:3] = True  # rows 0..3: 0, 1, 2..3
    assert torch.equal(masks["middle"], expected)
    assert masks["top"][0, 3:6, 2:8].all() and masks["top"][0].sum() == 18
    assert masks["bottom"][1, 2:4, 0:3].all() and masks["bottom"][1].sum() == 6
    with pytest.raises(ValueError, match="boxes"):
        box_part_masks(torch.zeros(2, 3), (16, 16))
    with pytest.raises(ValueError, match="x1 > x0"):  # its masks would be empty
        box_part_masks(torch.tensor([[8, 3, 2, 12]]), (16, 16))
    # float boxes of whole pixels are the same boxes; a fraction was cut off
    assert torch.equal(box_part_masks(boxes.double(), (16, 16))["middle"], expected)
    with pytest.raises(
        ValueError, match=r"whole pixels, got \[\[2.0, 3.0, 8.5, 12.0\]\]"
    ):
        box_part_masks(torch.tensor([[2.0, 3.0, 8.5, 12.0]]), (16, 16))


def test_random_masks_are_the_same_shapes_elsewhere():
    masks = box_part_masks(torch.tensor([[2, 3, 8, 12], [10, 10, 16, 16]]), (16, 16))
    part = masks["bottom"]
    generator = torch.Generator().manual_seed(0)
    moved = random_masks_like(part, generator)
    for before, after in zip(part, moved, strict=True):
        ys, xs = before.nonzero(as_tuple=True)
        dy, dx = (after.nonzero()[0] - before.nonzero()[0]).tolist()
        assert torch.equal(after.nonzero(), torch.stack([ys + dy, xs + dx], 1))
    again = random_masks_like(part, torch.Generator().manual_seed(0))
    assert torch.equal(moved, again)


def test_occlude_and_the_plot(tmp_path):
    images = torch.ones(2, 3, 4, 4)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[1, 0, 0] = True
    out = occlude(images, masks, fill=0.25)
    assert out[1, :, 0, 0].tolist() == [0.25] * 3 and out.sum() == 2 * 48 - 3 * 0.75
    with pytest.raises(ValueError, match="masks must be"):
        occlude(images, masks[0])
    # numpy masks, as correspondence takes them (an AttributeError, before)
    assert torch.equal(occlude(images, masks.numpy(), fill=0.25), out)
    table = {"top": {"a": 0.1, "b": 0.2}, "random": {"a": 0.3, "b": 0.25}}
    plot_correspondence(table, tmp_path / "table.png")
    assert Image.open(tmp_path / "table.png").size[0] > 100
    with pytest.raises(ValueError, match="table is empty"):  # a StopIteration
        plot_correspondence({}, tmp_path / "none.png")
    with pytest.raises(TypeError, match="got list"):
        plot_correspondence([table], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
