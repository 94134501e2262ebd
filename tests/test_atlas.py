import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from captum_deconvnet import (
    ReceptiveField,
    cut_patches,
    feature_atlas,
    project_top_activations,
    receptive_field,
    save_atlas,
    top_activations,
)

from .reference_deconvnet import position_seed, reference_projection
from .scan_ddp import tiny_images, tiny_model
from .test_deconvnet_contract import snapshot
from .test_topk import naive_distinct_top, naive_top

IMAGE = torch.arange(36.0).view(1, 1, 6, 6)


def test_patches_are_cut_as_by_hand():
    field = ReceptiveField(size=(3, 3), jump=(2, 2), start=(-1, -1))
    positions = torch.tensor([[0, 0], [1, 2], [3, 3]])
    patches = cut_patches(IMAGE.expand(3, -1, -1, -1), field, positions, fill=-1.0)
    # (0, 0) sees rows and columns -1..1: the padding row and column stay -1.
    assert patches[0, 0].tolist() == [[-1, -1, -1], [-1, 0, 1], [-1, 6, 7]]
    # (1, 2) sees rows 1..3 and columns 3..5, all in the image.
    assert patches[1, 0].tolist() == [[9, 10, 11], [15, 16, 17], [21, 22, 23]]
    # (3, 3) sees rows and columns 5..7: only pixel (5, 5) is in the image.
    assert patches[2, 0].tolist() == [[35, -1, -1], [-1, -1, -1], [-1, -1, -1]]
    # (4, 4) would see rows and columns 7..9: no pixel of the image
    with pytest.raises(ValueError, match=r"position \(4, 4\) sees nothing"):
        cut_patches(IMAGE, field, torch.tensor([[4, 4]]))


def test_positions_must_give_one_position_per_image():
    """One position too few left the last image's patch all fill, silently."""
    field = ReceptiveField(size=(3, 3), jump=(2, 2), start=(-1, -1))
    images = IMAGE.expand(2, -1, -1, -1)
    with pytest.raises(ValueError, match=r"positions must be \(2, 2\) ints"):
        cut_patches(images, field, torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match=r"got torch.float32 of shape \(2, 2\)"):
        cut_patches(images, field, torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"images must be \(K, C, H, W\)"):
        cut_patches(IMAGE[0], field, torch.tensor([[1, 2]]))
    # a list of (row, col) pairs is as good as a tensor
    by_list = cut_patches(images, field, [[1, 2], [0, 0]])
    assert torch.equal(
        by_list, cut_patches(images, field, torch.tensor([[1, 2], [0, 0]]))
    )
    assert by_list[0, 0].tolist() == [[9, 10, 11], [15, 16, 17], [21, 22, 23]]


def test_fields_larger_than_the_image_give_image_sized_patches():
    field = ReceptiveField(size=(9, 9), jump=(1, 1), start=(-2, -2))
    positions = torch.tensor([[0, 0], [0, 3]])
    fill = torch.tensor([-1.0, -2.0])
    patches = cut_patches(IMAGE.expand(2, -1, -1, -1), field, positions, fill)
    assert torch.equal(patches[0], IMAGE[0])  # rows and columns -2..6: everything
    # columns 1..9: columns 1..5 of the image first, then the fill
    assert torch.equal(patches[1, 0, :, :5], IMAGE[0, 0, :, 1:])
    assert torch.all(patches[1, 0, :, 5] == -2.0)


def test_a_field_cut_short_inside_the_image_keeps_its_place_in_the_patch():
    """The layer reads from row and column 1 on (a crop): position (0, 0)'s field,
    rows and columns 0..2, holds pixels 1..2 at their places 1..2 of the patch."""
    field = ReceptiveField((3, 3), (1, 1), (0, 0), (6, 6), extent=(1, 1, 6, 6))
    patch = cut_patches(IMAGE, field, torch.tensor([[0, 0]]), fill=-1.0)[0, 0]
    expected = torch.full((3, 3), -1.0)
    expected[1:, 1:] = IMAGE[0, 0, 1:3, 1:3]
    assert torch.equal(patch, expected)


@pytest.fixture(scope="module")
def atlas_and_scan():
    model, images = tiny_model(), tiny_images()
    layers = [model[0], model[4]]
    atlas = feature_atlas(model, layers, images, k=3, batch_size=5)
    return model, images, atlas, top_activations(model, layers, images, k=3)


