import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import FashionMNIST

from lightning_zfnet.data import (
    ClutteredFashionMNISTDataModule,
    ClutteredImages,
    FashionMNISTDataModule,
    FlipShift,
    ImageNetDataModule,
    find_fashion_mnist,
)

from .helpers import fake_items, write_fake_fashion_mnist


def test_finds_data_already_in_root(fake_data_dir):
    assert (
        find_fashion_mnist(fake_data_dir, system_dirs=(), download=False)
        == fake_data_dir
    )


def test_unpacks_debian_style_gzipped_files(tmp_path):
    system = write_fake_fashion_mnist(tmp_path / "system", compress=True)
    root = tmp_path / "root"
    find_fashion_mnist(root, system_dirs=(system,), download=False)
    data = FashionMNIST(root, train=True)
    expected, labels = fake_items(256, seed=0)
    np.testing.assert_array_equal(data.data.numpy(), expected)
    np.testing.assert_array_equal(data.targets.numpy(), labels)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_in_the_data_dir_itself_come_before_the_system_copy(
    tmp_path, compress
):
    root = write_fake_fashion_mnist(tmp_path / "mine", compress=compress)
    system = write_fake_fashion_mnist(tmp_path / "system", n_train=128, compress=True)
    find_fashion_mnist(root, system_dirs=(system,), download=False)
    expected, labels = fake_items(256, seed=0)
    data = FashionMNIST(root, train=True)
    np.testing.assert_array_equal(data.data.numpy(), expected)
    np.testing.assert_array_equal(data.targets.numpy(), labels)


def test_error_names_every_place_tried(tmp_path, monkeypatch):
    def fail(self):
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(FashionMNIST, "download", fail)
    with pytest.raises(FileNotFoundError) as info:
        find_fashion_mnist(tmp_path / "root", system_dirs=(tmp_path / "debian",))
    message = str(info.value)
    assert str(tmp_path / "root" / "FashionMNIST" / "raw") in message
    assert str(tmp_path / "debian") in message
    assert "network unreachable" in message


def test_datamodule_never_downloads_in_init(tmp_path, monkeypatch):
    monkeypatch.setattr(
        FashionMNIST, "download", lambda self: pytest.fail("downloaded")
    )
    FashionMNISTDataModule(data_dir=str(tmp_path))


def test_fashion_mnist_module_splits_and_resizes(fake_data_dir):
    dm = FashionMNISTDataModule(
        str(fake_data_dir), image_size=64, batch_size=16, val_size=56
    )
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (200, 56, 64)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 64, 64) and y.shape == (16,)
    # The background (0) maps to -mean/std.
    assert torch.isclose(x.min(), torch.tensor(-dm.mean / dm.std), atol=1e-4)
    # Train and validation images are disjoint parts of the training file.
    train_ids = {dm.train_set.images[i].numpy().tobytes() for i in range(200)}
    val_ids = {dm.val_set.images[i].numpy().tobytes() for i in range(56)}
    assert not train_ids & val_ids


@pytest.mark.parametrize("classes", [None, [3, 7]])
def test_a_validation_split_as_large_as_the_training_set_is_refused(
    classes, fake_data_dir
):
    """Before any split is made (check_data, which the zfnet command calls) and
    by setup, as a Trainer calls it."""
    labels = FashionMNIST(str(fake_data_dir), train=True).targets
    size = (
        len(labels) if classes is None else int(sum(labels == c for c in classes).sum())
    )
    refused = FashionMNISTDataModule(str(fake_data_dir), val_size=size, classes=classes)
    for check in (refused.check_data, refused.setup):
        with pytest.raises(ValueError, match=f"has {size} images; give a val_size "
                           f"from 1 to {size - 1}$"):  # fmt: skip
            check()
    largest = FashionMNISTDataModule(
        str(fake_data_dir), val_size=size - 1, classes=classes
    )
    largest.check_data()
    largest.setup("fit")
    assert (len(largest.train_set), len(largest.val_set)) == (1, size - 1)


def test_cluttered_boxes_contain_the_item():
    images, labels = fake_items(40, seed=3)
    data = ClutteredImages(
        torch.from_numpy(images), torch.from_numpy(labels), canvas=64
    )
    for i in range(40):
        canvas, (x0, y0, x1, y1) = data.compose(i)
        rows, cols = np.nonzero(images[i])
        item = images[i, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert (y1 - y0, x1 - x0) == item.shape
        # Overlaps keep the brighter pixel, so the box holds at least the item's pixels.
        assert np.all(canvas[y0:y1, x0:x1] >= item)


def test_cluttered_without_fragments_has_nothing_outside_the_box():
    images, labels = fake_items(20, seed=4)
    data = ClutteredImages(
        torch.from_numpy(images), torch.from_numpy(labels), fragments=0
    )
    for i in range(20):
        canvas, (x0, y0, x1, y1) = data.compose(i)
        canvas[y0:y1, x0:x1] = 0
        assert canvas.sum() == 0


def test_cluttered_is_deterministic_and_has_clutter():
    images, labels = fake_items(20, seed=5)
    a = ClutteredImages(torch.from_numpy(images), torch.from_numpy(labels), seed=1)
    b = ClutteredImages(torch.from_numpy(images), torch.from_numpy(labels), seed=1)
    c = ClutteredImages(torch.from_numpy(images), torch.from_numpy(labels), seed=2)
    for i in range(20):
        torch.testing.assert_close(a[i][0], b[i][0])
        assert torch.equal(a[i][2], b[i][2])
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(20))
    outside = []
    for i in range(20):
        canvas, (x0, y0, x1, y1) = a.compose(i)
        canvas[y0:y1, x0:x1] = 0
        outside.append(canvas.sum())
    assert sum(s > 0 for s in outside) >= 15


