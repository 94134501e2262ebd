"""The ``zfnet`` command's ``config.yaml`` writer: a run that never starts leaves no
folder."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn

__all__ = ["SaveConfigWhenRunning"]


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
