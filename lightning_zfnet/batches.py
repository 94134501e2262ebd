"""Work over a dataset in Lightning's predict loop, in fixed batches, spread over
processes (``strategy="ddp"`` over GPUs and nodes), written by one writer.

A job is a list of batches, each a fixed list of dataset indices, and a function that
turns one batch into a result. Every process computes its share of the batches; the
results of each step are gathered to global rank 0, where one :class:`BatchWriter`
writes them. A batch's result does not depend on which process computed it or on how
many there are, so the written output equals a single process's. The writer tells
which batches it has written, and a run that was killed resumes with the others.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from torch.utils.data._utils.collate import default_collate

from captum_deconvnet.model_state import eval_mode

__all__ = [
    "BatchScan",
    "BatchWriter",
    "FileWriter",
    "default_trainer",
    "fixed_batches",
    "run_batches",
]

# compute(model, indices (B,), items: the collated dataset items) -> a result that
# pickles (CPU tensors, bytes, numbers), gathered to rank 0 and given to the writer.
Compute = Callable[[nn.Module, Tensor, Any], Any]


class BatchWriter:
    """Receives every batch's result on global rank 0. Subclasses write somewhere
    lasting (so that :meth:`written` survives a killed run) or keep results in memory.
    """

    def written(self) -> set[int]:
        """Batches already written (a new run skips them)."""
        return set()

    def write(self, batch: int, result: Any) -> None:
        """Write the result of batch ``batch``; called once per batch."""
        raise NotImplementedError

    def close(self) -> Any:
        """Called once all batches are written; what it returns is handed to every
        process by :func:`run_batches`."""
        return None


class FileWriter(BatchWriter):
    """Writes results of the form ``(files, record)``: ``files`` maps paths relative
    to ``root`` to their bytes, ``record`` is anything JSON can hold. Each batch's
    files are written first, then a line ``{"batch": b, "record": record}`` is
    appended to ``root / log``; so a batch counts as written only once all its files
    are. Each file is written whole under a temporary name, then renamed.

    Args:
        root: the output folder.
        log: the log's path relative to ``root``.
    """

    def __init__(self, root: str | os.PathLike, log: str) -> None:
        self.root = Path(root)
        self.log = self.root / log
        self.records: dict[int, Any] = {}
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut off by a kill
                    continue
                self.records[entry["batch"]] = entry["record"]

    def written(self) -> set[int]:
        return set(self.records)

    def write(self, batch: int, result: tuple[dict[str, bytes], Any]) -> None:
        files, record = result
        for name, data in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_name(path.name + ".part")
            part.write_bytes(data)
            part.replace(path)  # never a half-written file under its name
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as log:
            log.write(json.dumps({"batch": batch, "record": record}) + "\n")
        self.records[batch] = record

    def close(self) -> dict[int, Any]:
        """Every batch's record, by batch."""
        return dict(sorted(self.records.items()))


def fixed_batches(size: int, batch_size: int) -> list[list[int]]:
    """``range(size)`` cut into consecutive batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return [
        list(range(start, min(start + batch_size, size)))
        for start in range(0, size, batch_size)
    ]


class _Batches(IterableDataset):
    """This process's batches, whole (the loader must not batch again). Being an
    iterable, Lightning gives it no distributed sampler: the split is ours."""

    def __init__(
        self, dataset: Dataset, batches: Sequence[list[int]], order: list[int]
    ):
        self.dataset, self.batches, self.order = dataset, batches, order

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        worker = get_worker_info()
        order = self.order[worker.id :: worker.num_workers] if worker else self.order
        for batch in order:
            indices = self.batches[batch]
            items = default_collate([self.dataset[i] for i in indices])
            yield batch, torch.tensor(indices), items


class BatchScan(pl.LightningModule):
    """Runs ``compute`` on each of ``batches`` in ``Trainer.predict``; see the
    module's description and :func:`run_batches`.

    Args:
        model: the network, handed to ``compute`` on the trainer's device.
        dataset: items ``dataset[i]``; a batch's items are collated as a
            ``DataLoader`` does.
        batches: lists of dataset indices; the same in every process.
        compute: ``compute(model, indices, items) -> result``; it runs with
            gradients enabled (outside inference mode), so it can attribute.
        writer: used on global rank 0 only.
        num_workers: data loader workers per process.
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Dataset,
        batches: Sequence[list[int]],
        compute: Compute,
        writer: BatchWriter,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.dataset, self.batches = dataset, batches
        self.compute, self.writer = compute, writer
        self.num_workers = num_workers
        self._written: set[int] = set()

    def predict_dataloader(self) -> DataLoader:
        # Called once the processes are connected: rank 0 says what is left.
        written = self.writer.written() if self.trainer.is_global_zero else None
        self._written = set(self.trainer.strategy.broadcast(written, src=0))
        todo = [b for b in range(len(self.batches)) if b not in self._written]
        rank, world = self.trainer.global_rank, self.trainer.world_size
        mine = todo[rank::world]
        # Every process takes the same number of steps (each step gathers); the
        # short ones repeat a batch, whose second result the writer never sees.
        mine += todo[:1] * (math.ceil(len(todo) / world) - len(mine))
        return DataLoader(
            _Batches(self.dataset, self.batches, mine),
            batch_size=None,
            num_workers=self.num_workers,
        )

    def predict_step(self, batch: Any, batch_idx: int) -> int:
        number, indices, items = batch
        # Lightning predicts in inference mode; attribution needs gradients, and
        # tensors made in inference mode cannot join autograd: work on copies.
        with torch.inference_mode(False), torch.enable_grad():
            items = _copied(items)
            result = self.compute(self.model, indices.clone(), items)
        results = _gather_to_zero((number, result))
        if self.trainer.is_global_zero:
            for number_, result_ in results:
                if number_ not in self._written:
                    self.writer.write(number_, result_)
                    self._written.add(number_)
        return number


