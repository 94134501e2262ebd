"""ZFNet (Zeiler & Fergus, 2014) and its training recipe in PyTorch Lightning."""

from .callbacks import FilterRenorm, renormalize_filters
from .data import (
    ClutteredFashionMNISTDataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    FewShotFashionMNISTDataModule,
    FewShotImageFolderDataModule,
    ImageNetDataModule,
)
from .default import DEFAULT_CONFIG, train_default
from .evolution import FeatureEvolution
from .model import ZFNet, zfnet
from .module import ZFNetModule
from .scan import ActivationScan, scan_top_activations
from .transfer import TransferModule

__all__ = [
    "DEFAULT_CONFIG",
    "ActivationScan",
    "ClutteredFashionMNISTDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "FeatureEvolution",
    "FewShotFashionMNISTDataModule",
    "FewShotImageFolderDataModule",
    "FilterRenorm",
    "ImageNetDataModule",
    "ZFNet",
    "ZFNetModule",
    "TransferModule",
    "renormalize_filters",
    "scan_top_activations",
    "train_default",
    "zfnet",
]
