"""Occlusion maps as pictures: image-size maps, overlays and the Fig. 7 row."""

import matplotlib
import pytest
import torch
from PIL import Image

from captum_deconvnet import (
    OcclusionSensitivity,
    occlusion_figure,
    save_overlay,
    upsample_grid,
)
from tests.test_occlusion import images, small_cnn

matplotlib.use("Agg")


def test_each_pixel_takes_the_position_centred_nearest_to_it():
    grid = torch.arange(12.0).reshape(1, 3, 4)
    window, stride = (4, 3), (2, 3)
    up = upsample_grid(grid, (8, 13), window, stride)
    assert up.shape == (1, 8, 13)
    for y in range(8):
        for x in range(13):
            distances = {
                (r, c): abs(y - (r * stride[0] + 1.5)) + abs(x - (c * stride[1] + 1))
                for r in range(3)
                for c in range(4)
            }
            nearest = min(distances.values())
            # ties between two centres may go either way; the value is one of them
            candidates = {grid[0, r, c].item() for (r, c), d in distances.items()
                          if d == nearest}  # fmt: skip
            assert up[0, y, x].item() in candidates


def test_class_maps_stay_classes():
    grid = torch.tensor([[[3, 7], [1, 3]]])
    up = upsample_grid(grid, (10, 10), (6, 6), (4, 4))
    assert up.dtype == grid.dtype and set(up.unique().tolist()) == {1, 3, 7}


def test_overlay_is_saved_and_sizes_are_checked(tmp_path):
    image = torch.rand(3, 12, 12)
    save_overlay(tmp_path / "overlay.png", image, torch.rand(12, 12), title="p(cat)")
    with Image.open(tmp_path / "overlay.png") as png:
        png.verify()
    with pytest.raises(ValueError, match="upsample_grid"):
        save_overlay(tmp_path / "bad.png", image, torch.rand(3, 3))


@pytest.mark.parametrize("with_layer", [True, False])
def test_figure_has_a_panel_for_each_map(with_layer, tmp_path):
    model, x = small_cnn(), images(2)
    layer = model[3] if with_layer else None
    maps = OcclusionSensitivity(model).sensitivity_maps(x, 4, 2, layer=layer)
    projection = torch.randn(3, 12, 12) if with_layer else None
    names = [f"class {k}" for k in range(5)]
    figure = occlusion_figure(x[1], maps, 1, projection, class_names=names)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    expected = (
        ["(a)", "(b)", "(c)", "(d)", "(e)"] if with_layer else ["(a)", "(d)", "(e)"]
    )
    assert [t[:3] for t in titles] == expected
    assert f"p(class {int(maps.target[1])})" in titles[-2]
    (last,) = [ax for ax in figure.axes if ax.get_title().startswith("(e)")]
    legend = last.get_legend()
    shown = {t.get_text() for t in legend.get_texts()}
    assert shown == {names[k] for k in maps.top_class[1].unique().tolist()}
    figure.savefig(tmp_path / "fig7.png")


def test_figure_names_too_few_class_names_and_a_projection_of_another_size():
    """Too few names gave an IndexError; a projection of another size was drawn."""
    model, x = small_cnn(), images(2)
    maps = OcclusionSensitivity(model).sensitivity_maps(x, 4, 2, layer=model[3])
    shown = max(int(maps.top_class[0].max()), int(maps.target[0]))
    names = [f"class {k}" for k in range(shown)]  # one too few
    with pytest.raises(ValueError, match=rf"{shown} names, .* hold class {shown}"):
        occlusion_figure(x[0], maps, 0, class_names=names)
    occlusion_figure(x[0], maps, 0, class_names=[*names, "last"])
    with pytest.raises(ValueError, match=r"projection \(3, 6, 6\) and image"):
        occlusion_figure(x[0], maps, 0, projection=torch.randn(3, 6, 6))
