"""What every data module of the package shares: the loaders over its three splits."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

__all__ = ["SplitDataModule"]


class SplitDataModule(pl.LightningDataModule):
    """Serves ``train_set``, ``val_set`` and ``test_set``, which ``setup`` must create.

    Subclasses also define ``num_classes``, ``in_channels`` and ``image_size``; the
    ``zfnet`` command line passes them on to the model.
    """

    num_classes: int
    in_channels: int
    image_size: int
    train_set: Dataset
    val_set: Dataset
    test_set: Dataset

    def __init__(self, batch_size: int, num_workers: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
