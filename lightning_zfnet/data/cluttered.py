"""Cluttered Fashion-MNIST: an item at a random place on a larger canvas, among
fragments of other items, with the item's ground-truth box. Attribution benchmarks
score their localisation against that box."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .fashion_mnist import FashionMNISTDataModule

__all__ = ["ClutteredFashionMNISTDataModule", "ClutteredImages", "FlipShift"]

_SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


class ClutteredImages(Dataset):
    """Item ``i`` pasted at a random position of a ``canvas`` x ``canvas`` image, after
    ``fragments`` random ``fragment_size`` crops of other items.

    The set depends on ``seed`` alone, so it is the same in every process, worker and
    run. Overlaps keep the brighter pixel. ``item_size`` rescales the items (and so the
    fragments) before they are placed.

    Items are ``(image, label, box)``: ``image`` ``(1, canvas, canvas)`` normalised with
    ``mean``/``std``, ``box`` int64 ``(x0, y0, x1, y1)``, the tight bounds of the item's
    non-zero pixels with exclusive ends (``image[..., y0:y1, x0:x1]``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        canvas: int = 64,
        fragments: int = 4,
        fragment_size: int = 9,
        seed: int = 0,
        mean: float = 0.0,
        std: float = 1.0,
        item_size: int | None = None,
    ) -> None:
        if item_size is not None and item_size != images.shape[-1]:
            images = _resize(images, item_size)
        side = images.shape[-1]
        if canvas < side:
            raise ValueError(f"canvas {canvas} is smaller than the items ({side})")
        _check_fragments(side, fragments, fragment_size)
        self.images = images.numpy()
        self.labels = labels
        self.canvas, self.mean, self.std = canvas, mean, std
        # All random choices are drawn here, at once, from one seeded generator: the set
        # is then the same in every process, worker and run, and items are cheap.
        n, f = len(labels), fragment_size
        rng = np.random.default_rng(seed)
        margin = min(3, (side - f) // 2)  # fragments come from where the garment is
        self.fragment_sources = (
            np.arange(n)[:, None] + rng.integers(1, max(n, 2), (n, fragments))
        ) % n
        self.fragment_crops = rng.integers(
            margin, side - f - margin + 1, (n, fragments, 2)
        )
        self.fragment_places = rng.integers(0, canvas - f + 1, (n, fragments, 2))
        self.item_places = rng.integers(0, canvas - side + 1, (n, 2))
        self.fragment_size = f

    def __len__(self) -> int:
        return len(self.labels)

    def compose(self, index: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """The uint8 canvas of item ``index`` and the item's box."""
        f, side = self.fragment_size, self.images.shape[-1]
        canvas = np.zeros((self.canvas, self.canvas), dtype=np.uint8)
        pieces = [
            (self.images[source, sy : sy + f, sx : sx + f], ty, tx)
            for source, (sy, sx), (ty, tx) in zip(
                self.fragment_sources[index],
                self.fragment_crops[index],
                self.fragment_places[index],
                strict=True,
            )
        ]
        y, x = self.item_places[index]
        item = self.images[index]
        for piece, ty, tx in [*pieces, (item, y, x)]:
            region = canvas[ty : ty + piece.shape[0], tx : tx + piece.shape[1]]
            np.maximum(region, piece, out=region)
        rows, cols = np.nonzero(item)
        if len(rows) == 0:
            return canvas, (int(x), int(y), int(x + side), int(y + side))
        box = (x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1)
        return canvas, tuple(int(v) for v in box)

    def __getitem__(
        self, index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        canvas, box = self.compose(index)
        image = torch.from_numpy(canvas).float().div(255)[None]
        return (image - self.mean) / self.std, self.labels[index], torch.tensor(box)


class FlipShift(Dataset):
    """Training-time variety for fixed canvases: each draw flips an item of
    ``dataset`` left-right with probability 1/2 and shifts it by up to ``max_shift``
    pixels each way, filling with ``fill``; the box moves with the image (clipped to
    the canvas). Draws use torch's generator, so they follow the run's seed."""

    def __init__(self, dataset: Dataset, max_shift: int, fill: float) -> None:
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.dataset = dataset
        self.max_shift = max_shift
        self.fill = fill

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label, box = self.dataset[index]
        height, width = image.shape[-2:]
        x0, y0, x1, y1 = box.tolist()
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
            x0, x1 = width - x1, width - x0
        dy, dx = torch.randint(-self.max_shift, self.max_shift + 1, (2,)).tolist()
        shifted = torch.full_like(image, self.fill)
        to_rows, from_rows = _overlap(dy, height)
        to_cols, from_cols = _overlap(dx, width)
        shifted[..., to_rows, to_cols] = image[..., from_rows, from_cols]
        moved = [(x0, dx, width), (y0, dy, height), (x1, dx, width), (y1, dy, height)]
        box = [min(max(v + d, 0), side) for v, d, side in moved]
        return shifted, label, torch.tensor(box)


def _check_fragments(side: int, fragments: int, fragment_size: int) -> None:
    """Raise ValueError unless ``fragments`` is a count and crops of
    ``fragment_size`` pixels fit in an item of ``side`` pixels."""
    if not 0 < fragment_size <= side:
        raise ValueError(f"fragment_size must be in (0, {side}], got {fragment_size}")
    if fragments < 0:
        raise ValueError(f"fragments must be >= 0, got {fragments}")


def _overlap(shift: int, size: int) -> tuple[slice, slice]:
    """Where a line of ``size`` pixels shifted by ``shift`` lands, and from where."""
    return (
        slice(max(shift, 0), size + min(shift, 0)),
        slice(max(-shift, 0), size + min(-shift, 0)),
    )


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    resized = F.interpolate(
        images[:, None].float(), size=(size, size), mode="bilinear", antialias=True
    )
    return resized[:, 0].round().clamp(0, 255).to(torch.uint8)


class ClutteredFashionMNISTDataModule(FashionMNISTDataModule):
    """Fashion-MNIST items on a ``image_size`` canvas among fragments of other items.

    Batches are ``(images, labels, boxes)``. Splits as in
    :class:`~lightning_zfnet.data.FashionMNISTDataModule`; each split has its own seed.

    Args:
        data_dir, batch_size, num_workers, val_size, seed, download: as for
            :class:`~lightning_zfnet.data.FashionMNISTDataModule`.
        image_size: side of the canvas.
        item_size: side the 28x28 items are scaled to before placing.
        fragments: clutter fragments per image.
        fragment_size: side of each fragment.
        augment: flip and shift the training canvases at random each time they are
            drawn (:class:`FlipShift`, by up to ``image_size // 16`` pixels).

    Raises:
        ValueError: as :class:`~lightning_zfnet.data.FashionMNISTDataModule`, and
            for an ``item_size`` below 1 or above ``image_size``, a
            ``fragment_size`` outside ``1..item_size`` or negative ``fragments``.
    """

    mean, std = 0.0885, 0.2386  # of the default training canvases, scaled to [0, 1]

    def __init__(
        self,
        data_dir: str = "data",
        image_size: int = 64,
        batch_size: int = 128,
        num_workers: int = 0,
        val_size: int = 5000,
        seed: int = 0,
        download: bool = True,
        item_size: int = 28,
        fragments: int = 4,
        fragment_size: int = 9,
        augment: bool = False,
    ) -> None:
        super().__init__(
            data_dir, image_size, batch_size, num_workers, val_size, seed, download
        )
        if not 0 < item_size <= image_size:
            raise ValueError(
                f"item_size must be in (0, {image_size}] (the image_size), got "
                f"{item_size}"
            )
        _check_fragments(item_size, fragments, fragment_size)
        self.item_size = item_size
        self.fragments = fragments
        self.fragment_size = fragment_size
        self.augment = augment

    def make_dataset(
        self, images: torch.Tensor, labels: torch.Tensor, split: str
    ) -> Dataset:
        dataset = ClutteredImages(
            images,
            labels,
            canvas=self.image_size,
            fragments=self.fragments,
            fragment_size=self.fragment_size,
            seed=self.seed * len(_SPLIT_SEEDS) + _SPLIT_SEEDS[split],
            mean=self.mean,
            std=self.std,
            item_size=self.item_size,
        )
        if self.augment and split == "train":
            black = -self.mean / self.std
            return FlipShift(dataset, self.image_size // 16, black)
        return dataset
