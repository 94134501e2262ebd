"""scikit-learn's bundled handwritten digits: a small, offline transfer target.

1797 scans of handwritten digits 0-9 (UCI's optical recognition set), 8x8 pixels with
17 grey levels, about 180 per class, shipped inside scikit-learn: no download. Real
images of another domain than Fashion-MNIST's garments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from .few_shot import LabelBudgetDataModule

__all__ = ["DigitsDataModule", "load_digits"]


def load_digits() -> tuple[Tensor, Tensor]:
    """The images ``(1797, 8, 8)`` float in ``[0, 1]`` and labels ``(1797,)`` int64.

    Raises:
        ImportError: naming the extra to install, when scikit-learn is missing.
    """
    try:
        from sklearn import datasets
    except ImportError as error:
        raise ImportError(
            "the digits need scikit-learn: pip install 'zfnet-toolkit[experiments]' "
            "(or pip install scikit-learn)"
        ) from error
    digits = datasets.load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    return images, torch.tensor(digits.target, dtype=torch.int64)


class DigitsDataModule(LabelBudgetDataModule):
    """The 8x8 digits, upsampled to ``image_size`` (bilinear) and normalised, with
    ``per_class`` labelled training images per class; the rest test.

    Args:
        per_class, seed, test_per_class, batch_size, num_workers: as for
            :class:`~lightning_zfnet.data.few_shot.LabelBudgetDataModule`.
        image_size: side of the images served (a Fashion-MNIST ZFNet's 64).
    """

    num_classes = 10
    in_channels = 1
    mean, std = 0.3053, 0.3760  # of the 8x8 images scaled to [0, 1]

    def __init__(
        self,
        per_class: int = 5,
        seed: int = 0,
        test_per_class: int | None = None,
        image_size: int = 64,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__(per_class, seed, test_per_class, batch_size, num_workers)
        self.save_hyperparameters()
        self.image_size = image_size
        self._pool: tuple[Tensor, Tensor] | None = None

    def prepare_data(self) -> None:
        load_digits()  # fails early, with the install hint, without scikit-learn

    def _images(self) -> tuple[Tensor, Tensor]:
        if self._pool is None:
            images, labels = load_digits()
            images = F.interpolate(
                images[:, None], size=(self.image_size,) * 2, mode="bilinear"
            )
            self._pool = ((images - self.mean) / self.std, labels)
        return self._pool

    def pool_labels(self) -> Tensor:
        return self._images()[1]

    def make_split(self, indices: Tensor, split: str) -> Dataset:
        images, labels = self._images()
        return TensorDataset(images[indices], labels[indices])
