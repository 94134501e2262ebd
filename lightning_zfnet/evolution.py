"""Feature evolution during training (the paper's Fig. 4), as a Lightning callback."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch import Tensor, nn
from torchvision.utils import make_grid, save_image

from captum_deconvnet import (
    LayerAtlas,
    normalize_projection,
    project_top_activations,
    top_activations,
)
from captum_deconvnet._inputs import check_images, check_submodule, positive_int
from captum_deconvnet.model_state import eval_mode
from captum_deconvnet.receptive_field import ReceptiveField
from captum_deconvnet.topk import first_item

__all__ = ["FeatureEvolution"]


class FeatureEvolution(pl.Callback):
    """At chosen epochs, project each feature map's strongest activation over a
    fixed set of images, and show the projections (to the logger and as PNGs).

    After epoch ``e`` (counted from 1) in ``epochs``, for every layer, it writes
    ``{layer}_epoch{e:03d}.png`` into the directory (a grid with one projection per
    channel, cut to the receptive field) and hands the same grid to every logger
    that takes images (``logger.experiment.add_image``, as TensorBoard's does). At
    the end of fitting ``{layer}_evolution.png`` shows a row per channel and a
    column per epoch. Only the global-zero process does this work; the model is
    put in eval mode for it and returned to its mode. The epochs shown are saved in
    checkpoints, so that a resumed fit's pictures keep those before the resume.
    Under ``fast_dev_run`` the projections are computed but no file is written.

    Args:
        layers: submodules of the LightningModule, or their names in it
            (``"model.features.4"``).
        epochs: epochs after which to project (the paper: 1, 2, 5, 10, 20, 30,
            40, 64).
        directory: where the PNG files go; by default ``feature_evolution`` in
            the trainer's log directory, so that a run's pictures stay beside its
            checkpoints and metrics.
        images: the fixed images ``(N, C, H, W)``; by default the first
            ``num_images`` of the validation loader.
        num_images: how many validation images to take without ``images``.
        normalization: as for :class:`~captum_deconvnet.FeatureMapDeconvNet`.

    Raises:
        ValueError: no layers, epochs not ints >= 1, ``num_images`` not a
            positive int, or ``images`` not ``(N, C, H, W)``.
        TypeError: ``images`` not a floating-point tensor (convert uint8 images
            as the model expects them).
        ValueError, at the start of fitting: a layer the module does not have.

    Attributes:
        history: per layer name, ``(epoch, LayerAtlas)`` for each epoch shown.

    Example::

        >>> evolution = FeatureEvolution(["model.features.4"], epochs=[1, 2, 5])
        >>> pl.Trainer(max_epochs=5, callbacks=[evolution]).fit(module, data)
    """

    def __init__(
        self,
        layers: Sequence[str | nn.Module],
        epochs: Sequence[int],
        directory: str | os.PathLike | None = None,
        images: Tensor | None = None,
        num_images: int = 64,
        normalization: str = "skip",
    ) -> None:
        if not layers:
            raise ValueError("layers is empty")
        if not epochs or any(not isinstance(e, int) or e < 1 for e in epochs):
            raise ValueError(f"epochs must be whole numbers >= 1, got {epochs!r}")
        if images is not None:  # checked now, not after the first epoch
            check_images(images, "images")
        self.layers = list(layers)
        self.epochs = sorted(set(epochs))
        self.directory = None if directory is None else Path(directory)
        self._output = self.directory  # resolved in setup
        self.images = images
        self.num_images = positive_int("num_images", num_images)
        self.normalization = normalization
        self.history: dict[str, list[tuple[int, LayerAtlas]]] = {}

    def setup(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> None:
        # Asked here, by every process: the log directory is broadcast from rank zero,
        # so rank zero asking alone (when it draws) would wait for the others forever.
        if self.directory is None:
            log_dir = trainer.log_dir or trainer.default_root_dir
            self._output = Path(log_dir) / "feature_evolution"

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the module's setup and configure_model, which may build the layers;
        # a misnamed layer stops the fit before it trains, not after an epoch.
        for layer in self.layers:
            _resolve(pl_module, layer)

    def on_train_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        epoch = trainer.current_epoch + 1
        if epoch not in self.epochs or not trainer.is_global_zero:
            return
        modules = [_resolve(pl_module, layer) for layer in self.layers]
        # in the precision the loop gives its batches (float64 under 64-true)
        images = trainer.precision_plugin.convert_input(self._fixed_images(trainer))
        images = images.to(pl_module.device)
        with eval_mode(pl_module):
            top = top_activations(pl_module, modules, images, k=1)
            atlases = project_top_activations(
                pl_module, top, images, normalization=self.normalization
            )
        for name, atlas in atlases.items():
            self.history.setdefault(name, []).append((epoch, atlas))
            grid = _grid(atlas.projections[:, 0])
            self._save(trainer, grid, f"{name}_epoch{epoch:03d}.png")
            _log_image(trainer, f"feature_evolution/{name}", grid, epoch)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for name, shown in self.history.items():
            # Row c: channel c's projection at each epoch shown, left to right.
            per_epoch = torch.stack([atlas.projections[:, 0] for _, atlas in shown], 1)
            grid = _grid(per_epoch.flatten(0, 1), per_row=len(shown))
            self._save(trainer, grid, f"{name}_evolution.png")

    def _save(self, trainer: pl.Trainer, grid: Tensor, name: str) -> None:
        if trainer.fast_dev_run:  # Lightning's debugging run writes no files
            return
        self._output.mkdir(parents=True, exist_ok=True)
        save_image(grid, self._output / name)

    def state_dict(self) -> dict[str, Any]:
        """The epochs shown so far, as plain tensors and numbers (checkpoints load
        with ``weights_only``)."""
        return {
            "history": {
                name: [(epoch, dataclasses.asdict(atlas)) for epoch, atlas in shown]
                for name, shown in self.history.items()
            }
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {
            name: [(epoch, _atlas(fields)) for epoch, fields in shown]
            for name, shown in state_dict.get("history", {}).items()
        }

    def _fixed_images(self, trainer: pl.Trainer) -> Tensor:
        if self.images is None:
            # The data module's own loader: the trainer's is sharded under DDP
            # (other images than on one device) and missing before a validation
            # has run (limit_val_batches=0, check_val_every_n_epoch > 1).
            datamodule = trainer.datamodule
            if datamodule is not None and is_overridden("val_dataloader", datamodule):
                loaders = datamodule.val_dataloader()
            else:
                loaders = trainer.val_dataloaders
            self.images = _first_images(loaders, self.num_images)
        return self.images


def _atlas(fields: dict[str, Any]) -> LayerAtlas:
    field = ReceptiveField(**{k: tuple(v) for k, v in fields["field"].items()})
    return LayerAtlas(**{**fields, "field": field})


def _resolve(pl_module: nn.Module, layer: str | nn.Module) -> nn.Module:
    if isinstance(layer, str):
        try:
            return pl_module.get_submodule(layer)
        except AttributeError as error:
            raise ValueError(f"the module has no layer {layer!r}") from error
    check_submodule(pl_module, layer)
    return layer


def _first_images(loaders: object, count: int) -> Tensor:
    """The first ``count`` images of a loader (the first, if a list).

    Raises:
        ValueError: no loader.
        TypeError: batches whose images are not a tensor or a tuple's first entry.
    """
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    if loaders is None:
        raise ValueError(
            "FeatureEvolution needs images: pass images=..., or fit with a "
            "validation loader (a data module's val_dataloader is used even when "
            "no validation runs)"
        )
    images = []
    for batch in loaders:
        image = first_item(batch)
        if not isinstance(image, Tensor):
            raise TypeError(
                "FeatureEvolution takes its images from the validation batches "
                "(a tensor, or the first entry of a tuple or list), but a batch is "
                f"a {type(batch).__name__}: pass the images as images=..."
            )
        images.append(image)
        if sum(len(x) for x in images) >= count:
            break
    return torch.cat(images)[:count].detach().cpu()


def _grid(
    projections: Tensor, per_row: int | None = None, min_side: int = 24
) -> Tensor:
    """A ``(3, H, W)`` picture of projections, each scaled around zero; small ones
    enlarged by a whole factor."""
    per_row = per_row or math.ceil(math.sqrt(len(projections)))
    zoom = max(1, math.ceil(min_side / projections.shape[-2]))
    pictures = normalize_projection(projections).float().cpu()
    pictures = pictures.repeat_interleave(zoom, -2).repeat_interleave(zoom, -1)
    return make_grid(pictures, nrow=per_row, padding=2, pad_value=1.0)


def _log_image(trainer: pl.Trainer, tag: str, grid: Tensor, epoch: int) -> None:
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            experiment.add_image(tag, grid, global_step=epoch)
