"""Where each file of the site lives, relative to its root. Every page links with
paths relative to itself, so the site works from any folder, over HTTP or file://.
"""

from __future__ import annotations

import re

INDEX = "index.html"
IMAGES = "images/index.html"


def slug(name: str) -> str:
    """A layer's folder name: its shown name with anything unusual replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def layer_page(layer: str) -> str:
    return f"layers/{layer}/index.html"


def channel_page(layer: str, channel: int) -> str:
    return f"layers/{layer}/{channel}.html"


def entry(layer: str, channel: int, rank: int) -> str:
    """The stem of an entry's PNGs (``-projection.png``, ``-patch.png``)."""
    return f"layers/{layer}/{channel}/{rank}"


def image_page(image: int) -> str:
    return f"images/{image}.html"


def image_png(image: int) -> str:
    return f"images/{image}.png"


def occlusion_png(image: int, panel: str) -> str:
    """Panel ``activation``, ``projection``, ``probability`` or ``classes``."""
    return f"images/{image}/occlusion-{panel}.png"


def method_png(image: int, method: str) -> str:
    return f"images/{image}/{slug(method)}.png"


def up(page: str) -> str:
    """The way from ``page`` back to the root, e.g. ``"../../"``."""
    return "../" * page.count("/")
