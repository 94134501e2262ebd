"""ZFNet (Zeiler & Fergus, 2014) and its training recipe in PyTorch Lightning."""

from .callbacks import FilterRenorm, renormalize_filters
from .data import (
    ClutteredFashionMNISTDataModule,
    FashionMNISTDataModule,
    ImageNetDataModule,
)
from .model import ZFNet, zfnet
from .module import ZFNetModule

__all__ = [
    "ClutteredFashionMNISTDataModule",
    "FashionMNISTDataModule",
    "FilterRenorm",
    "ImageNetDataModule",
    "ZFNet",
    "ZFNetModule",
    "renormalize_filters",
    "zfnet",
]
