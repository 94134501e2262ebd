"""ImageNet (or any ImageFolder tree) with the paper's crops."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes

from .base import SplitDataModule

__all__ = ["ImageNetDataModule", "StackCrops", "paper_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class StackCrops:
    """Turn a tuple of PIL crops into one normalised ``(crops, C, H, W)`` tensor."""

    def __init__(self, normalize: T.Normalize) -> None:
        self.to_tensor, self.normalize = T.ToTensor(), normalize

    def __call__(self, crops: tuple) -> torch.Tensor:
        return torch.stack([self.normalize(self.to_tensor(c)) for c in crops])


def paper_transform(
    split: str, image_size: int, resize: int, ten_crop_test: bool
) -> T.Compose:
    """Sec. 3's preprocessing of ``split`` (``"train"``, ``"val"`` or ``"test"``).

    The shorter side is resized to ``resize`` and the centre square kept; training
    takes a random ``image_size`` crop and a random horizontal flip, validation the
    centre crop, testing the centre crop or (``ten_crop_test``) the four corners and
    the centre, each also flipped, stacked to ``(10, 3, image_size, image_size)``.
    Pixels are normalised with ImageNet's mean and std.
    """
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    squared = [T.Resize(resize), T.CenterCrop(resize)]
    if split == "train":
        crop = [T.RandomCrop(image_size), T.RandomHorizontalFlip()]
    elif split == "test" and ten_crop_test:
        return T.Compose([*squared, T.TenCrop(image_size), StackCrops(normalize)])
    else:
        crop = [T.CenterCrop(image_size)]
    return T.Compose([*squared, *crop, T.ToTensor(), normalize])


class ImageNetDataModule(SplitDataModule):
    """ImageFolder splits under ``data_dir``: ``train/<class>/*``, ``val/<class>/*``.

    As in Sec. 3 of the paper: the shorter side is resized to ``resize`` and the centre
    ``resize`` square kept; training takes a random ``image_size`` crop and a random
    horizontal flip, validation the centre crop, and testing (``ten_crop_test``) the
    four corners and the centre, each also flipped, whose probabilities the model
    averages. Pixels are normalised with ImageNet's mean and std.

    Args:
        data_dir: root holding the split folders.
        batch_size: batch size per process (the global batch is this x devices x nodes).
        num_workers: data loader workers per process.
        image_size: side of the crops.
        resize: side the images are resized and centre-cropped to first.
        ten_crop_test: 10-crop testing; otherwise the test split uses the centre crop.
        test_split: folder used for testing (ImageNet's test labels are not public).

    Raises:
        ValueError: for an ``image_size`` above ``resize``; in :meth:`check_data`
            and ``setup``, when the class folders of ``val`` or ``test_split``
            differ from those of ``train``.
    """

    in_channels = 3

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 128,
        num_workers: int = 8,
        image_size: int = 224,
        resize: int = 256,
        ten_crop_test: bool = True,
        test_split: str = "val",
    ) -> None:
        super().__init__(batch_size, num_workers)
        if image_size > resize:
            raise ValueError(f"image_size {image_size} is larger than resize {resize}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.image_size, self.resize = image_size, resize
        self.ten_crop_test, self.test_split = ten_crop_test, test_split

    @property
    def num_classes(self) -> int:
        """Number of class folders in the training split."""
        return len(find_classes(self._split_dir("train"))[0])

    def _split_dir(self, split: str) -> Path:
        path = self.data_dir / split
        if not path.is_dir():
            raise FileNotFoundError(
                f"no {split!r} folder in {os.fspath(self.data_dir)!r}"
            )
        return path

    def transform(self, split: str) -> T.Compose:
        """The transform of ``split``: ``"train"``, ``"val"`` or ``"test"``."""
        return paper_transform(split, self.image_size, self.resize, self.ten_crop_test)

    def check_data(self) -> None:
        classes = find_classes(self._split_dir("train"))[0]
        for folder in ("val", self.test_split):
            if find_classes(self._split_dir(folder))[0] != classes:
                raise ValueError(
                    f"classes of {folder!r} differ from those of 'train' in "
                    f"{self.data_dir}"
                )

    def setup(self, stage: str | None = None) -> None:
        self.check_data()
        splits = {"train": "train", "val": "val", "test": self.test_split}
        for split, folder in splits.items():
            dataset = ImageFolder(
                self._split_dir(folder), transform=self.transform(split)
            )
            setattr(self, f"{split}_set", dataset)
