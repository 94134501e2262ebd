from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .helpers import write_fake_fashion_mnist


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir whose FashionMNIST/raw holds a tiny synthetic Fashion-MNIST."""
    root = tmp_path_factory.mktemp("fmnist")
    write_fake_fashion_mnist(root / "FashionMNIST" / "raw")
    return root
