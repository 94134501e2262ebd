"""The ``zfnet`` command, e.g. ``zfnet fit --config configs/fashion_mnist.yaml``."""

from __future__ import annotations

import signal
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import pytorch_lightning as pl
import torch
from jsonargparse import Namespace
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.exceptions import (
    MisconfigurationException,
    SIGTERMException,
)

from .cli_config import SaveConfigWhenRunning, is_callback, last_of_training, log_apart
from .data import LabelBudgetDataModule, SplitDataModule
from .default import DEFAULT_CONFIG
from .module import RunSettingsError, ZFNetModule
from .precision import check_half_on_cpu, warn_emulated_bf16
from .resume import (
    check_new_fit,
    data_that_differs,
    differing_settings,
    keep_logged_rows,
    last_checkpoint,
    read_checkpoint,
)

__all__ = ["ZFNetCLI", "main", "run_cli"]


class ZFNetCLI(LightningCLI):
    """LightningCLI whose model takes its input shape and class count from the data.

    Beyond Lightning's own command line:

    - ``validate``, ``test`` and ``predict`` log into a folder of their own,
      ``<save_dir>/<name>/<subcommand>/version_<n>``, so that they never replace a
      training run's ``config.yaml``, ``metrics.csv`` or ``hparams.yaml``;
    - ``fit --ckpt_path last`` without a last checkpoint is an error, not a fresh
      start, and a resumed fit keeps the ``metrics.csv`` rows logged before its
      checkpoint; a new fit where an earlier one left its last checkpoint is an
      error, not a fit that replaces the earlier one's logs;
    - with ``--ckpt_path``, Lightning builds the model from the checkpoint's
      hyperparameters in place of the ``--model`` settings given; ``zfnet`` warns,
      naming each setting so replaced and its value in the checkpoint. ``--ckpt_path
      last`` takes the checkpoint's settings as its path does, except that ``fit``
      finds its last checkpoint after the model is built: a resume whose settings
      differ from the checkpoint's is then refused, naming them;
    - ``config.yaml`` is written when the subcommand's loop starts: a run that fails
      before leaves no folder of its own, and without a logger the config goes to
      ``--trainer.default_root_dir`` only, never the working directory;
    - ``fast_dev_run`` writes no checkpoint (Lightning's ``save_last`` would, into
      the working directory);
    - ``validate``, ``test`` or ``predict`` limited to 0 batches is refused
      (Lightning runs nothing and says nothing);
    - a command line without a model or data module (``zfnet fit`` alone) is
      pointed to the shipped ``configs/``;
    - a value that a constructor refuses (``--model.dropout 1.5``), or that the data
      module's :meth:`~lightning_zfnet.data.SplitDataModule.check_data` refuses for
      the data at hand (``--data.val_size`` as large as the training set), is a bad
      command line, as a value of the wrong type is: exit code 2 and one line
      naming the option group, the class and the refusal's words, before the run
      writes anything. So is every other refusal of the command line: a
      ``--ckpt_path`` that is not a file, or ``last`` without a last checkpoint; an
      evaluation of a label-budget fit on another draw of images; a schedule that
      a resumed fit would extend (:class:`~lightning_zfnet.module.RunSettingsError`);
    - ``fit --trainer.logger false`` leaves out a ``LearningRateMonitor`` (which
      Lightning refuses without a logger), with a warning.

    The model is :class:`ZFNetModule` or a subclass named by ``class_path`` (such as
    :class:`~lightning_zfnet.transfer.TransferModule`).
    """

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse type)
        _count_batches_as_ints(parser)
        for source, target in _LINKS.items():
            parser.link_arguments(
                f"data.{source}", f"model.init_args.{target}", apply_on="instantiate"
            )

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 (Lightning's)
        """Lightning's, keeping the model's settings as given, before a
        checkpoint's hyperparameters replace them."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        model = self.config[subcommand].get("model") if subcommand else None
        self._model_given = model.clone() if isinstance(model, Namespace) else None

    def instantiate_classes(self) -> None:
        """Lightning's, then the data module's check of its settings against the
        data; a ValueError of either (an argument out of range, a split larger than
        the data), a FileNotFoundError (a data folder or checkpoint that is not
        there) or a Trainer's MisconfigurationException is reported as a bad
        command line: exit code 2 and one line, no traceback."""
        try:
            super().instantiate_classes()
            self.datamodule.check_data()
            check_half_on_cpu(self.trainer)
        except (ValueError, FileNotFoundError, MisconfigurationException) as error:
            self.parser.error(_refusal(error))
        warn_emulated_bf16(self.trainer)

    def before_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        if self.subcommand == "fit":
            self._leave_out_lr_monitor_without_logger()
        else:
            self._prepare_evaluation()
        path = self.config[self.subcommand].get("ckpt_path")
        self._check_checkpoint(path)
        if path and path != "last" and self._model_given is not None:
            replaced = differing_settings(
                _as_hparams(self._model_given),
                _as_hparams(self.config[self.subcommand].model),
                skip=_LINKS.values(),
            )
            if replaced:
                rank_zero_warn(
                    f"--ckpt_path {path}: the model is built with the checkpoint's "
                    "hyperparameters (LightningCLI's rule), which replace these "
                    f"settings: {_listed(replaced)}"
                )

    def _leave_out_lr_monitor_without_logger(self) -> None:
        """Without a logger a ``LearningRateMonitor`` has nothing to log to, and
        Lightning refuses it when the fit starts: leave it out, and say so."""
        trainer = self.config.fit.trainer
        if trainer.logger is not False and trainer.logger != []:
            return  # None is Lightning's default logger
        callbacks = trainer.callbacks
        listed = callbacks if isinstance(callbacks, list) else [callbacks]
        kept = [c for c in listed if not is_callback(c, LearningRateMonitor)]
        if len(kept) == len(listed):
            return
        trainer.callbacks = kept if isinstance(callbacks, list) else None
        rank_zero_warn(
            "--trainer.logger false: the LearningRateMonitor callback is left out, "
            "as it has no logger to log the learning rate to"
        )

    def _check_checkpoint(self, path: str | None) -> None:
        """Name a ``--ckpt_path`` that is not a file before anything runs (Lightning's
        words "hpc", "registry..." and remote paths aside, and "last", found apart;
        "best" is the best checkpoint of a fit in the same process: none here)."""
        if path is None or path in ("hpc", "last") or "://" in path:
            return
        if path.split(":")[0] == "registry":
            return
        if not Path(path).is_file():
            self.parser.error(
                f"--ckpt_path {path}: no such file; give an existing checkpoint, or "
                "--ckpt_path last for the training's last one"
            )

    def _prepare_evaluation(self) -> None:
        """Refuse a limit of 0 batches, find ``--ckpt_path last`` and log apart."""
        config = self.config[self.subcommand]
        stage = "val" if self.subcommand == "validate" else self.subcommand
        if config.trainer.get(f"limit_{stage}_batches") == 0:  # Lightning: silence
            self.parser.error(
                f"--trainer.limit_{stage}_batches 0: {self.subcommand} would run no "
                "batch and write nothing; give a number of batches or a fraction "
                "above 0"
            )
        loggers = config.trainer.logger
        loggers = loggers if isinstance(loggers, list) else [loggers]
        last = config.get("ckpt_path") == "last"
        if last:  # the training's, before logging apart
            try:
                config.ckpt_path = last_of_training(
                    loggers[0], config.trainer.callbacks
                )
            except (ValueError, FileNotFoundError) as error:
                self.parser.error(str(error))
        for logger in loggers:
            log_apart(logger, self.subcommand)
        if last:  # Lightning's step for a path given (it makes a new self.config)
            self._parse_ckpt_path()

    def before_validate(self) -> None:
        self._check_draw()

    def before_test(self) -> None:
        self._check_draw()

    def before_predict(self) -> None:
        self._check_draw()

    def _check_draw(self) -> None:
        """The checkpoint's network must fit the data, and a label-budget data
        module must draw as in the fit of the checkpoint: another draw's test images
        include the fit's training images. Without a checkpoint, warn: the model's
        initial weights are evaluated."""
        path = self.config_init[self.subcommand].get("ckpt_path")
        if not path:
            rank_zero_warn(
                f"{self.subcommand} without --ckpt_path evaluates the model's initial "
                "(random) weights: pass --ckpt_path last for the training's last "
                "checkpoint, or a checkpoint's path"
            )
            return
        saved = read_checkpoint(path)
        self._check_data_shape(path, saved)
        if not isinstance(self.datamodule, LabelBudgetDataModule):
            return
        fitted = saved.get("datamodule_hyper_parameters", {})
        differ = {
            k: fitted[k]
            for k in ("per_class", "seed", "test_per_class")
            if k in fitted and getattr(self.datamodule, k) != fitted[k]
        }
        if differ:
            options = " ".join(f"--data.{k} {v}" for k, v in differ.items())
            self.parser.error(
                f"{path} was fit on another draw of labelled images than this "
                f"{self.subcommand} would use ({differ}), so its test images would "
                f"include training images: add {options}"
            )

    def _check_data_shape(self, path: str, saved: dict[str, Any]) -> None:
        """Refuse a checkpoint whose weights do not fit the network built for the
        data (Lightning's error lists the weights, after the logger's folder)."""
        differ = data_that_differs(self.model, saved, _LINKS)
        if differ:
            self.parser.error(
                f"--ckpt_path {path} holds a network for other data than --data "
                f"gives: {', '.join(differ)}; give the data it was fit on"
            )

    def _check_resumed_settings(self, path: str, saved: dict[str, Any]) -> None:
        """Refuse to resume the fit of ``path`` (read: ``saved``) with other model
        settings: the model was built from the command line (Lightning takes a
        checkpoint's hyperparameters for a path only, not for ``last``)."""
        differ = differing_settings(
            self.model.hparams, saved.get("hyper_parameters", {}), _LINKS.values()
        )
        if differ:
            self.parser.error(
                f"--ckpt_path last resumes {path}, whose model settings differ from "
                f"this command line's: {_listed(differ)}. A resumed fit goes on "
                "with the checkpoint's settings: give them, or give the "
                "checkpoint's path, whose settings then replace these"
            )

    def fit(self, **arguments: Any) -> None:
        """The trainer's fit; settings that it refuses when it starts (a
        :class:`~lightning_zfnet.module.RunSettingsError`) are a bad command line."""
        try:
            self.trainer.fit(**arguments)
        except RunSettingsError as error:
            self.parser.error(str(error))

    def before_fit(self) -> None:
        if self.trainer.fast_dev_run:
            for callback in self.trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    callback.save_last = False
        arguments = self.config_init[self.subcommand]
        path = arguments.get("ckpt_path")
        if path == "last" and self.trainer.fast_dev_run:
            self.parser.error(
                "--ckpt_path last: fast_dev_run runs without checkpoints or logs, so "
                "it cannot find the run's last checkpoint; give the checkpoint's path"
            )
        if not path and not self.trainer.fast_dev_run:
            try:
                check_new_fit(self.trainer)
            except FileExistsError as error:
                self.parser.error(str(error))
        resumes_last = path == "last"
        if resumes_last:
            try:
                arguments["ckpt_path"] = path = last_checkpoint(self.trainer)
            except FileNotFoundError as error:
                self.parser.error(str(error))
        saved = read_checkpoint(path) if path else {}
        if resumes_last:
            self._check_resumed_settings(path, saved)
        if path and self.trainer.max_steps != -1:
            rank_zero_warn(
                "resuming a fit bounded by trainer.max_steps: Lightning restarts it "
                "as if stopped inside an epoch, so its batches shift by one step "
                "from an uninterrupted fit's (and max_epochs may end it early); "
                "bound the run by max_epochs alone for an exact resume"
            )
        if path:
            self._check_data_shape(path, saved)
            keep_logged_rows(self.trainer, Path(path))


# The data module's attributes that the model's arguments take.
_LINKS = {
    "num_classes": "num_classes",
    "in_channels": "in_channels",
    "image_size": "input_size",
}

# The option group of the classes that the command line builds.
_GROUPS = {
    pl.LightningModule: "--model",
    pl.LightningDataModule: "--data",
    pl.Trainer: "--trainer",
    pl.Callback: "--trainer.callbacks",
}


def _refusal(error: Exception) -> str:
    """The refusal's words in ``error`` (jsonargparse wraps a constructor's),
    prefixed with the option group and class of the object that refused its
    arguments."""
    while isinstance(error.__cause__, (ValueError, FileNotFoundError)):
        error = error.__cause__
    # the outermost method of a class that the command line builds in the traceback
    frames = (frame for frame, _ in traceback.walk_tb(error.__traceback__))
    built = (frame.f_locals.get("self") for frame in frames)
    refused = next((obj for obj in built if isinstance(obj, tuple(_GROUPS))), None)
    if refused is None:
        return str(error)
    kind = type(refused)
    group = next((g for c, g in _GROUPS.items() if issubclass(kind, c)), "")
    message = f"{group} ({kind.__name__}): {error}".lstrip()
    linked = {t: s for s, t in _LINKS.items()}
    target = str(error).split(" ")[0]
    if group == "--model" and target in linked:
        message += f" (the model's {target} is --data.{linked[target]})"
    return message


def _as_hparams(model: Namespace) -> dict[str, object]:
    """A ``--model`` config as LightningCLI saves it in a checkpoint."""
    return {"_class_path": model.get("class_path"), **model.init_args.as_dict()}


def _listed(differ: dict[str, tuple[object, object]]) -> str:
    """``--model.lr 0.5 (0.03 in the checkpoint), ...`` for ``{name: (given,
    saved)}``."""
    return ", ".join(
        f"--model{'' if name == '_class_path' else '.' + name} {given} "
        f"({saved} in the checkpoint)"
        for name, (given, saved) in differ.items()
    )


# The Trainer's limits are typed float | int | None, so jsonargparse reads
# "--trainer.limit_train_batches 1" as 1.0: the whole epoch, not one batch.
_BATCH_LIMITS = {
    f"trainer.{name}"
    for name in (
        "limit_train_batches", "limit_val_batches", "limit_test_batches",
        "limit_predict_batches", "overfit_batches",
    )
}  # fmt: skip


def _count_batches_as_ints(parser) -> None:  # noqa: ANN001 (jsonargparse type)
    """Read a whole number given to a batch limit as a count of batches (an int),
    as Lightning's own Trainer(limit_train_batches=1) means, and a fraction as a
    float."""
    for action in parser._actions:
        if action.dest in _BATCH_LIMITS and hasattr(action, "_typehint"):
            action._typehint = int | float | None


class _Parser(LightningArgumentParser):
    """Lightning's parser, whose error for a command line without a model or a
    data module (``zfnet fit`` alone) points to the shipped configs."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        missing = message.startswith("the following arguments are required:")
        if missing and any(f".{key}" in message for key in ("data", "model")):
            folder = DEFAULT_CONFIG.parent
            where = f" ({folder})" if folder.is_dir() else ""
            message += (
                f"; a config from the project's configs/ folder{where} gives the "
                f"model and data, e.g. --config configs/{DEFAULT_CONFIG.name}"
            )
        super().error(message, ex)


def run_cli(args: list[str] | None = None) -> ZFNetCLI:
    """Run the command line and return it (its ``trainer`` and ``model`` are set);
    ``args`` replaces ``sys.argv[1:]`` when given. A misspelt or abbreviated option
    is an error (``--trainer.max_epoch`` is not taken for ``max_epochs``)."""
    no_abbreviations = {"allow_abbrev": False}
    return ZFNetCLI(
        ZFNetModule,
        SplitDataModule,
        subclass_mode_data=True,
        subclass_mode_model=True,
        parser_class=_Parser,
        save_config_callback=SaveConfigWhenRunning,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            **no_abbreviations,
            **{name: no_abbreviations for name in ZFNetCLI.subcommands()},
        },
        args=args,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``zfnet`` console script.

    Exit codes: 0 when the subcommand finished, 1 on an error or Ctrl-C, 2 on a bad
    command line, 143 (128 + SIGTERM, the shells' convention) when a SIGTERM stopped
    it, so that a scheduler can tell a killed run from a finished one.
    """
    try:
        run_cli(args)
    except SIGTERMException:  # Lightning's, a SystemExit with code 0
        sys.exit(128 + signal.SIGTERM)
    finally:
        # Lightning leaves a DDP process group up; gloo's threads can then abort the
        # interpreter's exit, so close it here.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
