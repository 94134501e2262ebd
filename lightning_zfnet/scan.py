"""The top-k scan of the paper's Fig. 2 over a whole dataset in Lightning's predict
loop: under DDP every process scans its share and the states are merged exactly
(``captum_deconvnet.TopKActivations`` merges in any order to the same state)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from captum_deconvnet import TopKActivations
from captum_deconvnet.layers import eval_mode, layer_name, layer_outputs
from captum_deconvnet.topk import IndexedDataset, first_item

__all__ = ["ActivationScan", "scan_top_activations"]


class ActivationScan(pl.LightningModule):
    """Runs ``Trainer.predict`` over a dataset to collect a top-k state
    (:class:`~captum_deconvnet.TopKActivations`).

    Batches are ``(image_indices, items)`` as :class:`IndexedDataset` makes them;
    images are the items, or their first element. At the end the states of all
    processes are gathered and merged, so every process holds the whole result in
    :attr:`top`. Use ``strategy="ddp"`` (``ddp_spawn`` does not return the state).

    Args:
        model: the network; it is used as it is (``Trainer.predict`` puts it in
            eval mode and back).
        layers: submodules of ``model`` whose outputs are scanned.
        k: activations kept per channel.
    """

    def __init__(self, model: nn.Module, layers: Sequence[nn.Module], k: int = 9):
        super().__init__()
        self.model = model
        self.layer_names = [layer_name(model, layer) for layer in layers]
        self.top = TopKActivations(k)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        indices, items = batch
        layers = [self.model.get_submodule(name) for name in self.layer_names]
        outputs, _ = layer_outputs(self.model, layers, first_item(items))
        for name, output in zip(self.layer_names, outputs, strict=True):
            self.top.update(name, output, indices)
        return indices  # returning nothing would make Lightning warn

    def on_predict_end(self) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(states, self.top)
            merged = TopKActivations(self.top.k)
            for state in states:
                merged.merge(state)
            self.top = merged


def scan_top_activations(
    model: nn.Module,
    layers: Sequence[nn.Module],
    dataset: Dataset | Tensor,
    k: int = 9,
    batch_size: int = 64,
    trainer: pl.Trainer | None = None,
    num_workers: int = 0,
) -> TopKActivations:
    """The top-``k`` activations of every channel of ``layers`` over ``dataset``.

    Args:
        model: the network.
        layers: submodules of ``model`` (their outputs are scanned).
        dataset: images ``(N, C, H, W)``, or a dataset whose items are images or
            tuples starting with one (``(image, label, ...)``).
        k: activations kept per channel.
        batch_size: images per forward pass (per process).
        trainer: runs the scan; e.g. ``pl.Trainer(strategy="ddp", devices=2)`` to
            spread it over processes. Default: one device, no logging.
        num_workers: data loader workers.

    Returns:
        The state, the same in every process, keyed by the layers' names in
        ``model`` (``model.get_submodule(name)`` gives a layer back).

    Example::

        >>> top = scan_top_activations(model, [model.features[4]], val_set)
        >>> top.entries("features.4").images[5]  # images of channel 5's top 9
    """
    scan = ActivationScan(model, layers, k)
    loader = DataLoader(
        IndexedDataset(dataset), batch_size=batch_size, num_workers=num_workers
    )
    trainer = trainer or pl.Trainer(
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # Lightning leaves the model on the CPU, and in eval mode if predict raises:
    # put back its device and each module's mode.
    device = next(model.parameters(), torch.zeros(())).device
    try:
        with eval_mode(model):
            trainer.predict(scan, loader, return_predictions=False)
    finally:
        model.to(device)
    return scan.top