def test_atlas_holds_the_top_activations(atlas_and_scan):
    model, images, atlas, top = atlas_and_scan
    assert list(atlas) == ["0", "4"]
    for name, layer_atlas in atlas.items():
        values, indices, rows, cols = top.entries(name)
        assert torch.equal(layer_atlas.values, values)
        assert torch.equal(layer_atlas.images, indices)
        assert torch.equal(layer_atlas.positions, torch.stack([rows, cols], -1))
        field = receptive_field(model, model.get_submodule(name), (1, 10, 10))
        assert layer_atlas.field == field
        side = tuple(min(s, 10) for s in field.size)
        assert layer_atlas.projections.shape == (*values.shape, 1, *side)
        assert layer_atlas.patches.shape == (*values.shape, 1, *side)


@pytest.mark.parametrize("name, index", [("0", 0), ("4", 4)])
def test_projections_and_patches_equal_the_reference(atlas_and_scan, name, index):
    model, images, atlas, _ = atlas_and_scan
    layer_atlas = atlas[name]
    field = layer_atlas.field
    for channel, rank in [(0, 0), (1, 2), (3, 1)]:
        image = images[layer_atlas.images[channel, rank]][None]
        row, col = layer_atlas.positions[channel, rank].tolist()
        seed = position_seed([channel], [(row, col)])
        full = reference_projection(model, image, index, seed)
        x0, y0, x1, y1 = field.box(row, col, (10, 10))
        # The projection lies inside the receptive field ...
        inside = torch.zeros_like(full, dtype=torch.bool)
        inside[..., y0:y1, x0:x1] = True
        assert torch.all(full[~inside] == 0)
        # ... and the atlas shows it cut as the image is.
        where = torch.tensor([[row, col]])
        expected = cut_patches(full, field, where)[0]
        torch.testing.assert_close(layer_atlas.projections[channel, rank], expected)
        patch = cut_patches(image, field, where, fill=image.min())[0]
        assert torch.equal(layer_atlas.patches[channel, rank], patch)


def test_empty_slots_stay_empty_and_the_model_is_left_alone():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).train()
    before = snapshot(model)
    images = torch.randn(1, 1, 4, 4)  # 2x2 maps: four activations per channel
    with pytest.warns(UserWarning, match=r"1 \(BatchNorm2d\)"):
        atlas = feature_atlas(model, [model[2]], images, k=6)["2"]
    assert snapshot(model) == before
    assert torch.all(atlas.images[:, 4:] == -1) and torch.all(atlas.images[:, :4] == 0)
    assert torch.all(atlas.projections[:, 4:] == 0)
    assert torch.all(atlas.patches[:, 4:] == 0)


def test_save_atlas_writes_one_block_per_channel(atlas_and_scan, tmp_path):
    _, _, atlas, _ = atlas_and_scan
    save_atlas(atlas["4"], tmp_path / "all.png")
    save_atlas(atlas["4"], tmp_path / "two.png", channels=[1, 3], per_row=2)
    width, height = Image.open(tmp_path / "two.png").size
    assert width > 2 * height  # two blocks side by side, each wider than high
    assert Image.open(tmp_path / "all.png").size[1] > height
    with pytest.raises(ValueError, match="empty"):
        save_atlas(atlas["4"], tmp_path / "none.png", channels=[])


def test_only_the_chosen_channels_are_projected(atlas_and_scan):
    model, images, atlas, top = atlas_and_scan
    some = project_top_activations(
        model, top, images, batch_size=5, channels={"4": [1, 3]}
    )
    assert torch.equal(some["0"].projections, atlas["0"].projections)  # not named
    for field in ("values", "images", "positions"):
        assert torch.equal(getattr(some["4"], field), getattr(atlas["4"], field))
    for field in ("projections", "patches"):
        chosen, full = getattr(some["4"], field), getattr(atlas["4"], field)
        torch.testing.assert_close(chosen[[1, 3]], full[[1, 3]])
        assert torch.all(chosen[[0, 2]] == 0)
    with pytest.raises(ValueError, match="channels of 4"):
        project_top_activations(model, top, images, channels={"4": [9]})
    with pytest.raises(ValueError, match="'5'"):  # a misspelt layer is not ignored
        project_top_activations(model, top, images, channels={"5": [1]})


@pytest.mark.parametrize(
    "chosen",
    [torch.tensor([1, 3]), torch.tensor([1, 3], dtype=torch.int32), np.array([1, 3])],
    ids=["tensor", "int32 tensor", "numpy array"],
)
def test_channels_may_be_an_integer_tensor_or_array(atlas_and_scan, chosen, tmp_path):
    model, images, atlas, top = atlas_and_scan
    some = project_top_activations(model, top, images, channels={"4": chosen})["4"]
    for field in ("projections", "patches"):
        projected, full = getattr(some, field), getattr(atlas["4"], field)
        torch.testing.assert_close(projected[[1, 3]], full[[1, 3]])
        assert torch.all(projected[[0, 2]] == 0)
    save_atlas(atlas["4"], tmp_path / "chosen.png", channels=chosen)
    save_atlas(atlas["4"], tmp_path / "listed.png", channels=[1, 3])
    with (
        Image.open(tmp_path / "chosen.png") as a,
        Image.open(tmp_path / "listed.png") as b,
    ):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match=r"in 0\.\.4, got tensor\(\[1\., 3\.\]\)"):
        save_atlas(atlas["4"], tmp_path / "a.png", channels=torch.tensor([1.0, 3.0]))


