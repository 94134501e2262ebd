"""Target data with a budget of labels per class: the draw, digits, class folders."""

import sys
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import FashionMNIST

from lightning_zfnet.data import (
    DigitsDataModule,
    FashionMNISTDataModule,
    FewShotFashionMNISTDataModule,
    FewShotImageFolderDataModule,
    draw_per_class,
)
from lightning_zfnet.data.fashion_mnist import select_classes


def test_each_class_gets_its_budget_and_the_rest_tests():
    labels = torch.tensor([0] * 10 + [1] * 4 + [2] * 7)[torch.randperm(21)]
    train, test = draw_per_class(labels, per_class=3, seed=5)
    assert Counter(labels[train].tolist()) == {0: 3, 1: 3, 2: 3}
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(21))
    capped = draw_per_class(labels, per_class=3, seed=5, test_per_class=2)[1]
    assert Counter(labels[capped].tolist()) == {0: 2, 1: 1, 2: 2}


def test_draws_repeat_per_seed_and_differ_between_seeds():
    labels = torch.arange(200) % 4
    first = draw_per_class(labels, 5, seed=0)[0]
    assert torch.equal(first, draw_per_class(labels, 5, seed=0)[0])
    others = [draw_per_class(labels, 5, seed=s)[0] for s in range(1, 4)]
    assert all(not torch.equal(first, other) for other in others)


def test_a_class_without_enough_examples_is_named():
    with pytest.raises(ValueError, match="class 1 has 2 examples"):
        draw_per_class(torch.tensor([0, 0, 0, 1, 1]), per_class=2, seed=0)
    with pytest.raises(ValueError, match="per_class"):
        draw_per_class(torch.tensor([0, 1]), per_class=0, seed=0)
    # one example, or none (label 1 unused): no per_class leaves one to test
    for labels in ([0, 0, 0, 1], [0, 0, 0, 2, 2, 2]):
        with pytest.raises(ValueError, match="class 1 has [01] examples") as info:
            draw_per_class(torch.tensor(labels), per_class=1, seed=0)
        assert str(info.value).endswith("give the class more examples, or leave it out")


def test_a_budget_that_leaves_a_class_nothing_to_test_is_refused_before_setup():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    smallest = int(np.bincount(load_digits().target).min())
    data = DigitsDataModule(per_class=smallest)
    for check in (data.check_data, data.setup):
        with pytest.raises(ValueError, match=f"give a per_class below {smallest}$"):
            check()
    DigitsDataModule(per_class=smallest - 1).check_data()
    with pytest.raises(ValueError, match="test_per_class must be positive, got 0"):
        DigitsDataModule(test_per_class=0)


def test_digits_serve_the_budget_at_the_source_size():
    pytest.importorskip("sklearn")
    data = DigitsDataModule(per_class=2, seed=1, image_size=64)
    data.setup("fit")
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (20, 1, 64, 64) and sorted(y.tolist()) == sorted(
        list(range(10)) * 2
    )
    assert len(data.test_set) == 1797 - 20 and len(data.val_set) == 0
    pool = torch.cat([data.train_set.tensors[0], data.test_set.tensors[0]])
    assert pool.mean().item() == pytest.approx(0.0, abs=0.05)  # normalised


def test_digits_without_scikit_learn_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"zfnet-toolkit\[experiments\]"):
        DigitsDataModule().prepare_data()


def test_class_folders_are_drawn_per_class(tmp_path):
    rng = np.random.default_rng(0)
    for name, count in (("ant", 5), ("bee", 4), ("cat", 6)):
        (tmp_path / name).mkdir()
        for i in range(count):
            pixels = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    data = FewShotImageFolderDataModule(
        str(tmp_path),
        per_class=2,
        test_per_class=2,
        image_size=32,
        resize=36,
        batch_size=4,
        num_workers=0,
    )
    assert data.num_classes == 3
    data.setup("fit")
    assert len(data.train_set) == 6 and len(data.test_set) == 6
    x, y = data.train_set[0]
    assert x.shape == (3, 32, 32) and y in (0, 1, 2)
    labels = [data.test_set[i][1] for i in range(len(data.test_set))]
    assert Counter(labels) == {0: 2, 1: 2, 2: 2}


def test_select_classes_keeps_and_relabels_in_the_given_order():
    images = torch.arange(5)[:, None, None].expand(5, 2, 2)
    labels = torch.tensor([3, 1, 3, 7, 9])
    kept, relabelled = select_classes(images, labels, [7, 3])
    assert kept[:, 0, 0].tolist() == [0, 2, 3]
    assert relabelled.tolist() == [1, 1, 0]
    for bad in ([], [3, 3], [10]):
        with pytest.raises(ValueError, match="classes"):
            select_classes(images, labels, bad)


def test_a_source_on_some_classes_leaves_the_others_to_a_target(fake_data_dir):
    source = FashionMNISTDataModule(str(fake_data_dir), val_size=20, classes=[0, 1, 2])
    source.setup("fit")
    assert source.num_classes == 3
    assert set(source.train_set.labels.tolist()) <= {0, 1, 2}
    target = FewShotFashionMNISTDataModule(
        [5, 6, 7, 8, 9], str(fake_data_dir), per_class=2, test_per_class=3
    )
    target.setup("fit")
    assert target.num_classes == 5
    assert Counter(target.train_set.labels.tolist()) == {c: 2 for c in range(5)}
    assert Counter(target.test_set.labels.tolist()) == {c: 3 for c in range(5)}
    # the pool is Fashion-MNIST's training images of classes 5-9, labelled 0-4
    raw = FashionMNIST(str(fake_data_dir), train=True)
    wanted = raw.targets >= 5
    assert torch.equal(target.pool_labels(), raw.targets[wanted] - 5)
    assert target.train_set[0][0].shape == (1, 64, 64)
