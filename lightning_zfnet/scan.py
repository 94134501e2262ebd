"""The top-k scan of the paper's Fig. 2 over a whole dataset in Lightning's predict
loop (:mod:`.batches`): under DDP every process scans its share of the batches and
rank 0 merges their states exactly (``captum_deconvnet.TopKActivations`` merges in
any order to the same state). With a file the merged state is saved as it grows, and
a killed scan resumes from it. With ``distinct_images`` each channel's top-k holds k
different images, as in the paper's Fig. 2."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from captum_deconvnet import TopKActivations
from captum_deconvnet._inputs import check_images
from captum_deconvnet.layers import check_layers, layer_name, layer_outputs, unwrap
from captum_deconvnet.topk import check_indexed, first_item

from .batches import BatchWriter, fixed_batches, run_batches

__all__ = ["ScanResult", "TopKWriter", "scan_top_activations", "top_k_compute"]

SAVE_EVERY_S = 30.0  # how often a TopKWriter with a file saves, by default


@dataclass
class ScanResult:
    """What a scan found.

    Attributes:
        top: each channel's top-k activations, keyed by layer name.
        outputs: per image (by dataset index) ``predicted`` (int64, the class of the
            largest output), ``probability`` (float32, its softmax probability) and
            ``label`` (int64, the item's second element when it is a class index),
            where the scan recorded them; ``-1`` or NaN for images not scanned.
    """

    top: TopKActivations
    outputs: dict[str, Tensor] = field(default_factory=dict)


def top_k_compute(
    layer_names: Sequence[str],
    k: int,
    outputs: bool = False,
    distinct_images: bool = False,
):
    """The compute function of a top-k scan (see :func:`~.batches.run_batches`):
    a batch's :class:`TopKActivations` (``k``, ``distinct_images``) of the layers
    ``layer_names``, and with ``outputs`` its images' predictions and labels (the
    model then runs to its end). The function raises a TypeError or ValueError
    for a batch whose images are not a floating-point tensor ``(N, C, H, W)``.
    """

    def compute(model: nn.Module, indices: Tensor, items: Any) -> tuple:
        layers = [model.get_submodule(name) for name in layer_names]
        with torch.no_grad():
            images = check_images(first_item(items), "the dataset's batches")
            maps, output = layer_outputs(model, layers, images, stop_early=not outputs)
        top = TopKActivations(k, distinct_images)
        for name, activations in zip(layer_names, maps, strict=True):
            top.update(name, activations, indices)
        per_image = _per_image(output, items) if outputs else {}
        return top, {"index": indices.cpu(), **per_image}

    return compute


def _per_image(output: Any, items: Any) -> dict[str, Tensor]:
    found = {}
    if isinstance(output, Tensor) and output.ndim == 2 and output.shape[1] > 1:
        probability, predicted = output.detach().float().softmax(1).max(1)
        found |= {"predicted": predicted.cpu(), "probability": probability.cpu()}
    if isinstance(items, (tuple, list)) and len(items) > 1:
        labels = items[1]
        if isinstance(labels, Tensor) and labels.ndim == 1:
            if not labels.is_floating_point():
                found["label"] = labels.long().cpu()
    return found


class TopKWriter(BatchWriter):
    """Merges the batches' top-k states and per-image outputs into a
    :class:`ScanResult`. With ``path`` it saves the result and the batches it holds
    at most every ``save_every`` seconds and at the end (replacing the file whole);
    a writer made on an existing file resumes from it.

    Args:
        k: activations kept per channel.
        size: images in the dataset.
        path: the state file, or ``None`` to keep it in memory only.
        save_every: seconds between saves (default ``SAVE_EVERY_S``).
        distinct_images: whether the batches' states keep one activation per
            image and channel (as ``top_k_compute``'s); a state of the other form
            is refused.

    Raises:
        ValueError: a file holding a scan with other ``k``, ``size`` or
            ``distinct_images``.
    """

    def __init__(
        self,
        k: int,
        size: int,
        path: str | os.PathLike | None = None,
        save_every: float | None = None,
        distinct_images: bool = False,
    ) -> None:
        self.size = size
        self.save_every = SAVE_EVERY_S if save_every is None else save_every
        self.path = None if path is None else Path(path)
        self.result = ScanResult(TopKActivations(k, distinct_images))
        self.done: set[int] = set()
        if self.path is not None and self.path.exists():
            saved = torch.load(self.path, weights_only=False)
            now = {"k": k, "size": size, "distinct_images": distinct_images}
            was = {key: saved.get(key, False) for key in now}  # older: no distinct
            if any(was[key] != value for key, value in now.items()):
                raise ValueError(
                    f"{self.path} holds a scan with {_settings(was)}, not "
                    f"{_settings(now)}: remove it to start again"
                )
            self.result, self.done = saved["result"], set(saved["done"])
        self._saved_at = time.monotonic()

    def written(self) -> set[int]:
        return set(self.done)

    def write(self, batch: int, result: tuple) -> None:
        top, per_image = result
        self.result.top.merge(top)
        index = per_image["index"]
        for name, values in per_image.items():
            if name == "index":
                continue
            if name not in self.result.outputs:
                empty = float("nan") if values.is_floating_point() else -1
                self.result.outputs[name] = torch.full(
                    (self.size,), empty, dtype=values.dtype
                )
            self.result.outputs[name][index] = values
        self.done.add(batch)
        if time.monotonic() - self._saved_at >= self.save_every:
            self._save()

    def close(self) -> ScanResult:
        self._save()
        return self.result

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        part = self.path.with_name(self.path.name + ".part")
        top = self.result.top
        state = {"k": top.k, "size": self.size, "distinct_images": top.distinct_images}
        torch.save({**state, "done": sorted(self.done), "result": self.result}, part)
        part.replace(self.path)
        self._saved_at = time.monotonic()


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in settings.items())


def scan_top_activations(
    model: nn.Module,
    layers: Sequence[nn.Module],
    dataset: Dataset | Tensor,
    k: int = 9,
    batch_size: int = 64,
    trainer: pl.Trainer | None = None,
    num_workers: int = 0,
    distinct_images: bool = False,
) -> TopKActivations:
    """The top-``k`` activations of every channel of ``layers`` over ``dataset``.

    Args:
        model: the network; a compiled or ``DataParallel`` one runs as the module
            it wraps, eagerly (as in ``captum_deconvnet.top_activations``).
        layers: submodules of ``model`` (their outputs are scanned).
        dataset: images ``(N, C, H, W)``, or a dataset whose items are images or
            tuples starting with one (``(image, label, ...)``).
        k: activations kept per channel.
        batch_size: images per forward pass (per process).
        trainer: runs the scan; e.g. ``pl.Trainer(strategy="ddp", devices=2)`` to
            spread it over processes. Default: one device, no logging.
        num_workers: data loader workers.
        distinct_images: keep at most one activation per image and channel, at its
            strongest position: each channel's ``k`` images differ, as in the
            paper's Fig. 2. Default ``False``: the ``k`` strongest (image, position)
            pairs. Rank 0 merges the processes' states exactly either way.

    Returns:
        The state, the same in every process, keyed by the layers' names in
        ``model`` (``model.get_submodule(name)`` gives a layer back).

    Raises:
        TypeError: if the dataset's images are not floating-point tensors, a
            layer's output is not one tensor, or ``dataset`` is a ``DataLoader``
            or an ``IterableDataset``.
        ValueError: if ``layers`` is not a non-empty list (one layer alone is
            refused, as by ``captum_deconvnet.top_activations``), a layer is not a
            submodule of ``model`` or does not run, ``k`` is not positive, or the
            images are not ``(N, C, H, W)``.

    Example::

        >>> top = scan_top_activations(model, [model.features[4]], val_set)
        >>> top.entries("features.4").images[5]  # images of channel 5's top 9
    """
    check_layers(layers)
    check_indexed(dataset)
    model = unwrap(model)  # names inside a compiled or data-parallel wrapper
    names = [layer_name(model, layer) for layer in layers]
    result = run_batches(
        model,
        dataset,
        fixed_batches(len(dataset), batch_size),
        top_k_compute(names, k, distinct_images=distinct_images),
        TopKWriter(k, len(dataset), distinct_images=distinct_images),
        trainer,
        num_workers,
    )
    return result.top
