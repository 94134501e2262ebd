"""The explorer: a static site to browse what every channel of a CNN responds to
over a dataset (the paper's Fig. 2), and each image's occlusion (Fig. 7) and
attribution maps. ``python -m explorer build --help``."""

from .build import build_site
from .source import Source, from_checkpoint, load_source

__all__ = ["Source", "build_site", "from_checkpoint", "load_source"]
