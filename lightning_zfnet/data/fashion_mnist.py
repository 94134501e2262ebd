"""Fashion-MNIST, found offline where possible, served as resized tensors."""

from __future__ import annotations

import gzip
import inspect
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import Dataset
from torchvision.datasets import FashionMNIST
from torchvision.datasets.mnist import read_label_file

from .base import SplitDataModule

__all__ = [
    "DEBIAN_DIR",
    "FashionMNISTDataModule",
    "ResizedImages",
    "find_fashion_mnist",
    "check_classes",
    "load_fashion_mnist",
    "select_classes",
]

# Where Debian's package `dataset-fashion-mnist` installs the gzipped idx files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def find_fashion_mnist(
    root: str | os.PathLike,
    system_dirs: Sequence[str | os.PathLike] = (DEBIAN_DIR,),
    download: bool = True,
) -> Path:
    """Make ``<root>/FashionMNIST/raw`` hold the four idx files and return ``root``.

    Looks, in order, in ``<root>/FashionMNIST/raw``, in ``root`` itself and in
    ``system_dirs`` (gzipped or plain idx files, as Debian's
    ``dataset-fashion-mnist`` installs them; a copy from there is logged), and
    finally downloads with torchvision when ``download`` is true.

    Raises:
        FileNotFoundError: naming every place tried, when none has the data.
    """
    root = Path(root)
    raw = root / "FashionMNIST" / "raw"
    if all((raw / name).is_file() for name in _FILES):
        return root
    # gzipped files in raw, or the files (plain or gzipped) in root itself
    if _copy_idx_files(raw, raw) or _copy_idx_files(root, raw):
        return root
    for directory in map(Path, system_dirs):
        if _copy_idx_files(directory, raw):
            rank_zero_info(f"Fashion-MNIST copied from {directory} into {raw}")
            return root
    tried = [f"{raw}", f"{root}", *(f"{d}" for d in system_dirs)]
    if download:
        try:
            FashionMNIST(root, train=True, download=True)
            FashionMNIST(root, train=False, download=True)
            return root
        except Exception as error:  # any network or integrity failure
            tried.append(f"torchvision's download ({type(error).__name__}: {error})")
    else:
        tried.append("torchvision's download (disabled)")
    raise FileNotFoundError(
        "Fashion-MNIST not found. Tried: " + "; ".join(tried) + ". Install Debian's "
        "package dataset-fashion-mnist, or put the four idx files in " + f"{raw}."
    )