def test_an_atlas_of_distinct_images_holds_each_image_once_per_channel():
    model, images = tiny_model(), tiny_images()
    atlas = feature_atlas(model, [model[0]], images, k=4, distinct_images=True)["0"]
    with torch.no_grad():
        conv = model[0](images)
    expected = naive_distinct_top([(conv, torch.arange(len(images)))], 4)
    assert expected != naive_top([(conv, torch.arange(len(images)))], 4)
    found = [
        [(-v, i, r, c) for v, i, (r, c) in zip(*channel, strict=True)]
        for channel in zip(
            atlas.values.tolist(),
            atlas.images.tolist(),
            atlas.positions.tolist(),
            strict=True,
        )
    ]
    assert found == expected
    channel, rank = 2, 3  # a projection cut at its own image and position
    image = images[atlas.images[channel, rank]][None]
    where = atlas.positions[channel, rank][None]
    seed = position_seed([channel], where.tolist())
    full = reference_projection(model, image, 0, seed)
    expected_cut = cut_patches(full, atlas.field, where)[0]
    torch.testing.assert_close(atlas.projections[channel, rank], expected_cut)


def test_save_atlas_names_bad_channels_and_the_dict_of_all_layers(
    atlas_and_scan, tmp_path
):
    _, _, atlas, _ = atlas_and_scan
    count = atlas["4"].values.shape[0]
    for bad in (count, -1):  # past the end; -1 is not read as the last channel
        with pytest.raises(ValueError, match=rf"in 0\.\.{count - 1}, got \[{bad}\]"):
            save_atlas(atlas["4"], tmp_path / "a.png", channels=[bad])
    with pytest.raises(TypeError, match=r"dict of layers \['0', '4'\].*atlas\['0'\]"):
        save_atlas(atlas, tmp_path / "a.png")
    for per_row in (0, -1):  # 0 drew the default, -1 a RuntimeError
        with pytest.raises(
            ValueError, match=rf"per_row must be a positive int, got {per_row}"
        ):
            save_atlas(atlas["4"], tmp_path / "a.png", per_row=per_row)
    assert not (tmp_path / "a.png").exists()


@pytest.mark.parametrize("colours", [4, 5])
def test_save_atlas_refuses_images_of_other_than_one_or_three_channels(
    atlas_and_scan, tmp_path, colours
):
    """RGBA-like images gave a RuntimeError from inside torch.cat."""
    one = atlas_and_scan[2]["4"]
    many = dataclasses.replace(
        one,
        projections=one.projections.repeat(1, 1, colours, 1, 1),
        patches=one.patches.repeat(1, 1, colours, 1, 1),
    )
    with pytest.raises(
        ValueError, match=rf"1 or 3 channels, but the atlas holds {colours}"
    ):
        save_atlas(many, tmp_path / "a.png")
    three = dataclasses.replace(
        many, projections=many.projections[:, :, :3], patches=many.patches[:, :, :3]
    )
    save_atlas(three, tmp_path / "a.png")  # as the message says
    save_atlas(one, tmp_path / "b.png")
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "a.png")),
        np.asarray(Image.open(tmp_path / "b.png")),
    )


def test_projecting_over_another_dataset_names_the_missing_image(atlas_and_scan):
    model, images, atlas, top = atlas_and_scan
    last = max(int(top.entries(name).images.max()) for name in top.layers)
    with pytest.raises(ValueError, match=rf"image {last} .*has {last} items"):
        project_top_activations(model, top, images[:last])
    with pytest.raises(TypeError, match="top must be the TopKActivations"):
        project_top_activations(model, atlas, images)


class _RandomlyFlipped(torch.utils.data.Dataset):
    """Each image flipped left-right or not at random on every load, as a
    training transform does."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index]
        return image.flip(-1) if torch.rand(()) < 0.5 else image


def test_a_dataset_that_loads_other_pixels_again_is_named(recwarn):
    model, images = tiny_model(), tiny_images()
    layers = [model[4]]
    feature_atlas(model, layers, images, k=3, batch_size=5)
    assert not [w for w in recwarn if "loaded again" in str(w.message)]
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="layer '4': images loaded again give other"):
        feature_atlas(model, layers, _RandomlyFlipped(images), k=3, batch_size=5)
