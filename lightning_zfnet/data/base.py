"""What every data module of the package shares: the loaders over its three splits."""

from __future__ import annotations

import os

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["EpochSampler", "SplitDataModule"]


class EpochSampler(DistributedSampler):
    """Training order and workers' seeds that depend on ``(seed, epoch, rank)`` only.

    The order is :class:`~torch.utils.data.DistributedSampler`'s: a permutation drawn
    from ``seed + epoch``, of which process ``rank`` takes every ``num_replicas``-th
    index (all of it in one process). ``generator``, the loader's, is seeded from
    ``(seed, epoch, rank)`` as well, so that the workers started for an epoch draw
    their random augmentations from the same seeds in every run: an uninterrupted
    fit and one resumed from a checkpoint at the end of an epoch see the same batches.

    Args:
        dataset: the training set.
        num_replicas, rank: processes and this one's rank (1 and 0 without DDP).
        seed: the run's seed, the same in every process.
        epoch: the epoch the first iteration serves (a resumed fit's next epoch);
            Lightning sets the following ones with :meth:`set_epoch`.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        epoch: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
        self.generator = torch.Generator()
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        # hash() of a tuple of ints is the same in every process and run
        self.generator.manual_seed(hash((self.seed, epoch, self.rank)) % 2**63)


class SplitDataModule(pl.LightningDataModule):
    """Serves ``train_set``, ``val_set`` and ``test_set``, which ``setup`` must create.

    Subclasses also define ``num_classes``, ``in_channels`` and ``image_size``; the
    ``zfnet`` command line passes them on to the model.

    The training loader shuffles with an :class:`EpochSampler` seeded by the run's
    seed (``seed_everything``, as Lightning's own distributed sampler), so that the
    order and the augmentations of an epoch do not depend on what ran before it.
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
        self._resumed_epoch: int | None = None

    def check_data(self) -> None:
        """Check the settings that need the data (such as a validation split
        smaller than the training set) against the data at hand, as ``setup``
        does, but without preparing any split: the ``zfnet`` command calls it
        before a run starts. Data that is not there yet (``prepare_data``
        downloads it) is not checked; ``setup`` checks it.

        Raises:
            ValueError: naming the setting, its value, what the data allows and
                what to give instead.
        """

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = EpochSampler(
            self.train_set,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
            epoch=self._epoch() if self._resumed_epoch is None else self._resumed_epoch,
        )
        self._resumed_epoch = None
        # Workers start anew each epoch, seeded from the sampler's generator.
        return self._loader(
            self.train_set, sampler=sampler, generator=sampler.generator
        )

    def _epoch(self) -> int:
        """The epoch that Lightning's next ``set_epoch`` call gives."""
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_progress.current.processed

    # A resumed fit asks for its loader (to count the steps of a schedule) before it
    # restores its loops and calls set_epoch, and the workers it then starts already
    # read the sampler. The epoch to serve therefore comes with the data module's
    # state, which Lightning restores first.
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch()}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resumed_epoch = state_dict.get("epoch")

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        # A generator of its own: starting its iterator (for each validation, or in a
        # callback such as FeatureEvolution) leaves the global one, which drives
        # dropout, untouched.
        return self._loader(
            dataset,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(0),
        )
