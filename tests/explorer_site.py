"""A small explorer site: a tiny CNN on random images. The tests build it in this
process, and ``python -m explorer build --source tests.explorer_site:tiny_source``
builds it under DDP (Lightning relaunches that command line in each process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from explorer import Source, build_site

SETTINGS = {"k": 9, "batch_size": 8}  # the command line passes the same
DEAD = 5  # conv2's channel that never fires


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.features = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
    )
    model.classifier = nn.Sequential(nn.Flatten(), nn.Linear(6 * 8 * 8, 3))
    with torch.no_grad():
        model.features[3].weight[DEAD] = 0.0
        model.features[3].bias[DEAD] = -1.0
    return model.eval()


def tiny_source() -> Source:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(24, 1, 16, 16, generator=generator)
    labels = torch.arange(24) % 3
    return Source(
        model=tiny_model(),
        dataset=TensorDataset(images, labels),
        layers={"conv1": "features.1", "conv2": "features.4"},
        classes=["zero", "one", "two"],
        mean=[0.0],
        std=[1.0],
        window=4,
        stride=4,
        title="tiny CNN",
        description="random images",
    )


def build(out: Path, **overrides) -> Path:
    """The site with one thread (as each DDP process has), so that the numbers are
    computed the same way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_site(tiny_source(), out, **{**SETTINGS, **overrides})
    finally:
        torch.set_num_threads(threads)


def site_files(root: Path) -> dict[str, bytes]:
    """Every file of a site but its work folder (logs, progress, timings)."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "work" not in path.relative_to(root).parts
    }


@pytest.fixture(scope="session", name="site")
def site_fixture(tmp_path_factory) -> Path:
    """The site, built once for all tests that read it (none may change it)."""
    root = tmp_path_factory.mktemp("explorer_site")
    build(root)
    return root
