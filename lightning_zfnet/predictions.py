"""Writing ``zfnet predict``'s class probabilities: each image's top-k classes."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor

__all__ = ["PredictionWriter"]

_COLUMNS = ("index", "label", "classes", "probabilities")


class PredictionWriter(BasePredictionWriter):
    """Writes, for every predicted image, its index in the dataset, its label and
    its ``top_k`` most probable classes with their probabilities.

    The predict step must return class probabilities ``(N, classes)`` (as
    :meth:`~lightning_zfnet.ZFNetModule.predict_step` does); labels are the batch's
    second item when it has one, else -1. Under DDP every process sends its rows to
    process 0, which writes one file, sorted by index as a single process would.

    Args:
        output: the file; ``.csv`` gives a table with columns ``index, label,
            class_1, probability_1, ..., class_k, probability_k``, ``.pt`` a dict of
            tensors (``index`` and ``label`` ``(N,)``, ``classes`` and
            ``probabilities`` ``(N, k)``, for ``torch.load``). A relative path is
            taken in the run's log directory, so that a predict run writes into its
            own folder.
        top_k: classes kept per image (all classes if there are fewer).

    Raises:
        ValueError: for another suffix, or ``top_k`` below 1.
    """

    def __init__(
        self, output: str | os.PathLike = "predictions.csv", top_k: int = 5
    ) -> None:
        super().__init__(write_interval="batch")
        self.output = Path(output)
        if self.output.suffix not in (".csv", ".pt"):
            raise ValueError(f"output must end in .csv or .pt, got {str(output)!r}")
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        self.top_k = top_k
        self._path = self.output  # resolved in setup
        self._rows: dict[str, list[Tensor]] = {}

    def setup(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> None:
        # Asked by every process: the log directory is broadcast from process 0.
        if not self.output.is_absolute():
            log_dir = trainer.log_dir or trainer.default_root_dir
            self._path = Path(log_dir) / self.output

    def on_predict_epoch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        self._rows = {column: [] for column in _COLUMNS}

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Tensor,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if batch_indices is None:
            raise ValueError("PredictionWriter needs the batch's dataset indices")
        probabilities, classes = (
            prediction.detach()
            .float()
            .cpu()
            .topk(min(self.top_k, prediction.shape[1]), dim=1)
        )
        has_label = isinstance(batch, (tuple, list)) and len(batch) > 1
        labels = batch[1].cpu() if has_label else torch.full((len(classes),), -1)
        for column, value in zip(
            _COLUMNS,
            (torch.as_tensor(batch_indices), labels, classes, probabilities),
            strict=True,
        ):
            self._rows[column].append(value)

    def on_predict_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        rows = {column: torch.cat(values) for column, values in self._rows.items()}
        self._rows = {}
        if trainer.fast_dev_run:  # Lightning's debugging run writes no files
            return
        if torch.distributed.is_initialized() and trainer.world_size > 1:
            rows = _gather_to_zero(rows, trainer.global_rank, trainer.world_size)
        if not trainer.is_global_zero:
            return
        # One row per image, in dataset order (a padding sampler repeats some).
        first = _first_occurrences(rows["index"])
        rows = {column: value[first] for column, value in rows.items()}
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._path.suffix == ".pt":
            torch.save(rows, self._path)
        else:
            _write_csv(self._path, rows)


def _gather_to_zero(
    rows: dict[str, Tensor], rank: int, world_size: int
) -> dict[str, Tensor]:
    gathered: list[Any] = [None] * world_size if rank == 0 else None
    torch.distributed.gather_object(rows, gathered, dst=0)
    if rank != 0:
        return rows
    return {column: torch.cat([part[column] for part in gathered]) for column in rows}


def _first_occurrences(index: Tensor) -> Tensor:
    """Where each distinct value of ``index`` first occurs, in ascending value."""
    order = torch.argsort(index, stable=True)
    sorted_index = index[order]
    new = torch.ones_like(sorted_index, dtype=torch.bool)
    new[1:] = sorted_index[1:] != sorted_index[:-1]
    return order[new]


def _write_csv(path: Path, rows: dict[str, Tensor]) -> None:
    k = rows["classes"].shape[1]
    header = ["index", "label"]
    for j in range(1, k + 1):
        header += [f"class_{j}", f"probability_{j}"]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for i in range(len(rows["index"])):
            line = [int(rows["index"][i]), int(rows["label"][i])]
            for j in range(k):
                line += [int(rows["classes"][i, j]), float(rows["probabilities"][i, j])]
            writer.writerow(line)
