"""Resuming a fit from a checkpoint: finding ``last``, keeping the earlier logs,
naming the model settings in which a command line and a checkpoint differ."""

from __future__ import annotations

import csv
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_only

__all__ = [
    "check_new_fit",
    "data_that_differs",
    "differing_settings",
    "keep_logged_rows",
    "last_checkpoint",
    "read_checkpoint",
]


def last_checkpoint(trainer: pl.Trainer) -> str:
    """The newest last checkpoint of the trainer's ``ModelCheckpoint`` callbacks,
    where Lightning's ``ckpt_path="last"`` looks for it.

    Raises:
        FileNotFoundError: when there is none (Lightning would warn and start a
            new fit).
    """
    found: set[str] = set()
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            found |= callback._find_last_checkpoints(trainer)
    existing = [Path(path) for path in found if Path(path).is_file()]
    if not existing:
        raise FileNotFoundError(
            f"--ckpt_path last: no last checkpoint under {trainer.log_dir}, so there "
            "is nothing to resume. Leave out --ckpt_path to start a new fit, or give "
            "the checkpoint's path."
        )
    return str(max(existing, key=lambda path: path.stat().st_mtime))


def check_new_fit(trainer: pl.Trainer) -> None:
    """Refuse a new fit (not resumed) where an earlier fit left its last checkpoint:
    it would replace that fit's ``config.yaml`` and ``metrics.csv``, and ``--ckpt_path
    last`` of an evaluation would still take the earlier fit's ``last.ckpt``.

    Raises:
        FileExistsError: naming the earlier fit's last checkpoint.
    """
    try:
        found = last_checkpoint(trainer)
    except FileNotFoundError:
        return
    raise FileExistsError(
        f"{found}: an earlier fit's last checkpoint, where this fit would log and "
        "save its own; a new fit there would replace that fit's config.yaml and "
        "metrics.csv. Resume it with --ckpt_path last, or give the new fit a "
        "folder of its own (--trainer.logger.init_args.save_dir, or "
        "--trainer.default_root_dir without a logger)"
    )


def differing_settings(
    given: Mapping[str, object],
    saved: Mapping[str, object],
    skip: Collection[str] = (),
) -> dict[str, tuple[object, object]]:
    """The model settings that differ between ``given`` and a checkpoint's
    ``saved`` hyperparameters, as ``{name: (given, saved)}``.

    Both map argument names to values, with the class under ``_class_path`` (as
    LightningCLI saves them); settings that only one of them has, ``skip`` and
    LightningCLI's ``_instantiator`` are left out.
    """
    return {
        name: (value, saved[name])
        for name, value in given.items()
        if name in saved and name not in skip and name != "_instantiator"
        if value != saved[name]
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, memory-mapped (its weights are not read until
    used); empty when torch cannot read it (Lightning then says why)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001
        return {}


def data_that_differs(
    model: pl.LightningModule, saved: Mapping[str, Any], links: Mapping[str, str]
) -> list[str]:
    """The data's settings, as ``"image_size 56 (64 in the checkpoint)"``, that
    differ from those of a checkpoint ``saved`` whose weights do not fit ``model``
    (built for the data); ``links`` maps the data's names to the model's. Empty
    when the weights fit."""
    own = model.state_dict()
    weights = saved.get("state_dict", {})
    if all(own[k].shape == v.shape for k, v in weights.items() if k in own):
        return []
    fitted = saved.get("hyper_parameters", {})
    return [
        f"{source} {model.hparams.get(target)} ({fitted[target]} in the checkpoint)"
        for source, target in links.items()
        if target in fitted and model.hparams.get(target) != fitted[target]
    ]


def keep_logged_rows(trainer: pl.Trainer, checkpoint: Path) -> None:
    """Keep the ``metrics.csv`` rows of each CSV logger that were logged before
    ``checkpoint`` was saved (step below its ``global_step``).

    Lightning's CSV writer deletes ``metrics.csv`` when it starts; the rows are read
    first and logged again through it, so that the resumed fit appends to them.
    Rows logged after the checkpoint (by the run that was stopped) are dropped: the
    resumed fit logs those steps anew.
    """
    if rank_zero_only.rank != 0:
        return
    loggers = [logger for logger in trainer.loggers if isinstance(logger, CSVLogger)]
    files = [Path(logger.log_dir) / "metrics.csv" for logger in loggers]
    if not any(path.is_file() for path in files):
        return
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for logger, path in zip(loggers, files, strict=True):
        rows = _read_rows(path) if path.is_file() else []
        writer = logger.experiment  # starting it deletes the file
        for step, values in rows:
            if step < saved["global_step"]:
                writer.log_metrics(values, step)
        logger.save()


def _read_rows(path: Path) -> list[tuple[int, dict[str, float | int]]]:
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    return [
        (
            int(row["step"]),
            {k: _number(v) for k, v in row.items() if k != "step" and v != ""},
        )
        for row in rows
    ]


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)
