"""ZFNet (Zeiler & Fergus, 2014) and its training recipe in PyTorch Lightning."""

from .batches import BatchScan, BatchWriter, FileWriter, fixed_batches, run_batches
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
from .predictions import PredictionWriter
from .scan import ScanResult, TopKWriter, scan_top_activations
from .transfer import TransferModule

__all__ = [
    "DEFAULT_CONFIG",
    "BatchScan",
    "BatchWriter",
    "ClutteredFashionMNISTDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "FeatureEvolution",
    "FileWriter",
    "FewShotFashionMNISTDataModule",
    "FewShotImageFolderDataModule",
    "FilterRenorm",
    "ImageNetDataModule",
    "PredictionWriter",
    "ZFNet",
    "ZFNetModule",
    "ScanResult",
    "TopKWriter",
    "TransferModule",
    "fixed_batches",
    "renormalize_filters",
    "run_batches",
    "scan_top_activations",
    "train_default",
    "zfnet",
]
