"""The work behind the site, as batches for ``lightning_zfnet.run_batches``: the
deconvnet projections of each channel's top-k activations with their patches
(Fig. 2), and per image its picture, occlusion maps (Fig. 7) and the attribution
methods of the benchmark. Each batch's result is ``(files, record)`` for
``lightning_zfnet.FileWriter``; files are PNG bytes under the site's paths."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from benchmarks.methods import METHODS, Setup
from captum_deconvnet import (
    FeatureMapDeconvNet,
    OcclusionSensitivity,
    ReceptiveField,
    cut_patches,
    normalize_projection,
)
from captum_deconvnet.topk import first_item

from . import paths
from .pictures import diverging, occlusion_panels, png

__all__ = ["Entries", "ImageWork", "ProjectionWork"]

MAPS_PIXELS = 16 * 64 * 64  # image pixels whose maps are computed together


class Entries(Dataset):
    """Top-k entries as items ``(image, (layer, channel, rank, row, col))``."""

    def __init__(self, dataset: Dataset, entries: Tensor, images: Tensor) -> None:
        self.dataset, self.entries, self.images = dataset, entries, images

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = first_item(self.dataset[int(self.images[index])])
        return image, self.entries[index]


@dataclass
class ProjectionWork:
    """Projects a batch of entries of one layer and cuts their patches."""

    layer_names: Sequence[str]  # qualified, by layer number
    slugs: Sequence[str]  # the layers' folder names
    fields: Sequence[ReceptiveField | None]  # None: cut to the projection's box
    picture: Callable[[Tensor], Tensor]

    def __call__(self, model: nn.Module, indices: Tensor, items: tuple) -> tuple:
        images, entries = items
        number = int(entries[0, 0])
        if not bool((entries[:, 0] == number).all()):
            raise ValueError("a batch of projections mixes layers")
        layer = model.get_submodule(self.layer_names[number])
        positions = entries[:, 3:5]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            projection = FeatureMapDeconvNet(model, layer).attribute(
                images, entries[:, 1], positions=positions
            )
        projection, pictures = projection.detach(), self.picture(images)
        field = self.fields[number]
        if field is not None:
            projection = cut_patches(projection, field, positions)
            darkest = pictures.flatten(1).amin(1)
            pictures = cut_patches(pictures, field, positions, fill=darkest)
        shown_all = normalize_projection(projection)
        files = {}
        for j, (_, channel, rank, _, _) in enumerate(entries.tolist()):
            shown, patch = shown_all[j], pictures[j]
            if field is None:  # the box where the projection is not zero
                rows, cols = _support(projection[j] != 0)
                shown, patch = shown[:, rows, cols], patch[:, rows, cols]
            stem = paths.entry(self.slugs[number], channel, rank)
            files[stem + "-projection.png"] = png(shown)
            files[stem + "-patch.png"] = png(patch)
        notes = sorted({str(w.message) for w in caught})
        return files, {"notes": notes}


def _support(nonzero: Tensor) -> tuple[slice, slice]:
    """Rows and columns of the box holding every ``True`` of ``(C, H, W)`` (all of
    it if none is)."""
    found = nonzero.any(0)
    if not found.any():
        return slice(None), slice(None)
    rows, cols = found.any(1).nonzero().flatten(), found.any(0).nonzero().flatten()
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(
        int(cols[0]), int(cols[-1]) + 1
    )


@dataclass
class ImageWork:
    """Writes each image's picture; for the images in ``with_maps`` also the
    occlusion maps (Fig. 7: ``OcclusionSensitivity.sensitivity_maps`` watching the
    strongest map of layer ``watched``, and that map's deconvnet projection) and
    every method of ``benchmarks.methods.METHODS``."""

    picture: Callable[[Tensor], Tensor]
    watched: str  # the layer whose strongest map occlusion watches
    setup: Setup
    with_maps: frozenset[int]
    classes: Sequence[str] | None
    methods: Sequence[str]

    def __call__(self, model: nn.Module, indices: Tensor, items) -> tuple:
        images = first_item(items)
        pictures = self.picture(images)
        files = {
            paths.image_png(i): png(picture)
            for i, picture in zip(indices.tolist(), pictures, strict=True)
        }
        chosen = [j for j, i in enumerate(indices.tolist()) if i in self.with_maps]
        # Some methods hold dozens of copies of their images (integrated gradients
        # 50, with their gradients): large images go a few at a time.
        step = max(1, MAPS_PIXELS // images[0, 0].numel())
        records = {}
        for start in range(0, len(chosen), step):
            picked = torch.tensor(chosen[start : start + step], device=images.device)
            found, record = self._maps(model, images[picked], indices[picked].tolist())
            files |= found
            records |= record
        return files, records

    def _maps(self, model, images, ids) -> tuple[dict, dict]:
        layer = model.get_submodule(self.watched)
        window, stride = self.setup.window, self.setup.stride
        maps = OcclusionSensitivity(model).sensitivity_maps(
            images, window, stride, layer=layer
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the projection stage reports them
            projection = FeatureMapDeconvNet(model, layer).attribute(
                images, maps.channel
            )
        files, records = {}, {}
        for j, i in enumerate(ids):
            size = tuple(images.shape[-2:])
            panels, captions = occlusion_panels(maps, j, projection[j].detach(), size)
            files |= {paths.occlusion_png(i, n): data for n, data in panels.items()}
            records[i] = {
                "target": int(maps.target[j]),
                "unoccluded": float(maps.unoccluded_probability[j]),
                "channel": int(maps.channel[j]),
                "window": [w / s for w, s in zip(maps.window, size, strict=True)],
                "methods": {},
                **captions,
            }
        files |= self._methods(model, images, maps.target, ids, records)
        return files, {str(i): record for i, record in records.items()}

    def _methods(self, model, images, targets, ids, records) -> dict[str, bytes]:
        """Every method's maps as PNGs; each image's record says, per method, ""
        or why it failed."""
        files = {}
        for name in self.methods:
            attribution = self._explain(name, model, images, targets)
            failed = attribution if isinstance(attribution, str) else ""
            if not failed:
                heat = diverging(attribution.detach().sum(1))
                files |= {
                    paths.method_png(i, name): png(heat[j]) for j, i in enumerate(ids)
                }
            for i in ids:
                records[i]["methods"][name] = failed
        return files

    def _explain(self, name, model, images, targets) -> Tensor | str:
        """The method's attribution, or why it failed (shown on the page)."""
        # Captum's notes on hooks and requires_grad, and the deconvnet's on
        # activations without a rule (the projections' notes list those).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return METHODS[name].explain(model, images, targets, self.setup)
            except Exception as error:  # noqa: BLE001
                return f"failed: {type(error).__name__}: {error}"
