"""What every section of the demo's report works from: the trained model and a seeded
subset of its test split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.datasets import FashionMNIST

from lightning_zfnet import ClutteredFashionMNISTDataModule, ZFNetModule
from lightning_zfnet.model import zfnet_layers

__all__ = ["SEED", "SUBSET", "ReportContext", "load_context", "one_per_class"]

SUBSET = 2000  # test images the figures are computed from: enough, and quick
SEED = 0


@dataclass
class ReportContext:
    """What every section works from.

    Attributes:
        model: the trained ZFNet, in eval mode, on the CPU.
        images, labels, boxes: a seeded subset of the test split, ``(N, 1, H, W)``,
            ``(N,)`` and the items' boxes ``(N, 4)`` (``x0, y0, x1, y1``).
        background: the input value of a black pixel (what occluders and
            transformations fill in).
        classes: the class names.
        hparams: the model's hyperparameters.
        test_size: images in the whole test split.
        checkpoint: the checkpoint the model came from.
        out: the report's folder; figures go to ``out / "figures"``.
        layers: the paper's layers by name (see :func:`zfnet_layers`).
    """

    model: nn.Module
    images: Tensor
    labels: Tensor
    boxes: Tensor
    background: float
    classes: list[str]
    hparams: dict
    test_size: int
    checkpoint: Path
    out: Path
    layers: dict[str, nn.Module] = field(init=False)

    def __post_init__(self) -> None:
        self.layers = zfnet_layers(self.model)

    def figure(self, name: str) -> tuple[Path, str]:
        """The PNG file of figure ``name`` and its link from the report."""
        folder = self.out / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name, f"figures/{name}"

    def name_of(self, module: nn.Module) -> str:
        """``module``'s qualified name in the model (``features.1``)."""
        return next(name for name, m in self.model.named_modules() if m is module)


def load_context(
    checkpoint: str | Path, out: str | Path, data_dir: str | Path
) -> ReportContext:
    """The model of ``checkpoint`` and a seeded subset of its test split, with the
    data settings it was trained with (read from the checkpoint)."""
    checkpoint = Path(checkpoint)
    module = ZFNetModule.load_from_checkpoint(
        checkpoint, weights_only=True, map_location="cpu"
    )
    data = ClutteredFashionMNISTDataModule.from_checkpoint(
        checkpoint, data_dir=str(data_dir), num_workers=0
    )
    data.setup("test")
    order = torch.randperm(
        len(data.test_set), generator=torch.Generator().manual_seed(SEED)
    )
    items = [data.test_set[i] for i in order[:SUBSET].tolist()]
    images, labels, boxes = (torch.stack(column) for column in zip(*items, strict=True))
    return ReportContext(
        model=module.model.eval(),
        images=images,
        labels=labels,
        boxes=boxes,
        background=-data.mean / data.std,
        classes=list(FashionMNIST.classes),
        hparams=dict(module.hparams),
        test_size=len(data.test_set),
        checkpoint=checkpoint,
        out=Path(out),
    )


def one_per_class(labels: Tensor, count: int) -> list[int]:
    """Indices of the first images of the first ``count`` classes met."""
    first: dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        first.setdefault(label, i)
    return list(first.values())[:count]