def _copied(items: Any) -> Any:
    if isinstance(items, Tensor):
        return items.clone()
    if isinstance(items, (list, tuple)):
        return type(items)(_copied(item) for item in items)
    if isinstance(items, dict):
        return {key: _copied(value) for key, value in items.items()}
    return items


def _gather_to_zero(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on global rank 0, ``[]`` elsewhere."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    world = dist.get_world_size()
    gathered = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered or []


def default_trainer(**overrides: Any) -> pl.Trainer:
    """A trainer for jobs like these: one device, no logger, checkpoints, summary
    or progress bar, unless ``overrides`` say otherwise."""
    options = {
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return pl.Trainer(**{**options, **overrides})


def run_batches(
    model: nn.Module,
    dataset: Dataset,
    batches: Sequence[list[int]],
    compute: Compute,
    writer: BatchWriter,
    trainer: pl.Trainer | None = None,
    num_workers: int = 0,
) -> Any:
    """Run ``compute`` over ``batches`` of ``dataset`` with ``trainer`` (default:
    :func:`default_trainer`); returns what ``writer.close()`` returned, in every
    process. The model runs in eval mode and is left in its modes and on its device.

    Args:
        model: the network.
        dataset: the items the batches index.
        batches: lists of dataset indices, the same in every process; e.g.
            :func:`fixed_batches`.
        compute: ``compute(model, indices, items) -> result`` (see
            :class:`BatchScan`).
        writer: writes the results on global rank 0.
        trainer: e.g. ``pl.Trainer(strategy="ddp", devices=4, num_nodes=2)``.
        num_workers: data loader workers per process.

    Raises:
        RuntimeError: if the trainer stopped before every batch was written (what
            was written stays; a new run does the rest).
    """
    job = BatchScan(model, dataset, batches, compute, writer, num_workers)
    trainer = trainer or default_trainer()
    # Lightning leaves the model on the CPU: put back its device and each module's
    # mode, also if predict raises.
    device = next(model.parameters(), torch.zeros(())).device
    try:
        with eval_mode(model), warnings.catch_warnings():
            # Our iterable knows its length, and each worker takes its own batches;
            # a resumed job may have nothing left to do.
            warnings.filterwarnings("ignore", "Your `IterableDataset` has `__len__`")
            warnings.filterwarnings("ignore", "Total length of `DataLoader`")
            trainer.predict(job, return_predictions=False)
    finally:
        model.to(device)
    # After predict (which skips its hooks when nothing is left to do), the
    # processes are still connected.
    missing, outcome = 0, None
    if trainer.is_global_zero:
        missing = len(set(range(len(batches))) - writer.written())
        outcome = None if missing else writer.close()
    missing, outcome = trainer.strategy.broadcast((missing, outcome), src=0)
    if missing:
        raise RuntimeError(
            f"{missing} of {len(batches)} batches were not computed: the trainer "
            "stopped early (limit_predict_batches, max_time?); run again to finish"
        )
    return outcome