def _copy_idx_files(source: Path, raw: Path) -> bool:
    """Copy (and unzip) the idx files from ``source`` to ``raw``, if all exist."""
    sources = []
    for name in _FILES:
        candidates = [source / name, source / f"{name}.gz"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            return False
        sources.append(found)
    raw.mkdir(parents=True, exist_ok=True)
    for name, src in zip(_FILES, sources, strict=True):
        # Write under a temporary name so a concurrent reader never sees half a file.
        tmp = raw / f".{name}.{os.getpid()}.tmp"
        opener = gzip.open if src.suffix == ".gz" else open
        with opener(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        tmp.replace(raw / name)
    return True


def load_fashion_mnist(
    root: str | os.PathLike, train: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of one split."""
    dataset = FashionMNIST(root, train=train, download=False)
    return dataset.data, dataset.targets


def check_classes(classes: Sequence[int]) -> None:
    """Raise ValueError unless ``classes`` are distinct Fashion-MNIST classes."""
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct and non-empty, got {classes}")
    if not all(0 <= c < 10 for c in classes):
        raise ValueError(f"Fashion-MNIST's classes are 0..9, got {classes}")


def select_classes(
    images: torch.Tensor, labels: torch.Tensor, classes: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of ``classes`` only, labelled ``0..len(classes)-1`` in that order.

    Raises:
        ValueError: as :func:`check_classes`.
    """
    check_classes(classes)
    relabel = torch.full((10,), -1, dtype=labels.dtype)
    relabel[list(classes)] = torch.arange(len(classes), dtype=labels.dtype)
    kept = relabel[labels] >= 0
    return images[kept], relabel[labels[kept]]


class ResizedImages(Dataset):
    """Grey uint8 images resized to ``size`` and normalised, with their labels."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        size: int,
        mean: float,
        std: float,
    ) -> None:
        self.images, self.labels = images, labels
        self.size, self.mean, self.std = size, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].float().div(255)[None]
        if image.shape[-1] != self.size:
            image = F.interpolate(
                image[None],
                size=(self.size, self.size),
                mode="bilinear",
                antialias=True,
            )[0]
        return (image - self.mean) / self.std, self.labels[index]


class FashionMNISTDataModule(SplitDataModule):
    """Fashion-MNIST's 10 classes, upsampled to ``image_size`` (ZFNet needs >= 54).

    Finds the data as :func:`find_fashion_mnist` describes: in ``data_dir``, in Debian's
    ``/usr/share/datasets/fashion-mnist``, else by torchvision's download (in
    ``prepare_data``, never in ``__init__``). The last ``val_size`` of a seeded
    permutation of the training set is held out for validation; the test split is the
    official one.

    Args:
        data_dir: folder for ``FashionMNIST/raw``.
        image_size: side of the images served.
        batch_size: batch size per process.
        num_workers: data loader workers per process.
        val_size: training images held out for validation, from 1 to one less
            than the training images (of ``classes``).
        seed: seed of the validation split.
        download: allow torchvision's download as the last resort.
        classes: train and test on these classes only, labelled ``0..k-1`` in this
            order (a transfer source that leaves the others for a target); None:
            all 10.

    Raises:
        ValueError: for a ``val_size`` below 1 or ``classes`` out of range; in
            :meth:`check_data` and ``setup``, for a ``val_size`` that leaves no
            training image.
    """

    in_channels = 1
    mean, std = 0.2860, 0.3530  # of the training images, scaled to [0, 1]

    def __init__(
        self,
        data_dir: str = "data",
        image_size: int = 64,
        batch_size: int = 128,
        num_workers: int = 0,
        val_size: int = 5000,
        seed: int = 0,
        download: bool = True,
        classes: list[int] | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if val_size < 1:
            raise ValueError(f"val_size must be positive, got {val_size}")
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.image_size = image_size
        self.val_size = val_size
        self.seed = seed
        self.download = download
        self.classes = classes
        if classes is not None:
            check_classes(classes)

    @property
    def num_classes(self) -> int:
        """10, or the number of ``classes`` chosen."""
        return 10 if self.classes is None else len(self.classes)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, **overrides):
        """The data module with the arguments saved in a training ``checkpoint`` (the
        same splits and canvases), ``overrides`` taking their place where given."""
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        accepted = inspect.signature(cls).parameters
        arguments = {
            key: value
            for key, value in saved.get("datamodule_hyper_parameters", {}).items()
            if key in accepted
        }
        return cls(**{**arguments, **overrides})

    def prepare_data(self) -> None:
        find_fashion_mnist(self.data_dir, download=self.download)

    def check_data(self) -> None:
        try:
            root = find_fashion_mnist(self.data_dir, download=False)
        except FileNotFoundError:
            return  # prepare_data downloads it, and setup checks it then
        labels = read_label_file(str(root / "FashionMNIST" / "raw" / _FILES[1]))
        if self.classes is not None:
            labels = labels[torch.isin(labels, torch.tensor(self.classes))]
        self._check_val_size(len(labels))

    def _check_val_size(self, train_size: int) -> None:
        if self.val_size < train_size:
            return
        of = "" if self.classes is None else f" of classes {self.classes}"
        raise ValueError(
            f"val_size {self.val_size} leaves no image to train on: the training "
            f"set{of} in {self.data_dir} has {train_size} images; give a val_size "
            f"from 1 to {train_size - 1}"
        )

    def setup(self, stage: str | None = None) -> None:
        find_fashion_mnist(self.data_dir, download=False)
        images, labels = self._load(train=True)
        self._check_val_size(len(labels))
        order = torch.randperm(
            len(labels), generator=torch.Generator().manual_seed(self.seed)
        )
        train, val = order[: -self.val_size], order[-self.val_size :]
        test_images, test_labels = self._load(train=False)
        self.train_set = self.make_dataset(images[train], labels[train], "train")
        self.val_set = self.make_dataset(images[val], labels[val], "val")
        self.test_set = self.make_dataset(test_images, test_labels, "test")

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = load_fashion_mnist(self.data_dir, train=train)
        if self.classes is None:
            return images, labels
        return select_classes(images, labels, self.classes)

    def make_dataset(
        self, images: torch.Tensor, labels: torch.Tensor, split: str
    ) -> Dataset:
        """The dataset served for one split; subclasses change what an item is."""
        return ResizedImages(images, labels, self.image_size, self.mean, self.std)
