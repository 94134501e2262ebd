"""The ZFNet tracks: the embedded default (ZFNet trained on Cluttered Fashion-MNIST,
items at random places with their boxes) and the pointing game on centred items
(ZFNet trained on plain Fashion-MNIST)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_zfnet import (
    ClutteredFashionMNISTDataModule,
    FashionMNISTDataModule,
    ZFNetModule,
)

from .methods import METHODS, Setup
from .metrics import pointing_game, published_tolerance, spatial
from .stats import interval

__all__ = [
    "CENTRED_CHECKPOINT",
    "CENTRED_COMMAND",
    "DEFAULT_CHECKPOINT",
    "centred_pointing_game",
    "item_masks",
    "load_cluttered",
    "setup_for",
]

DEFAULT_CHECKPOINT = Path("runs/demo/train/checkpoints/last.ckpt")  # make demo's
CENTRED_CHECKPOINT = Path("runs/fashion_mnist/checkpoints/last.ckpt")
CENTRED_COMMAND = "zfnet fit --config configs/fashion_mnist.yaml"
ITEM_BRIGHTNESS = 0.05  # of full scale: the pixels that belong to a centred item


def load_model(checkpoint: Path, device: str) -> nn.Module:
    module = ZFNetModule.load_from_checkpoint(
        checkpoint, weights_only=True, map_location="cpu"
    )
    return module.model.to(device).eval()


def setup_for(model: nn.Module) -> Setup:
    """ZFNet's last conv layer for Grad-CAM; an occluder of a third of an item."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    output = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    return Setup(names[-1], output, window=10, stride=3)


def _test_items(kind, checkpoint: Path, data_dir: str | None, count: int):
    """The data module a checkpoint was trained with, and the fields of its first
    ``count`` test items, stacked."""
    overrides = {} if data_dir is None else {"data_dir": data_dir}
    data = kind.from_checkpoint(checkpoint, **overrides)
    data.prepare_data()
    data.setup("test")
    items = [data.test_set[i] for i in range(min(count, len(data.test_set)))]
    return data, [torch.stack(field) for field in zip(*items, strict=True)]


def load_cluttered(checkpoint: Path, data_dir: str | None, count: int, device: str):
    """The model and the first ``count`` test images of the data it was trained on:
    ``(model, images, labels, boxes, background)``, background a black canvas."""
    model = load_model(checkpoint, device)
    data, (images, labels, boxes) = _test_items(
        ClutteredFashionMNISTDataModule, checkpoint, data_dir, count
    )
    background = torch.full_like(images, -data.mean / data.std)
    return model, images.to(device), labels.to(device), boxes, background.to(device)


def item_masks(images: Tensor, mean: float, std: float) -> Tensor:
    """``(N, 1, H, W)`` normalised grey images to ``(N, H, W)`` masks of the item's
    pixels (brighter than :data:`ITEM_BRIGHTNESS`; the background is black)."""
    return (images[:, 0] * std + mean) > ITEM_BRIGHTNESS


def centred_pointing_game(
    checkpoint: Path, data_dir: str | None, count: int, seed: int, device: str
) -> dict:
    """The pointing game of every method on centred items (plain Fashion-MNIST test
    images), against the items' pixel masks: TorchRay's protocol and the strict one.
    """
    model = load_model(checkpoint, device)
    data, (images, labels) = _test_items(
        FashionMNISTDataModule, checkpoint, data_dir, count
    )
    images, labels = images.to(device), labels.to(device)
    masks = item_masks(images, data.mean, data.std)
    tolerance = published_tolerance(images.shape[-1])
    setup = setup_for(model)
    rows = {}
    for name, method in METHODS.items():
        if method.same_as is not None:
            continue
        maps = spatial(method.explain(model, images, labels, setup))
        values = {
            "pointing_game": pointing_game(maps, masks, tolerance),
            "pointing_game_strict": pointing_game(maps, masks),
        }
        rows[name] = {
            "kind": method.kind,
            "metrics": {
                k: interval(v.tolist(), seed) | {"per_image": v.tolist()}
                for k, v in values.items()
            },
        }
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    return {
        "checkpoint": str(checkpoint),
        "data": "Fashion-MNIST test split (items centred)",
        "images": len(images),
        "accuracy_on_images": accuracy,
        "tolerance_pixels": tolerance,
        "object": f"the item's pixels (brighter than {ITEM_BRIGHTNESS:g})",
        "methods": rows,
    }
