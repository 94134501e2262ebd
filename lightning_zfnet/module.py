"""The training system around ZFNet: the paper's SGD recipe, metrics, checkpoints."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from .model import zfnet

__all__ = ["RunSettingsError", "ZFNetModule"]


class RunSettingsError(ValueError):
    """Settings of a run (trainer, model, data) that the fit refuses when it starts,
    as only then does it know its length and its checkpoint: a schedule fitted to an
    unbounded run, or one that a resumed fit would extend. The ``zfnet`` command
    reports it as a bad command line (exit code 2, one line), as it does a value
    that a constructor refuses."""


class ZFNetModule(pl.LightningModule):
    """ZFNet trained as in Sec. 3: SGD, lr 1e-2, momentum 0.9, lr x0.1 on plateau.

    Batches are ``(images, labels, ...)``; extra items (such as boxes) are ignored.
    Images of shape ``(N, crops, C, H, W)`` are evaluated crop by crop and their class
    probabilities averaged (the paper's 10-crop test).

    Args:
        num_classes, in_channels, input_size, width, wide, dropout, conv1_stride,
            init, layer1, fc_units, removed_layers: passed to
            :func:`~lightning_zfnet.model.zfnet`.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty (the paper states none; Krizhevsky used 5e-4).
        scheduler: ``"plateau"`` (x``lr_factor`` when ``val/loss`` stops improving for
            ``patience`` epochs), ``"step"`` (x``lr_factor`` every ``step_size``
            epochs),
            ``"cosine"`` (to zero over ``max_epochs``; over the steps, per step,
            when ``max_epochs`` is -1 and ``max_steps`` bounds the run),
            ``"onecycle"`` (per step: a
            warm-up over the first ``warmup`` of training to ``lr``, then cosine
            annealing; the quickest from scratch) or ``"none"``.
        warmup: fraction of the steps spent warming up with ``"onecycle"``.
        channels_last: store the weights channels-last when a trainer runs the
            module; convolutions and max-pooling then run in that layout, which is
            faster on CPUs (and on GPUs under mixed precision). The numbers are the
            same up to rounding.

    Raises:
        ValueError: for a value out of range, naming it (before anything is built,
            not when the fit starts).
        RunSettingsError: when the fit starts, for a ``"onecycle"`` or
            ``"cosine"`` schedule over an unbounded run, or one that a resumed fit
            would make longer or shorter than the checkpoint's.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        width: float = 1.0,
        wide: bool = False,
        dropout: float = 0.5,
        conv1_stride: int = 2,
        init: str = "kaiming",
        layer1: Literal["zfnet", "krizhevsky"] = "zfnet",
        fc_units: int = 4096,
        removed_layers: list[int] | None = None,
        lr: float = 1e-2,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        scheduler: Literal["plateau", "step", "cosine", "onecycle", "none"] = "plateau",
        lr_factor: float = 0.1,
        patience: int = 2,
        step_size: int = 30,
        warmup: float = 0.1,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if scheduler not in ("plateau", "step", "cosine", "onecycle", "none"):
            raise ValueError(f"unknown scheduler {scheduler!r}")
        self.save_hyperparameters()
        _check_recipe(self.hparams)
        self.model = zfnet(
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            width=width,
            wide=wide,
            dropout=dropout,
            conv1_stride=conv1_stride,
            init=init,
            layer1=layer1,
            fc_units=fc_units,
            removed_layers=removed_layers or (),
        )
        top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        top5 = MulticlassAccuracy(
            num_classes, top_k=min(5, num_classes), average="micro"
        )
        metrics = MetricCollection({"top1": top1, "top5": top5})
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def setup(self, stage: str) -> None:
        # Before the strategy wraps the model (DDP keeps the parameters' layout).
        if self.hparams.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Log class probabilities; 5-D input is averaged over its crops."""
        if x.ndim == 5:
            n, crops = x.shape[:2]
            logits = self.model(x.flatten(0, 1)).float()
            logp = F.log_softmax(logits, dim=1).view(n, crops, -1)
            return torch.logsumexp(logp, dim=1) - math.log(crops)
        # in float32: under bf16 autocast the logits are bf16, and so would be the
        # probabilities (ties among the top classes, 3 significant digits)
        return F.log_softmax(self.model(x).float(), dim=1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.train_metrics(logits, y)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: Any, stage: str, metrics: MetricCollection) -> None:
        x, y = batch[0], batch[1]
        logp = self.log_probs(x)
        self.log(f"{stage}/loss", F.nll_loss(logp, y), prog_bar=True, sync_dist=True)
        metrics(logp, y)
        self.log_dict(metrics, prog_bar=stage == "val")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities for the batch's images."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.log_probs(x).exp()

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.SGD(
            [p for p in self.parameters() if p.requires_grad],
            lr=hp.lr,
            momentum=hp.momentum,
            weight_decay=hp.weight_decay,
        )
        if hp.scheduler == "none":
            return optimizer
        if hp.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=hp.lr_factor, patience=hp.patience
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"},
            }
        interval = "epoch"
        if hp.scheduler == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(
                optimizer, step_size=hp.step_size, gamma=hp.lr_factor
            )
        elif hp.scheduler == "cosine":
            length = self.trainer.max_epochs
            if length is None or length < 1:  # epochs unbounded: anneal over steps
                interval, length = "step", self._steps_of_the_run()
            self._check_schedule_length("T_max", length, f"{interval}s")
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=length
            )
        else:
            interval, steps = "step", self._steps_of_the_run()
            self._check_schedule_length("total_steps", steps, "steps")
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=hp.lr,
                total_steps=steps,
                pct_start=hp.warmup,
                base_momentum=hp.momentum,
                max_momentum=hp.momentum,
            )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval},
        }

    # Lightning restores weights, optimiser, schedulers and loop counters, but not the
    # random generator that drives dropout (and augmentation in the main process);
    # without it a resumed run diverges from an uninterrupted one. The state saved at
    # the end of an epoch is put back when the resumed run starts training, after its
    # sanity check, so that a loaded checkpoint for inference leaves the caller's
    # generator alone.
    # On a GPU, the generator of this process's own device (the one its dropout
    # draws from) is kept; only the process that writes the checkpoint (rank 0)
    # has its state saved, so only it restores one.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_state"] = torch.get_rng_state()
        if self.device.type == "cuda":
            checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state(self.device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is None or not self.trainer.training:
            return
        self._resumed_rng = {
            key: checkpoint[key]
            for key in ("rng_state", "cuda_rng_state")
            if key in checkpoint
        }
        self._resumed_schedulers = checkpoint.get("lr_schedulers", [])

    def on_train_start(self) -> None:
        state = getattr(self, "_resumed_rng", {})
        if "rng_state" in state:
            torch.set_rng_state(state["rng_state"])
        cuda_state = state.get("cuda_rng_state")
        if isinstance(cuda_state, list):  # older checkpoints: every visible device
            cuda_state = cuda_state[0] if cuda_state else None
        if (
            isinstance(cuda_state, torch.Tensor)
            and self.device.type == "cuda"
            and self.global_rank == 0
        ):
            torch.cuda.set_rng_state(cuda_state, self.device)
        self._resumed_rng = {}

    def _steps_of_the_run(self) -> int:
        """The optimiser steps the fit will take, for a schedule fitted to them.

        Raises:
            RunSettingsError: for a run without a bound (``max_epochs=-1`` and no
                ``max_steps``) or without a training batch.
        """
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps) or steps < 1:
            raise RunSettingsError(
                f"the {self.hparams.scheduler!r} schedule is fitted to the whole run, "
                f"which here has {steps} optimiser steps: bound the run with "
                "trainer.max_epochs or trainer.max_steps (with at least one "
                "training batch), or choose --model.scheduler step or plateau"
            )
        return int(steps)

    def _check_schedule_length(self, key: str, length: int, unit: str) -> None:
        """Refuse to resume a schedule whose length is fixed by the fit's (one-cycle's
        steps, cosine's epochs) with another length: torch would step past the end
        (one-cycle raises, cosine climbs again)."""
        saved = [state.get(key) for state in getattr(self, "_resumed_schedulers", [])]
        if saved and saved[0] is not None and saved[0] != length:
            raise RunSettingsError(
                f"the checkpoint's {self.hparams.scheduler!r} schedule spans "
                f"{saved[0]} {unit}, this fit {length}: the schedule is fitted to the "
                "whole run and cannot be extended. Resume with the checkpoint's "
                "run length (trainer.max_epochs, max_steps, limit_train_batches, "
                "accumulate_grad_batches, devices and data.batch_size as they were) "
                "to finish that run, or start a new fit without --ckpt_path."
            )


# The SGD and schedule settings' ranges (torch checks some only when the fit starts).
_RECIPE_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "lr": ("positive", lambda v: v > 0),
    "momentum": ("in [0, 1)", lambda v: 0 <= v < 1),
    "weight_decay": (">= 0", lambda v: v >= 0),
    "lr_factor": ("in (0, 1)", lambda v: 0 < v < 1),
    "patience": (">= 0", lambda v: v >= 0),
    "step_size": ("positive", lambda v: v > 0),
    "warmup": ("in [0, 1]", lambda v: 0 <= v <= 1),
}


def _check_recipe(hparams: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first SGD or schedule setting out of range."""
    for name, (allowed, holds) in _RECIPE_RANGES.items():
        if not holds(hparams[name]):
            raise ValueError(f"{name} must be {allowed}, got {hparams[name]!r}")
