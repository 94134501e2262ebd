"""The ``zfnet`` command's config: its ``config.yaml`` writer (a run that never
starts leaves no folder), and what the command reads in a parsed config (the class of
a callback, where an evaluation finds the training's last checkpoint and logs)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytorch_lightning as pl
from jsonargparse import Namespace
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn

__all__ = ["SaveConfigWhenRunning", "is_callback", "last_of_training", "log_apart"]


class SaveConfigWhenRunning(SaveConfigCallback):
    """Lightning's ``config.yaml`` writer, which waits until the subcommand's loop
    starts (for ``fit``, the training, after ``configure_optimizers`` and the sanity
    check). A run that fails before (a data module's setup, a checkpoint that does
    not load, a resume refused for its schedule) leaves the run's config as it was,
    and the folder that the logger made for it is removed when it holds nothing but
    the run's ``hparams.yaml`` (a CSV logger's), so that no folder is left for a run
    that never ran. Without a logger the config goes
    to the ``--trainer.default_root_dir`` given, and without one is not written
    (Lightning's default is the working directory)."""

    def setup(self, trainer, pl_module, stage: str) -> None:  # noqa: ANN001
        pass  # written when the loop starts

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._save(trainer, pl_module, "fit")

    def on_validation_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        if trainer.state.fn == TrainerFn.VALIDATING:  # not fit's validation
            self._save(trainer, pl_module, "validate")

    def on_test_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._save(trainer, pl_module, "test")

    def on_predict_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._save(trainer, pl_module, "predict")

    def _save(self, trainer, pl_module, stage: str) -> None:  # noqa: ANN001
        if not trainer.loggers and self.config.trainer.get("default_root_dir") is None:
            rank_zero_warn(
                "config.yaml is not written: without a logger it would go to the "
                "working directory; give --trainer.default_root_dir to keep it"
            )
            return
        super().setup(trainer, pl_module, stage)

    def on_exception(self, trainer, pl_module, exception) -> None:  # noqa: ANN001
        logger = trainer.logger
        if self.already_saved or not trainer.is_global_zero:
            return
        if not isinstance(logger, (CSVLogger, TensorBoardLogger)):
            return
        folder = Path(logger.log_dir)
        if not folder.is_dir() or folder.resolve() == Path.cwd():
            return
        # what a run writes before its loop: the folder, its hyperparameters
        if {path.name for path in folder.iterdir()} <= {"hparams.yaml"}:
            (folder / "hparams.yaml").unlink(missing_ok=True)
            folder.rmdir()


def last_of_training(logger: object, callbacks: object = None) -> str:
    """``last.ckpt`` in the ``dirpath`` of a ``ModelCheckpoint`` among ``callbacks``,
    or else in the checkpoint folder of the training logged by ``logger``.

    Raises:
        ValueError: for a logger without a ``save_dir``.
        FileNotFoundError: when there is no such file.
    """
    listed = callbacks if isinstance(callbacks, list) else []
    path = next((d for d in map(_checkpoint_dirpath, listed) if d), None)
    if path is None:
        arguments = logger.get("init_args") if isinstance(logger, Namespace) else None
        if arguments is None or "save_dir" not in arguments:
            raise ValueError(
                "--ckpt_path last needs a logger with a save_dir; give a path"
            )
        version = arguments.get("version") or ""  # as Lightning names the folder:
        version = version if isinstance(version, str) else f"version_{version}"
        name = arguments.get("name") or ""
        path = Path(arguments.save_dir, name, version, "checkpoints")
    path = Path(path) / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"--ckpt_path last: no {path}; give the checkpoint's path instead"
        )
    return str(path)


def _checkpoint_dirpath(callback: object) -> str | None:
    """The ``dirpath`` of a ``ModelCheckpoint`` given in the config, if set."""
    if not is_callback(callback, ModelCheckpoint):
        return None
    return (callback.get("init_args") or {}).get("dirpath")


def is_callback(callback: object, kind: type[pl.Callback]) -> bool:
    """Whether a callback of the config (a namespace with the ``class_path`` that
    jsonargparse resolves to a full import path) is a ``kind``."""
    if not isinstance(callback, Namespace):
        return False
    module, _, name = str(callback.get("class_path", "")).rpartition(".")
    try:
        built = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(built, type) and issubclass(built, kind)


def log_apart(logger: object, subcommand: str) -> None:
    """Send an evaluation's logs to ``<name>/<subcommand>/version_<n>`` of the
    training's logger (for loggers configured with ``save_dir`` and ``name``)."""
    if not isinstance(logger, Namespace):
        return  # True (Lightning's default, versioned), False or None: nothing to do
    arguments = logger.get("init_args")
    if arguments is None or "save_dir" not in arguments or "name" not in arguments:
        return
    arguments.name = str(Path(arguments.name or "") / subcommand)
    if not arguments.get("version"):  # "" or None: a new numbered version
        arguments.version = None
