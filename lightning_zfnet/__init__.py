"""ZFNet (Zeiler & Fergus, 2014) and its training recipe in PyTorch Lightning."""

from .callbacks import FilterRenorm, renormalize_filters
from .data import (
    ClutteredFashionMNISTDataModule,
    FashionMNISTDataModule,
    ImageNetDataModule,
)
from .default import DEFAULT_CONFIG, train_default
from .evolution import FeatureEvolution
from .model import ZFNet, zfnet
from .module import ZFNetModule
from .predictions import PredictionWriter
from .scan import ActivationScan, scan_top_activations

__all__ = [
    "DEFAULT_CONFIG",
    "ActivationScan",
    "ClutteredFashionMNISTDataModule",
    "FashionMNISTDataModule",
    "FeatureEvolution",
    "FilterRenorm",
    "ImageNetDataModule",
    "PredictionWriter",
    "ZFNet",
    "ZFNetModule",
    "renormalize_filters",
    "scan_top_activations",
    "train_default",
    "zfnet",
]
