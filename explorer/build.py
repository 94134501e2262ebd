"""``build_site``: scan a dataset, project each channel's top-k, compute each image's
maps, and write the static site. Each stage runs in Lightning's predict loop through
``lightning_zfnet.run_batches`` (spread over processes under DDP, written by global
rank 0) and resumes from what a killed run wrote into ``OUT/work``."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from benchmarks.methods import METHODS, Setup
from captum_deconvnet import receptive_field
from captum_deconvnet._inputs import positive_int
from captum_deconvnet.layers import layer_outputs, model_device
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
    distinct_images: bool = True,
) -> Path:
    """Build the explorer's site for ``source`` in ``out``; returns its index page.

    Args:
        source: the model, the dataset and the layers.
        out: the site's folder. A build killed part way resumes when started again
            with the same settings and weights (``out/work`` holds its progress).
        trainer: runs every stage, e.g. ``pl.Trainer(strategy="ddp", devices=8,
            num_nodes=2)``; the default runs on one device.
        k: activations per channel (the paper shows 9).
        batch_size: images per scanning pass and entries per projection pass.
        maps: images that get occlusion and attribution maps, taken by rank (every
            channel's strongest image first, then the second ...); default all.
        channels: only the first ``channels`` channels of each layer.
        methods: names in ``benchmarks.methods.METHODS`` (default all).
        num_workers: data loader workers per process.
        distinct_images: each channel's ``k`` activations from ``k`` different
            images, each at its strongest position, as in the paper's Fig. 2;
            ``False``: the ``k`` strongest (image, position) pairs.

    Raises:
        ValueError: for settings out of range, unknown methods, a layer whose
            output is not feature maps ``(N, C, H, W)`` (a linear layer's, say), or
            an ``out`` holding a build with other settings or model weights.
    """
    methods = list(METHODS) if methods is None else list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {list(METHODS)}")
    # checked before out/work/settings.json is written, which would refuse the
    # corrected command
    k, batch_size = positive_int("k", k), positive_int("batch_size", batch_size)
    for name, value in (("maps", maps), ("channels", channels)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    shape = source.image_shape()
    _check_feature_maps(source)
    out, trainer = Path(out), trainer or default_trainer()
    settings = {
        "source": [source.title, source.description],
        "weights": _weights_digest(source.model),
        "layers": source.layers,
        "images": len(source.dataset),
        "k": k,
        "distinct_images": distinct_images,
        "batch_size": batch_size,
        "maps": maps,
        "channels": channels,
        "methods": methods,
        "occluder": list(source.occluder(shape[-2:])),
    }
    _check_settings(out / "work" / "settings.json", settings, trainer.is_global_zero)
    build = _Build(source, out, trainer, num_workers, batch_size)
    timings: dict[str, float] = {}
    with _timed(timings, "scan_s"):
        scan = build.scan(k, distinct_images)
    layers = _layers(source, scan, channels, shape)
    with _timed(timings, "projections_s"):
        notes = build.project(layers, scan)
    with _timed(timings, "images_s"):
        shown = _images_by_rank(layers, scan)
        found = build.images(shown, shown if maps is None else shown[:maps], methods)
    if trainer.is_global_zero:
        with _timed(timings, "pages_s"):
            render_site(out, source, layers, scan, found, notes, methods)
        (out / "work" / "timings.json").write_text(json.dumps(timings, indent=2))
    return out / paths.INDEX


def _check_feature_maps(source: Source) -> None:
    """Raise unless each layer's output is feature maps ``(N, C, H, W)``: the site
    shows positions in them (Fig. 2). One image runs through the model."""
    model = source.model
    layers = [model.get_submodule(name) for name in source.layers.values()]
    image = first_item(source.dataset[0])[None].to(model_device(model))
    with torch.no_grad():
        outputs, _ = layer_outputs(model, layers, image)
    for shown, layer, output in zip(source.layers, layers, outputs, strict=True):
        if output.ndim != 4:
            raise ValueError(
                f"layer {shown!r} ({source.layers[shown]}, {type(layer).__name__}) "
                f"gives outputs of shape {tuple(output.shape)}, not feature maps "
                "(N, C, H, W): the explorer shows positions in a layer's maps, so "
                "only convolutional layers (convolutions, their ReLUs and pools) "
                "can be explored"
            )


def _weights_digest(model: nn.Module) -> str:
    """A digest of the model's parameters and buffers, so that a build with other
    weights (a retrained checkpoint at the same path) is refused, not shown the
    old build's scan."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        if isinstance(value, Tensor):
            digest.update(name.encode())
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


@dataclass
class _Build:
    """The stages, each a ``run_batches`` job writing into ``out``."""

    source: Source
    out: Path
    trainer: pl.Trainer
    num_workers: int
    batch_size: int

    def run(self, dataset, batches, compute, writer):
        model, trainer = self.source.model, self.trainer
        return run_batches(
            model, dataset, batches, compute, writer, trainer, self.num_workers
        )

    def scan(self, k: int, distinct_images: bool) -> ScanResult:
        """Each channel's top-k, each image's prediction and label."""
        size, names = len(self.source.dataset), list(self.source.layers.values())
        path = self.out / "work" / "scan.pt"
        return self.run(
            self.source.dataset,
            fixed_batches(size, self.batch_size),
            top_k_compute(names, k, outputs=True, distinct_images=distinct_images),
            TopKWriter(k, size, path, distinct_images=distinct_images),
        )

    def project(self, layers: list[Layer], scan: ScanResult) -> list[str]:
        """Every entry's projection and patch; returns the deconvnet's notes."""
        entries, images, batches = _entries(layers, scan, self.batch_size)
        work = ProjectionWork(
            [layer.name for layer in layers],
            [layer.slug for layer in layers],
            [layer.field for layer in layers],
            self.source.picture,
        )
        records = self.run(
            Entries(self.source.dataset, entries, images),
            batches,
            work,
            FileWriter(self.out, "work/projections.log"),
        )
        return sorted({n for record in records.values() for n in record["notes"]})

    def images(
        self, shown: list[int], with_maps: list[int], methods: list[str]
    ) -> dict[int, dict]:
        """Each shown image's picture, and maps for those ``with_maps``; returns
        what the maps' captions need, by image."""
        model, shape = self.source.model, self.source.image_shape()
        window, stride = self.source.occluder(shape[-2:])
        work = ImageWork(
            self.source.picture,
            list(self.source.layers.values())[-1],
            _setup(model, window, stride),
            frozenset(with_maps),
            self.source.classes,
            methods,
        )
        records = self.run(
            self.source.dataset,
            _chunks(sorted(shown), max(1, min(self.batch_size, 16))),
            work,
            FileWriter(self.out, "work/images.log"),
        )
        return {int(i): r for record in records.values() for i, r in record.items()}


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
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    leaves = [n for n, m in model.named_modules() if not list(m.children())]
    if not convs:
        raise ValueError("the model has no nn.Conv2d: the explorer is for CNNs")
    return Setup(convs[-1], leaves[-1], window=window, stride=stride)


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
