"""``build_site``: scan a dataset, project each channel's top-k, compute each image's
maps, and write the static site. Each stage runs in Lightning's predict loop through
``lightning_zfnet.run_batches`` (spread over processes under DDP, written by global
rank 0) and resumes from what a killed run wrote into ``OUT/work``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from benchmarks.methods import METHODS, Setup
from captum_deconvnet import receptive_field
from captum_deconvnet.topk import first_item
from lightning_zfnet import FileWriter, TopKWriter, fixed_batches, run_batches
from lightning_zfnet.batches import default_trainer
from lightning_zfnet.scan import ScanResult, top_k_compute

from . import paths
from .site import Layer, render_site
from .source import Source
from .stages import Entries, ImageWork, ProjectionWork

__all__ = ["build_site"]


def build_site(
    source: Source,
    out: str | os.PathLike,
    trainer: pl.Trainer | None = None,
    k: int = 9,
    batch_size: int = 64,
    maps: int | None = None,
    channels: int | None = None,
    methods: Sequence[str] | None = None,
    num_workers: int = 0,
) -> Path:
    """Build the explorer's site for ``source`` in ``out``; returns its index page.

    Args:
        source: the model, the dataset and the layers.
        out: the site's folder. A build killed part way resumes when started again
            with the same settings (``out/work`` holds its progress).
        trainer: runs every stage, e.g. ``pl.Trainer(strategy="ddp", devices=8,
            num_nodes=2)``; the default runs on one device.
        k: activations per channel (the paper shows 9).
        batch_size: images per scanning pass and entries per projection pass.
        maps: images that get occlusion and attribution maps, taken by rank (every
            channel's strongest image first, then the second ...); default all.
        channels: only the first ``channels`` channels of each layer.
        methods: names in ``benchmarks.methods.METHODS`` (default all).
        num_workers: data loader workers per process.

    Raises:
        ValueError: for settings out of range, unknown methods, or an ``out``
            holding a build with other settings.
    """
    methods = list(METHODS) if methods is None else list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {list(METHODS)}")
    for name, value in (("k", k), ("batch_size", batch_size), ("maps", maps)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    out, trainer = Path(out), trainer or default_trainer()
    model, dataset = source.model, source.dataset
    shape = tuple(first_item(dataset[0]).shape)
    window, stride = source.occluder(shape[-2:])
    settings = {
        "source": [source.title, source.description],
        "layers": source.layers,
        "images": len(dataset),
        "k": k,
        "batch_size": batch_size,
        "maps": maps,
        "channels": channels,
        "methods": methods,
        "occluder": [window, stride],
    }
    _check_settings(out / "work" / "settings.json", settings, trainer.is_global_zero)
    names = list(source.layers.values())
    timings = {}

    start = time.perf_counter()
    scan: ScanResult = run_batches(
        model,
        dataset,
        fixed_batches(len(dataset), batch_size),
        top_k_compute(names, k, outputs=True),
        TopKWriter(k, len(dataset), out / "work" / "scan.pt"),
        trainer,
        num_workers,
    )
    timings["scan_s"] = time.perf_counter() - start

    layers = _layers(source, scan, channels, shape)
    start = time.perf_counter()
    entries, images, batches = _entries(layers, scan, batch_size)
    projection_records = run_batches(
        model,
        Entries(dataset, entries, images),
        batches,
        ProjectionWork(
            names,
            [layer.slug for layer in layers],
            [layer.field for layer in layers],
            source.picture,
        ),
        FileWriter(out, "work/projections.log"),
        trainer,
        num_workers,
    )
    timings["projections_s"] = time.perf_counter() - start

    start = time.perf_counter()
    shown = _images_by_rank(layers, scan)
    chosen = frozenset(shown if maps is None else shown[:maps])
    work = ImageWork(
        source.picture,
        names[-1],
        _setup(model, window, stride),
        chosen,
        source.classes,
        methods,
    )
    image_records = run_batches(
        model,
        dataset,
        _chunks(sorted(shown), max(1, min(batch_size, 16))),
        work,
        FileWriter(out, "work/images.log"),
        trainer,
        num_workers,
    )
    timings["images_s"] = time.perf_counter() - start
    if trainer.is_global_zero:
        start = time.perf_counter()
        notes = sorted(
            {n for record in projection_records.values() for n in record["notes"]}
        )
        maps_of = {
            int(i): r for record in image_records.values() for i, r in record.items()
        }
        render_site(out, source, layers, scan, maps_of, notes, methods)
        timings["pages_s"] = time.perf_counter() - start
        (out / "work" / "timings.json").write_text(json.dumps(timings, indent=2))
    return out / paths.INDEX


def _check_settings(path: Path, settings: dict, writer: bool) -> None:
    settings = json.loads(json.dumps(settings))  # as JSON gives them back
    if path.exists():
        saved = json.loads(path.read_text())
        differ = sorted(key for key in settings if saved.get(key) != settings[key])
        if differ:
            raise ValueError(
                f"{path.parent.parent} holds a build with other {', '.join(differ)}: "
                "build into another folder, or remove this one to start again"
            )
    elif writer:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2))


def _layers(
    source: Source, scan: ScanResult, channels: int | None, shape: tuple
) -> list[Layer]:
    layers = []
    for shown, name in source.layers.items():
        values = scan.top.entries(name).values
        count = len(values) if channels is None else min(channels, len(values))
        try:
            field = receptive_field(
                source.model, source.model.get_submodule(name), shape
            )
            reason = ""
        except ValueError as error:  # patches are then whole images
            field, reason = None, str(error)
        layers.append(
            Layer(shown, paths.slug(shown), name, field, reason, count, len(values))
        )
    return layers


def _entries(
    layers: list[Layer], scan: ScanResult, batch_size: int
) -> tuple[Tensor, Tensor, list[list[int]]]:
    """Every filled entry of the shown channels as ``(layer, channel, rank, row,
    col)``, its image, and batches of at most ``batch_size`` within a layer."""
    rows, images, batches = [], [], []
    for number, layer in enumerate(layers):
        _, found, r, c = scan.top.entries(layer.name)
        first = len(rows)
        for channel in range(layer.count):
            for rank in range(found.shape[1]):
                if found[channel, rank] >= 0:
                    rows.append(
                        [number, channel, rank, r[channel, rank], c[channel, rank]]
                    )
                    images.append(found[channel, rank])
        batches += _chunks(list(range(first, len(rows))), batch_size)
    entries = torch.tensor(rows, dtype=torch.long).reshape(-1, 5)
    return entries, torch.tensor(images, dtype=torch.long), batches


def _images_by_rank(layers: list[Layer], scan: ScanResult) -> list[int]:
    """The images of the shown channels' entries: every channel's first, then
    every channel's second, and so on, each image once."""
    tops = [scan.top.entries(layer.name).images[: layer.count] for layer in layers]
    seen: dict[int, None] = {}
    for rank in range(scan.top.k):
        for images in tops:
            seen |= {int(i): None for i in images[:, rank].tolist() if i >= 0}
    return list(seen)


def _setup(model: nn.Module, window: int, stride: int) -> Setup:
    """The benchmark's settings for any CNN: Grad-CAM on the last convolution."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    leaves = [m for m in model.modules() if not list(m.children())]
    if not convs:
        raise ValueError("the model has no nn.Conv2d: the explorer is for CNNs")
    return Setup(convs[-1], leaves[-1], window=window, stride=stride)


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
