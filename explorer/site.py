"""The site's pages, from what the stages wrote: Jinja2 templates in
``explorer/templates``, one static page per layer, channel and image, so nothing is
fetched at view time (it works over file://) and a browser loads only the page it
shows; thumbnails load lazily."""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from captum_deconvnet import ReceptiveField
from lightning_zfnet.scan import ScanResult

from . import paths
from .source import Source

__all__ = ["Layer", "render_site"]

ASSETS = Path(__file__).with_name("static")


@dataclass
class Layer:
    """A shown layer: its shown and qualified names, folder, receptive field (or
    ``None`` and why not), how many channels are shown and how many it has."""

    shown: str
    slug: str
    name: str
    field: ReceptiveField | None
    no_field: str
    count: int
    channels: int


class _Pages:
    def __init__(self, out: Path, site: dict) -> None:
        self.out, self.site = out, site
        self.env = Environment(
            loader=PackageLoader("explorer", "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def write(self, template: str, page: str, **context) -> None:
        root = paths.up(page)

        def link(target: str | None) -> str:
            return root + target if target else ""

        html = self.env.get_template(template).render(
            site=self.site, root=root, link=link, paths=paths, **context
        )
        path = self.out / page
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html)


def render_site(
    out: Path,
    source: Source,
    layers: list[Layer],
    scan: ScanResult,
    maps: dict[int, dict],
    notes: Sequence[str],
    methods: Sequence[str],
) -> None:
    """Write every page, the assets and ``index.json`` into ``out``."""

    def class_name(index: int) -> str:
        if index < 0:
            return "?"
        known = source.classes is not None and index < len(source.classes)
        return source.classes[index] if known else str(index)

    outputs = scan.outputs
    site = {"title": source.title, "description": source.description}
    pages = _Pages(out, site)
    shutil.copytree(ASSETS, out / "assets", dirs_exist_ok=True)
    summaries = [_summary(layer, scan) for layer in layers]
    pages.write(
        "index.html",
        paths.INDEX,
        layers=summaries,
        notes=notes,
        k=scan.top.k,
    )
    (out / "index.json").write_text(json.dumps({**site, "layers": summaries}, indent=1))
    appearances = defaultdict(list)
    for number, layer in enumerate(layers):
        _layer_pages(pages, number, layer, summaries, scan, outputs, class_name)
        values, images, _, _ = scan.top.entries(layer.name)
        for channel in range(layer.count):
            for rank, image in enumerate(images[channel].tolist()):
                if image >= 0:
                    value = float(values[channel, rank])
                    appearances[image].append((layer, channel, rank, value))
    ids = sorted(appearances)
    for position, image in enumerate(ids):
        _image_page(
            pages,
            image,
            ids,
            position,
            appearances[image],
            outputs,
            maps.get(image),
            methods,
            class_name,
        )
    pages.write("images.html", paths.IMAGES, images=ids)


def _summary(layer: Layer, scan: ScanResult) -> dict:
    values = scan.top.entries(layer.name).values[: layer.count, 0]
    field = layer.field
    return {
        "name": layer.shown,
        "slug": layer.slug,
        "module": layer.name,
        "channels": layer.channels,
        "shown": layer.count,
        "strongest": [_number(v) for v in values.tolist()],
        "ranked": values.argsort(descending=True, stable=True).tolist(),
        "dead": [i for i, v in enumerate(values.tolist()) if not v > 0],
        "field": None if field is None else {"size": field.size, "jump": field.jump},
        "no_field": layer.no_field,
    }


def _number(value: float) -> float | None:
    return None if math.isinf(value) or math.isnan(value) else round(value, 4)


def _layer_pages(pages, number, layer, summaries, scan, outputs, class_name):
    values, images, rows, cols = scan.top.entries(layer.name)
    summary = summaries[number]
    dead = set(summary["dead"])
    before = summaries[number - 1] if number > 0 else None
    after = summaries[number + 1] if number + 1 < len(summaries) else None

    def same_channel(other: dict | None, channel: int) -> str | None:
        if other is None:
            return None
        return paths.channel_page(other["slug"], min(channel, other["shown"] - 1))

    page = paths.layer_page(layer.slug)
    pages.write(
        "layer.html",
        page,
        layer=summary,
        dead=dead,
        prev=before and paths.layer_page(before["slug"]),
        next=after and paths.layer_page(after["slug"]),
        up=paths.INDEX,
    )
    labels = outputs.get("label")
    predicted = outputs.get("predicted")
    for channel in range(layer.count):
        entries = []
        for rank, image in enumerate(images[channel].tolist()):
            if image < 0:
                continue
            entries.append(
                {
                    "rank": rank,
                    "value": float(values[channel, rank]),
                    "image": image,
                    "position": (int(rows[channel, rank]), int(cols[channel, rank])),
                    "label": None if labels is None else class_name(int(labels[image])),
                    "predicted": None
                    if predicted is None
                    else class_name(int(predicted[image])),
                    "stem": paths.entry(layer.slug, channel, rank),
                }
            )
        pages.write(
            "channel.html",
            paths.channel_page(layer.slug, channel),
            layer=summary,
            channel=channel,
            entries=entries,
            dead=channel in dead,
            prev=channel > 0 and paths.channel_page(layer.slug, channel - 1) or None,
            next=paths.channel_page(layer.slug, channel + 1)
            if channel + 1 < layer.count
            else None,
            prev_layer=same_channel(before, channel),
            next_layer=same_channel(after, channel),
            up=page,
        )


def _image_page(pages, image, ids, position, found, outputs, maps, methods, class_name):
    def output(name: str):
        values = outputs.get(name)
        return None if values is None else values[image].item()

    label, predicted = output("label"), output("predicted")
    pages.write(
        "image.html",
        paths.image_page(image),
        image=image,
        label=None if label is None else class_name(label),
        predicted=None if predicted is None else class_name(predicted),
        probability=output("probability"),
        appearances=[
            {
                "layer": layer.shown,
                "slug": layer.slug,
                "channel": c,
                "rank": r,
                "value": v,
            }
            for layer, c, r, v in found
        ],
        maps=maps,
        target=None if maps is None else class_name(maps["target"]),
        class_name=class_name,
        methods=methods,
        prev=paths.image_page(ids[position - 1]) if position > 0 else None,
        next=paths.image_page(ids[position + 1]) if position + 1 < len(ids) else None,
        up=paths.IMAGES,
    )
