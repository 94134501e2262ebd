import pytest
import torch
from PIL import Image
from torch import nn

from captum_deconvnet import invariance_curves, plot_invariance, transform

from .test_deconvnet_contract import snapshot


def small_classifier() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(inplace=True),  # rewrites the conv's output in place
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 6 * 6, 8),
        nn.ReLU(),
        nn.Dropout(),
        nn.Linear(8, 4),
    )


def shifted_down(x: torch.Tensor, pixels: int, fill: float) -> torch.Tensor:
    out = torch.full_like(x, fill)
    if pixels >= 0:
        out[..., pixels:, :] = x[..., : x.shape[-2] - pixels, :]
    else:
        out[..., :pixels, :] = x[..., -pixels:, :]
    return out


def test_transforms_move_scale_and_turn_as_by_hand():
    x = torch.randn(2, 1, 6, 6)
    close = torch.testing.assert_close
    close(transform(x, "translation", 2, -1.0), shifted_down(x, 2, -1.0))
    close(transform(x, "translation", -3, 0.0), shifted_down(x, -3, 0.0))
    close(transform(x, "rotation", 90), torch.rot90(x, 1, (-2, -1)))
    close(transform(x, "scale", 1.0), x)
    with pytest.raises(ValueError, match="shear"):
        transform(x, "shear", 1.0)
    with pytest.raises(ValueError, match="whole pixels, got 0.5"):
        transform(x, "translation", 0.5)


def test_curves_equal_a_direct_computation():
    model = small_classifier().train()
    before = snapshot(model)
    x, labels = torch.randn(3, 1, 12, 12), torch.tensor([0, 2, 3])
    shifts, fill = [-2, 0, 3], -0.5
    with pytest.warns(UserWarning, match=r"6 \(Dropout\)"):
        curves = invariance_curves(
            model, x, labels, [model[0], model[5]], shifts, [1.0, 1.4], [0, 90], fill
        )
    assert snapshot(model) == before  # train mode back, no hooks left
    model.eval()
    with torch.no_grad():
        for j, pixels in enumerate(shifts):
            moved = shifted_down(x, pixels, fill)
            for name, part in (("0", model[:1]), ("5", model[:6])):
                expected = (part(moved) - part(x)).flatten(1).norm(dim=1)
                distances = curves["translation"].distances[name][:, j]
                torch.testing.assert_close(distances, expected)
            expected = model(moved).softmax(1)[range(3), labels]
            torch.testing.assert_close(
                curves["translation"].probabilities[:, j], expected
            )
        turned = torch.rot90(x, 1, (-2, -1))
        expected = (model[:6](turned) - model[:6](x)).norm(dim=1)
        distances = curves["rotation"].distances["5"][:, 1]
        torch.testing.assert_close(distances, expected)
    assert torch.all(curves["scale"].distances["0"][:, 0] < 1e-4)  # scale 1
    assert curves["scale"].amounts.tolist() == [1.0, 1.4]  # as given, not float32
    assert curves["rotation"].probabilities.shape == (3, 2)


def test_sweeps_given_as_tensors_equal_sweeps_given_as_lists():
    """torch.arange shifts stopped at round(tensor), a TypeError."""
    model = small_classifier().eval()
    x, labels = torch.randn(2, 1, 12, 12), torch.tensor([1, 2])
    lists = ([-2, 0, 2], [1.0, 1.25], [0.0, 90.0])
    tensors = (
        torch.arange(-2, 3, 2),
        torch.tensor([1.0, 1.25]),
        torch.tensor(lists[2]),
    )
    by_list = invariance_curves(model, x, labels, [model[0]], *lists)
    by_tensor = invariance_curves(model, x, labels, [model[0]], *tensors)
    for kind, curves in by_list.items():
        assert torch.equal(by_tensor[kind].amounts, curves.amounts)
        assert torch.equal(by_tensor[kind].distances["0"], curves.distances["0"])
        assert torch.equal(by_tensor[kind].probabilities, curves.probabilities)
    moved = transform(x, "translation", torch.tensor(2))
    torch.testing.assert_close(moved, shifted_down(x, 2, 0.0))
    with pytest.raises(ValueError, match="whole pixels, got 0.5"):
        transform(x, "translation", torch.tensor(0.5))


def test_default_sweeps_and_the_plot(tmp_path):
    model = small_classifier().eval()
    x, labels = torch.randn(2, 1, 12, 12), torch.tensor([1, 2])
    curves = invariance_curves(model, x, labels, [model[0], model[5]])
    assert curves["translation"].amounts.tolist() == [-3, -2, -1, 0, 1, 2, 3]
    assert len(curves["scale"].amounts) == 9 and len(curves["rotation"].amounts) == 36
    plot_invariance(curves, tmp_path / "invariance.png")
    assert Image.open(tmp_path / "invariance.png").size == (960, 780)


@pytest.mark.parametrize(
    ("labels", "sweeps", "word"),
    [
        ([0, 2, 7], {}, "classes"),  # the model has 4
        ([0, -1, 2], {}, "class indices"),
        ([0.0, 1.0, 2.0], {}, "class indices"),
        ([0, 1, 2], {"angles": []}, "rotation sweep"),
        ([0, 1, 2], {"scales": [1.0, float("inf")]}, "scale sweep"),
        ([0, 1, 2], {"scales": [0.0, 1.0]}, "positive"),
    ],
)
def test_bad_labels_and_sweeps_are_named(labels, sweeps, word):
    model, x = small_classifier().eval(), torch.randn(3, 1, 12, 12)
    with pytest.raises(ValueError, match=word):
        invariance_curves(model, x, torch.tensor(labels), [model[0]], **sweeps)
    with pytest.raises(ValueError, match="empty"):
        invariance_curves(model, x[:0], torch.tensor([]).long(), [model[0]])


def test_images_as_a_list_and_no_curves_are_named(tmp_path):
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(TypeError, match=r"images must be a tensor .*got list"):
        transform(x.tolist(), "rotation", 1)
    with pytest.raises(ValueError, match="curves is empty.*invariance_curves"):
        plot_invariance({}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_labels_of_any_integer_dtype_are_class_indices(dtype):
    model = small_classifier().eval()
    x, labels = torch.randn(3, 1, 12, 12), torch.tensor([0, 2, 3], dtype=dtype)
    curves = invariance_curves(model, x, labels, [model[0]], [0, 2], [1.0], [0])
    with torch.no_grad():  # the labels' probabilities, picked by hand
        expected = model(shifted_down(x, 2, 0.0)).softmax(1)[range(3), [0, 2, 3]]
    torch.testing.assert_close(curves["translation"].probabilities[:, 1], expected)


def test_transform_takes_any_leading_dimensions_and_says_so():
    image = torch.randn(3, 6, 6)  # one image, no batch
    torch.testing.assert_close(
        transform(image, "rotation", 90), torch.rot90(image, 1, (-2, -1))
    )
    with pytest.raises(TypeError, match=r"tensor \(\.\.\., H, W\).* got Image"):
        transform(Image.new("L", (6, 6)), "rotation", 90)
