"""Data modules: ImageNet folders, Fashion-MNIST, Cluttered Fashion-MNIST, and
transfer targets with a budget of labels per class (digits, folders of classes)."""

from .base import SplitDataModule
from .cluttered import ClutteredFashionMNISTDataModule, ClutteredImages, FlipShift
from .digits import DigitsDataModule, load_digits
from .fashion_mnist import FashionMNISTDataModule, ResizedImages, find_fashion_mnist
from .few_shot import (
    FewShotFashionMNISTDataModule,
    FewShotImageFolderDataModule,
    LabelBudgetDataModule,
    draw_per_class,
)
from .imagenet import ImageNetDataModule

__all__ = [
    "ClutteredFashionMNISTDataModule",
    "ClutteredImages",
    "DigitsDataModule",
    "FewShotFashionMNISTDataModule",
    "FewShotImageFolderDataModule",
    "FlipShift",
    "FashionMNISTDataModule",
    "ImageNetDataModule",
    "LabelBudgetDataModule",
    "ResizedImages",
    "SplitDataModule",
    "draw_per_class",
    "find_fashion_mnist",
    "load_digits",
]