def test_cluttered_module_batches_carry_boxes(fake_data_dir):
    dm = ClutteredFashionMNISTDataModule(str(fake_data_dir), batch_size=8, val_size=56)
    dm.setup("fit")
    x, y, box = next(iter(dm.val_dataloader()))
    assert x.shape == (8, 1, 64, 64) and box.shape == (8, 4)
    assert torch.all((box[:, :2] >= 0) & (box[:, 2:] <= 64) & (box[:, 2:] > box[:, :2]))


def shifted_by_hand(image, box, flip, dy, dx, fill):
    """A naive reference: flip, then move every pixel by (dy, dx) one by one."""
    height, width = image.shape[-2:]
    source = image.flip(-1) if flip else image
    x0, y0, x1, y1 = box.tolist()
    if flip:
        x0, x1 = width - x1, width - x0
    out = torch.full_like(image, fill)
    for r in range(height):
        for c in range(width):
            if 0 <= r + dy < height and 0 <= c + dx < width:
                out[..., r + dy, c + dx] = source[..., r, c]
    box = [x0 + dx, y0 + dy, x1 + dx, y1 + dy]
    sides = [width, height, width, height]
    clipped = [min(max(v, 0), s) for v, s in zip(box, sides, strict=True)]
    return out, torch.tensor(clipped)


def test_flip_shift_is_a_flip_and_a_shift_of_the_fixed_canvas():
    images, labels = fake_items(6, seed=2)
    canvases = ClutteredImages(
        torch.from_numpy(images), torch.from_numpy(labels), canvas=32, seed=0
    )
    augmented = FlipShift(canvases, max_shift=2, fill=-0.5)
    torch.manual_seed(0)
    seen = set()
    for index in list(range(6)) * 4:
        image, label, box = augmented[index]
        original, original_label, original_box = canvases[index]
        assert label == original_label
        matches = [
            (flip, dy, dx)
            for flip in (False, True)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if all(
                torch.equal(a, b)
                for a, b in zip(
                    (image, box),
                    shifted_by_hand(original, original_box, flip, dy, dx, -0.5),
                    strict=True,
                )
            )
        ]
        assert matches, f"draw {index} is no flip and shift of its canvas"
        seen.update(matches)
    assert {flip for flip, _, _ in seen} == {False, True} and len(seen) > 8


def test_only_the_training_canvases_are_augmented(fake_data_dir):
    dm = ClutteredFashionMNISTDataModule(str(fake_data_dir), val_size=56, augment=True)
    dm.setup("fit")
    assert isinstance(dm.train_set, FlipShift) and dm.train_set.max_shift == 4
    assert isinstance(dm.val_set, ClutteredImages)
    plain = ClutteredFashionMNISTDataModule(str(fake_data_dir), val_size=56)
    plain.setup("fit")
    assert isinstance(plain.train_set, ClutteredImages)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n01", "n02", "n03"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, size=(280, 300, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def test_imagenet_module_crops(image_folder):
    dm = ImageNetDataModule(str(image_folder), batch_size=6, num_workers=0)
    assert dm.num_classes == 3
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (6, 3, 224, 224) and sorted(y.tolist()) == [0, 0, 1, 1, 2, 2]
    val_x, _ = next(iter(dm.val_dataloader()))
    test_x, _ = next(iter(dm.test_dataloader()))
    assert test_x.shape == (6, 10, 3, 224, 224)
    # TenCrop: 4 corners and the centre, then the same of the flipped image.
    torch.testing.assert_close(test_x[:, 4], val_x)
    torch.testing.assert_close(test_x[:, 9], val_x.flip(-1))
    torch.testing.assert_close(
        test_x[:, 5], test_x[:, 1].flip(-1)
    )  # flipped TL = mirrored TR


def test_imagenet_module_names_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        _ = ImageNetDataModule(str(tmp_path)).num_classes


def test_cluttered_module_comes_back_from_a_checkpoint_with_its_arguments(tiny_demo):
    checkpoint = tiny_demo[1]["checkpoint"]
    saved = torch.load(checkpoint, weights_only=True)["datamodule_hyper_parameters"]
    dm = ClutteredFashionMNISTDataModule.from_checkpoint(checkpoint, num_workers=3)
    for key in ("data_dir", "image_size", "val_size", "seed", "augment", "item_size"):
        assert getattr(dm, key) == saved[key], key
    assert saved["num_workers"] != 3 and dm.num_workers == 3  # the override wins
