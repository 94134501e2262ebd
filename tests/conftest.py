from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.occlusion_speed import incremental_chunk_sizes
from captum_deconvnet._scan import OcclusionScan
from lightning_zfnet import train_default

from .helpers import tiny_training_args, write_fake_fashion_mnist


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def every_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Occlusion plans its incremental inference up front, however little it saves
    and however little there is to do (small inputs save little), so that tests on
    small inputs reach the incremental path."""
    monkeypatch.setattr("captum_deconvnet._scan.MIN_LIMIT", 0.0)
    monkeypatch.setattr("captum_deconvnet._scan.PLAN_COST", 0)
    monkeypatch.setattr(OcclusionScan, "_small_input", lambda self: False)


@pytest.fixture
def incremental_chunks() -> Iterator[list[int]]:
    """The number of copies of each chunk the incremental plan computes."""
    with incremental_chunk_sizes() as sizes:
        yield sizes


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir whose FashionMNIST/raw holds a tiny synthetic Fashion-MNIST."""
    root = tmp_path_factory.mktemp("fmnist")
    write_fake_fashion_mnist(root / "FashionMNIST" / "raw")
    return root


@pytest.fixture(scope="session")
def tiny_demo(fake_data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``(out, result)``: the demo's training and test, shortened, on the fake data."""
    out = tmp_path_factory.mktemp("demo")
    return out, train_default(out, extra=tiny_training_args(fake_data_dir))
