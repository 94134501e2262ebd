"""Callbacks of the paper's training recipe."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["FilterRenorm", "renormalize_filters"]


@torch.no_grad()
def renormalize_filters(model: nn.Module, radius: float) -> None:
    """Scale every conv filter whose RMS exceeds ``radius`` back to RMS ``radius``.

    A filter is one output channel's weights, ``weight[o]``; biases are left alone,
    and so are frozen weights (``requires_grad`` off: a fixed feature extractor).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd) and module.weight.requires_grad:
            weight = module.weight
            rms = weight.flatten(1).pow(2).mean(dim=1).sqrt()
            scale = (radius / rms).clamp(max=1.0)
            weight.mul_(scale.view(-1, *([1] * (weight.ndim - 1))))


class FilterRenorm(pl.Callback):
    """After every optimiser step, renormalise conv filters as in Sec. 3 of the paper.

    The rescaling is deterministic, so DDP replicas stay identical. The paper's radius
    0.1 assumes inputs in [-128, 128]; with mean/std normalised inputs choose it anew.

    Args:
        radius: largest RMS a conv filter may keep.
    """

    def __init__(self, radius: float = 0.1) -> None:
        if not radius > 0:
            raise ValueError(f"radius must be positive, got {radius!r}")
        self.radius = radius
        self._handles: list[RemovableHandle] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A step hook fires only when the optimiser really steps, so it is right under
        # gradient accumulation and when AMP's scaler skips a step.
        def hook(*_: Any) -> None:
            renormalize_filters(pl_module, self.radius)

        self._handles = [
            optimizer.register_step_post_hook(hook) for optimizer in trainer.optimizers
        ]

    def teardown(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
