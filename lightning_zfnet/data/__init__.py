"""Data modules: ImageNet folders, Fashion-MNIST and Cluttered Fashion-MNIST."""

from .base import SplitDataModule
from .cluttered import ClutteredFashionMNISTDataModule, ClutteredImages, FlipShift
from .fashion_mnist import FashionMNISTDataModule, ResizedImages, find_fashion_mnist
from .imagenet import ImageNetDataModule

__all__ = [
    "ClutteredFashionMNISTDataModule",
    "ClutteredImages",
    "FlipShift",
    "FashionMNISTDataModule",
    "ImageNetDataModule",
    "ResizedImages",
    "SplitDataModule",
    "find_fashion_mnist",
]
