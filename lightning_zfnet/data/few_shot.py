"""Target tasks with a budget of labelled images per class, for transfer (Sec. 5.2).

The paper draws 15 or 30 training images per class of Caltech-101 (15 to 60 of
Caltech-256) at random, tests on up to 50 of the rest per class and repeats the draw
(5 folds). :class:`LabelBudgetDataModule` is that protocol over any labelled pool;
:class:`FewShotImageFolderDataModule` serves a folder of class folders such as
Caltech-101's ``101_ObjectCategories``, :class:`FewShotFashionMNISTDataModule` the
Fashion-MNIST classes a source network did not see.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes

from .base import SplitDataModule
from .fashion_mnist import (
    FashionMNISTDataModule,
    ResizedImages,
    check_classes,
    find_fashion_mnist,
    load_fashion_mnist,
    select_classes,
)
from .imagenet import paper_transform

__all__ = [
    "FewShotFashionMNISTDataModule",
    "FewShotImageFolderDataModule",
    "LabelBudgetDataModule",
    "draw_per_class",
]


def draw_per_class(
    labels: Tensor,
    per_class: int,
    seed: int,
    test_per_class: int | None = None,
    names: Sequence[object] | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw ``per_class`` training examples of every class, and test examples from
    the rest.

    Each class's indices are put in a random order (one generator seeded with
    ``seed`` for the whole draw); the first ``per_class`` train, the next
    ``test_per_class`` (all the rest when None) test.

    Args:
        labels: ``(N,)`` int class of each example of the pool, classes ``0..C-1``.
        per_class: labelled training examples per class.
        seed: the draw; each seed gives another training set (the paper's folds).
        test_per_class: most test examples per class (Caltech-101's protocol: 50).
        names: the class of each label as the user knows it (the dataset's own
            label, a folder's name), by which an error names a class; None: the
            labels themselves.

    Returns:
        ``(train, test)``: sorted int64 indices into the pool, disjoint.

    Raises:
        ValueError: if ``per_class`` or ``test_per_class`` is not positive, or a
            class has no example left to test on.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be positive, got {per_class}")
    if test_per_class is not None and test_per_class < 1:
        raise ValueError(f"test_per_class must be positive, got {test_per_class}")
    labels = torch.as_tensor(labels)
    counts = torch.bincount(labels)
    if counts.min() <= per_class:
        smallest = int(counts.argmin())
        known = f"{smallest}"
        if names is not None:
            known = f"{names[smallest]!r} (label {smallest} here)"
        fewest = int(counts.min())
        advice = (
            f"give a per_class below {fewest}"
            if fewest > 1  # per_class is at least 1
            else "give the class more examples, or leave it out"
        )
        raise ValueError(
            f"class {known} has {fewest} examples: too few for "
            f"per_class={per_class} and a test example; {advice}"
        )
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for label in range(len(counts)):
        members = (labels == label).nonzero().flatten()
        order = members[torch.randperm(len(members), generator=generator)]
        train.append(order[:per_class])
        end = None if test_per_class is None else per_class + test_per_class
        test.append(order[per_class:end])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


class LabelBudgetDataModule(SplitDataModule):
    """A labelled pool of which each draw trains on ``per_class`` images per class
    and tests on the rest (see :func:`draw_per_class`).

    There is no validation split: with a few labels per class none can be spared,
    so train for a fixed schedule (``limit_val_batches: 0``). Subclasses give the
    pool (:meth:`pool_labels`) and the dataset of a split (:meth:`make_split`), and
    define ``num_classes``, ``in_channels`` and ``image_size``.

    Args:
        per_class: labelled training images per class.
        seed: the draw of training images (the paper's folds).
        test_per_class: most test images per class; None tests on all the rest.
        batch_size: batch size per process.
        num_workers: data loader workers per process.

    Raises:
        ValueError: for a ``per_class`` or ``test_per_class`` below 1; in
            :meth:`check_data` and ``setup``, for a ``per_class`` that leaves a
            class of the pool no test image.
    """

    def __init__(
        self,
        per_class: int,
        seed: int,
        test_per_class: int | None,
        batch_size: int,
        num_workers: int,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if per_class < 1:
            raise ValueError(f"per_class must be positive, got {per_class}")
        if test_per_class is not None and test_per_class < 1:
            raise ValueError(f"test_per_class must be positive, got {test_per_class}")
        self.per_class = per_class
        self.seed = seed
        self.test_per_class = test_per_class

    def pool_labels(self) -> Tensor:
        """``(N,)`` the class of every image of the pool."""
        raise NotImplementedError

    def make_split(self, indices: Tensor, split: str) -> Dataset:
        """The dataset of pool images ``indices`` for ``split`` (train, val, test)."""
        raise NotImplementedError

    def class_names(self) -> Sequence[object] | None:
        """Each label's class as the user knows it (see :func:`draw_per_class`);
        None: the labels themselves."""
        return None

    def check_data(self) -> None:
        draw_per_class(
            self.pool_labels(), self.per_class, self.seed, names=self.class_names()
        )

    def setup(self, stage: str | None = None) -> None:
        train, test = draw_per_class(
            self.pool_labels(),
            self.per_class,
            self.seed,
            self.test_per_class,
            self.class_names(),
        )
        self.train_set = self.make_split(train, "train")
        self.val_set = self.make_split(train[:0], "val")
        self.test_set = self.make_split(test, "test")


class _FolderSplit(Dataset):
    """Images ``indices`` of an ``ImageFolder``, each through ``transform``."""

    def __init__(self, folder: ImageFolder, indices: Tensor, transform: Any) -> None:
        self.folder, self.indices, self.transform = folder, indices.tolist(), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.folder.samples[self.indices[index]]
        return self.transform(self.folder.loader(path)), label


class FewShotImageFolderDataModule(LabelBudgetDataModule):
    """A folder of class folders, ``data_dir/<class>/*`` (Caltech-101's
    ``101_ObjectCategories``, Caltech-256's ``256_ObjectCategories``), with
    ``per_class`` training images per class and up to ``test_per_class`` test images.

    Images are preprocessed as for ImageNet
    (:func:`~lightning_zfnet.data.imagenet.paper_transform`), so an ImageNet-trained
    ZFNet sees what it was trained on. Remove folders that are not classes (such as
    Caltech-101's ``BACKGROUND_Google``) or keep them as a class, as your protocol
    says.

    Args:
        data_dir: the folder of class folders.
        per_class, seed, test_per_class, batch_size, num_workers: as for
            :class:`LabelBudgetDataModule` (the paper: 15 or 30, 5 seeds, 50).
        image_size: side of the crops.
        resize: side the images are resized and centre-cropped to first.
        ten_crop_test: average the 10 crops at test time.
    """

    in_channels = 3

    def __init__(
        self,
        data_dir: str,
        per_class: int = 30,
        seed: int = 0,
        test_per_class: int | None = 50,
        batch_size: int = 128,
        num_workers: int = 8,
        image_size: int = 224,
        resize: int = 256,
        ten_crop_test: bool = False,
    ) -> None:
        super().__init__(per_class, seed, test_per_class, batch_size, num_workers)
        if image_size > resize:
            raise ValueError(f"image_size {image_size} is larger than resize {resize}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.image_size = image_size
        self.resize = resize
        self.ten_crop_test = ten_crop_test
        self._folder: ImageFolder | None = None

    @property
    def num_classes(self) -> int:
        """Number of class folders in ``data_dir``."""
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"no folder {os.fspath(self.data_dir)!r}")
        return len(find_classes(self.data_dir)[0])

    def _pool(self) -> ImageFolder:
        if self._folder is None:
            self._folder = ImageFolder(self.data_dir)
        return self._folder

    def pool_labels(self) -> Tensor:
        return torch.tensor(self._pool().targets)

    def class_names(self) -> list[str]:
        """The class folders' names."""
        return self._pool().classes

    def make_split(self, indices: Tensor, split: str) -> Dataset:
        transform = paper_transform(
            split, self.image_size, self.resize, self.ten_crop_test
        )
        return _FolderSplit(self._pool(), indices, transform)


class FewShotFashionMNISTDataModule(LabelBudgetDataModule):
    """Fashion-MNIST's ``classes`` (those a source network was not trained on, see
    ``FashionMNISTDataModule(classes=...)``), with ``per_class`` labelled images
    each: a target of the source's domain with new categories, as Caltech-101 is
    for an ImageNet network.

    The pool is the official training images of ``classes``, labelled ``0..k-1`` in
    the given order, resized and normalised as the source's images were.

    Args:
        classes: the target's Fashion-MNIST classes.
        data_dir, download: as for
            :class:`~lightning_zfnet.data.FashionMNISTDataModule`.
        per_class, seed, test_per_class, batch_size, num_workers: as for
            :class:`LabelBudgetDataModule`.
        image_size: side of the images served.
    """

    in_channels = 1
    mean, std = FashionMNISTDataModule.mean, FashionMNISTDataModule.std

    def __init__(
        self,
        classes: list[int],
        data_dir: str = "data",
        per_class: int = 5,
        seed: int = 0,
        test_per_class: int | None = 50,
        image_size: int = 64,
        batch_size: int = 64,
        num_workers: int = 0,
        download: bool = True,
    ) -> None:
        super().__init__(per_class, seed, test_per_class, batch_size, num_workers)
        check_classes(classes)
        self.save_hyperparameters()
        self.classes = list(classes)
        self.data_dir = data_dir
        self.image_size = image_size
        self.download = download
        self._pool: tuple[Tensor, Tensor] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def prepare_data(self) -> None:
        find_fashion_mnist(self.data_dir, download=self.download)

    def check_data(self) -> None:
        try:
            find_fashion_mnist(self.data_dir, download=False)
        except FileNotFoundError:
            return  # prepare_data downloads it, and setup checks it then
        super().check_data()

    def _images(self) -> tuple[Tensor, Tensor]:
        if self._pool is None:
            find_fashion_mnist(self.data_dir, download=False)
            images, labels = load_fashion_mnist(self.data_dir, train=True)
            self._pool = select_classes(images, labels, self.classes)
        return self._pool

    def pool_labels(self) -> Tensor:
        return self._images()[1]

    def class_names(self) -> list[int]:
        """Fashion-MNIST's labels of the classes, relabelled ``0..k-1`` here."""
        return self.classes

    def make_split(self, indices: Tensor, split: str) -> Dataset:
        images, labels = self._images()
        return ResizedImages(
            images[indices], labels[indices], self.image_size, self.mean, self.std
        )
