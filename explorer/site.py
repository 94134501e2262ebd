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


class _Site:
    """Writes the pages with Jinja2; every link is relative to the page."""

    def __init__(
        self, out: Path, source: Source, layers: list[Layer], scan, methods: list
    ) -> None:
        self.out, self.source, self.layers, self.scan = out, source, layers, scan
        self.methods = methods
        self.site = {"title": source.title, "description": source.description}
        self.summaries = [_summary(layer, scan) for layer in layers]
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

    def class_name(self, index: int | None) -> str | None:
        classes = self.source.classes
        if index is None or index < 0:
            return None if index is None else "?"
        return (
            classes[index]
            if classes is not None and index < len(classes)
            else str(index)
        )

    def output(self, name: str, image: int):
        """``predicted``, ``probability`` or ``label`` of an image, if scanned."""
        values = self.scan.outputs.get(name)
        return None if values is None else values[image].item()

    def layer(self, number: int) -> None:
        layer, summary = self.layers[number], self.summaries[number]
        before = self.summaries[number - 1] if number > 0 else None
        after = self.summaries[number + 1] if number + 1 < len(self.summaries) else None
        self.write(
            "layer.html",
            paths.layer_page(layer.slug),
            layer=summary,
            dead=set(summary["dead"]),
            prev=before and paths.layer_page(before["slug"]),
            next=after and paths.layer_page(after["slug"]),
            up=paths.INDEX,
        )
        for channel in range(layer.count):
            self.channel(layer, summary, channel, before, after)

    def channel(self, layer, summary, channel, before, after) -> None:
        values, images, rows, cols = (
            t[channel] for t in self.scan.top.entries(layer.name)
        )
        entries = [
            {
                "rank": rank,
                "value": float(values[rank]),
                "image": image,
                "position": (int(rows[rank]), int(cols[rank])),
                "label": self.class_name(self.output("label", image)),
                "predicted": self.class_name(self.output("predicted", image)),
                "stem": paths.entry(layer.slug, channel, rank),
            }
            for rank, image in enumerate(images.tolist())
            if image >= 0
        ]

        def page(slug: str, number: int, count: int) -> str | None:
            return paths.channel_page(slug, number) if 0 <= number < count else None

        def same(other: dict | None) -> str | None:
            if other is None:
                return None
            return page(other["slug"], min(channel, other["shown"] - 1), other["shown"])

        self.write(
            "channel.html",
            paths.channel_page(layer.slug, channel),
            layer=summary,
            channel=channel,
            entries=entries,
            dead=channel in summary["dead"],
            prev=page(layer.slug, channel - 1, layer.count),
            next=page(layer.slug, channel + 1, layer.count),
            prev_layer=same(before),
            next_layer=same(after),
            up=paths.layer_page(layer.slug),
        )

    def image(self, image: int, ids: list[int], position: int, found, maps) -> None:
        nearby = [
            ids[p] if 0 <= p < len(ids) else None for p in (position - 1, position + 1)
        ]
        self.write(
            "image.html",
            paths.image_page(image),
            image=image,
            label=self.class_name(self.output("label", image)),
            predicted=self.class_name(self.output("predicted", image)),
            probability=self.output("probability", image),
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
            target=None if maps is None else self.class_name(maps["target"]),
            class_name=self.class_name,
            methods=self.methods,
            prev=nearby[0] is not None and paths.image_page(nearby[0]) or None,
            next=nearby[1] is not None and paths.image_page(nearby[1]) or None,
            up=paths.IMAGES,
        )


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
    site = _Site(out, source, layers, scan, list(methods))
    shutil.copytree(ASSETS, out / "assets", dirs_exist_ok=True)
    site.write(
        "index.html", paths.INDEX, layers=site.summaries, notes=notes, k=scan.top.k
    )
    index = {**site.site, "layers": site.summaries}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    appearances = defaultdict(list)
    for number, layer in enumerate(layers):
        site.layer(number)
        values, images, _, _ = scan.top.entries(layer.name)
        for channel in range(layer.count):
            for rank, image in enumerate(images[channel].tolist()):
                if image >= 0:
                    value = float(values[channel, rank])
                    appearances[image].append((layer, channel, rank, value))
    ids = sorted(appearances)
    for position, image in enumerate(ids):
        site.image(image, ids, position, appearances[image], maps.get(image))
    site.write("images.html", paths.IMAGES, images=ids)


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
    """``value`` to 6 significant digits (not decimals: a layer of small
    activations would read 0, as if dead), ``None`` for no value."""
    return None if math.isinf(value) or math.isnan(value) else float(f"{value:.6g}")
