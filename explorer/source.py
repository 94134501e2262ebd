"""What the explorer shows: a model, a dataset and some of the model's layers."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset
from torchvision.datasets import FashionMNIST

from captum_deconvnet._inputs import positive_int
from captum_deconvnet.layers import unwrap
from captum_deconvnet.topk import first_item
from lightning_zfnet import (
    ClutteredFashionMNISTDataModule,
    FashionMNISTDataModule,
    ZFNetModule,
)
from lightning_zfnet.model import zfnet_layers

from .paths import slug

__all__ = ["Source", "from_checkpoint", "load_source"]


@dataclass
class Source:
    """A model, a dataset and the layers to explore.

    Attributes:
        model: a CNN (any ``nn.Module`` returning class scores ``(N, classes)``,
            logits: the pages show their softmax as probabilities, so a model
            ending in a softmax is shown squashed); a compiled or
            ``DataParallel`` one is kept as the module it wraps.
        dataset: items are images ``(C, H, W)`` or tuples ``(image, label, ...)``
            with ``label`` a class index; all images of one size. Each stage reads
            an item again, so ``dataset[i]`` must give the same image every time
            (no random transforms: the positions found by the scan would be
            projected on another image).
        layers: the layers to show, by the name shown, mapped to the module's
            qualified name in ``model`` (``{"conv1": "features.1"}``), in the
            network's order.
        classes: class names, by index (default: the indices).
        mean, std: per input channel, what the images were normalised with; pages
            show ``image * std + mean``. ``None``: each image is stretched to [0, 1].
        window, stride: the occluder's side and step in pixels (Fig. 7). Default: a
            quarter of the image's side, and half of that.
        title: the model's name on the pages.
        description: a sentence on the model and the data.

    Raises:
        TypeError: a model that is not an ``nn.Module``, ``layers`` that is not a
            dict, or dataset items that are not floating-point images or tuples
            starting with one.
        ValueError: no layers, a layer name that is not a submodule, shown names
            that give one folder (``"a b"`` and ``"a_b"``), an empty dataset,
            images that are not ``(C, H, W)``, ``mean`` and ``std`` not both
            given, each of 1 or ``C`` values, or a ``window`` or ``stride`` that
            is not a positive int (``window`` at most ``min(H, W)``).
    """

    model: nn.Module
    dataset: Dataset
    layers: dict[str, str]
    classes: Sequence[str] | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    window: int | None = None
    stride: int | None = None
    title: str = "model"
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(self.model)}")
        # layers are named inside a compiled or data-parallel wrapper, as the
        # scans name them
        self.model = unwrap(self.model)
        if not isinstance(self.layers, Mapping):
            raise TypeError(
                "layers must be a dict of the name shown to the module's qualified "
                "name in the model, e.g. {'conv1': 'features.1'} (from a list of "
                f"names: {{n: n for n in names}}), got {type(self.layers).__name__}"
            )
        odd = [
            shown for shown, name in self.layers.items() if not isinstance(name, str)
        ]
        if odd:
            raise TypeError(
                f"layers {odd} must map to the module's qualified name (a str such "
                "as 'features.1'), not to the module"
            )
        if not self.layers:
            raise ValueError("layers is empty: name at least one layer to explore")
        # each layer's pages go in the folder layers/<slug>
        slugs = [slug(str(shown)) for shown in self.layers]
        clash = [
            shown
            for shown, folder in zip(self.layers, slugs, strict=True)
            if slugs.count(folder) > 1 or folder.strip(".") == ""
        ]
        if clash:
            raise ValueError(
                f"layers {clash} would share a folder (names are kept to letters, "
                "digits, '.', '_' and '-', other characters becoming '_') or be "
                "'.' or '..': rename them"
            )
        known = dict(self.model.named_modules())
        missing = [name for name in self.layers.values() if name not in known]
        if missing:
            raise ValueError(
                f"layers {missing} are not submodules of the model; some that are: "
                f"{[n for n in known if n][:12]}"
            )
        if len(self.dataset) == 0:
            raise ValueError("the dataset is empty")
        channels, height, width = self.image_shape()
        # checked here, not after the scan (whose folder then refuses a new one)
        side = min(height, width)
        window, stride = self.window, self.stride
        if window is not None and not (isinstance(window, int) and 1 <= window <= side):
            raise ValueError(
                "window must be a positive int of at most the images' shorter side "
                f"({side}), got {window!r}"
            )
        if stride is not None and not (isinstance(stride, int) and stride >= 1):
            raise ValueError(f"stride must be a positive int, got {stride!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        for name in ("mean", "std"):
            values = getattr(self, name)
            count = None if values is None else torch.as_tensor(values).numel()
            if count not in (None, 1, channels):
                raise ValueError(
                    f"{name} must hold one value, or one per channel of the images "
                    f"({channels}), got {values!r}"
                )

    def image_shape(self) -> tuple[int, int, int]:
        """The images' ``(C, H, W)``, read from the dataset's first item.

        Raises:
            TypeError: if the item is not an image or a tuple starting with one, or
                the image is not floating-point.
            ValueError: if the image is not ``(C, H, W)``.
        """
        item = self.dataset[0]
        image = first_item(item)
        if not isinstance(image, Tensor):
            got = type(item).__name__
            if isinstance(item, (tuple, list)):
                got += f" starting with {type(image).__name__}"
            raise TypeError(
                "the dataset's items must be images (C, H, W) or tuples (image, "
                f"label, ...), got {got}"
            )
        if image.ndim != 3:
            raise ValueError(
                f"the dataset's images must be (C, H, W), got shape "
                f"{tuple(image.shape)}"
            )
        if not image.is_floating_point():  # else the model fails on it, unnamed
            raise TypeError(
                f"the dataset's images must be floating-point tensors, got "
                f"{image.dtype}; convert them with .float() (scaled as the model "
                "expects)"
            )
        return tuple(image.shape)

    def picture(self, images: Tensor) -> Tensor:
        """Images ``(N, C, H, W)`` as they look, in ``[0, 1]``."""
        images = images.detach().float()
        if self.mean is None or self.std is None:
            low = images.flatten(1).amin(1)[:, None, None, None]
            high = images.flatten(1).amax(1)[:, None, None, None]
            return (images - low) / (high - low).clamp(min=1e-12)
        mean = torch.as_tensor(self.mean, dtype=images.dtype, device=images.device)
        std = torch.as_tensor(self.std, dtype=images.dtype, device=images.device)
        mean, std = mean.reshape(-1), std.reshape(-1)  # a number for every channel
        return (images * std[:, None, None] + mean[:, None, None]).clamp(0, 1)

    def occluder(self, image_size: Sequence[int]) -> tuple[int, int]:
        """``(window, stride)`` for images of ``image_size`` ``(H, W)``."""
        window = self.window or max(1, min(image_size) // 4)
        return window, self.stride or max(1, window // 2)


def from_checkpoint(
    checkpoint: str | os.PathLike,
    data_dir: str | None = None,
    images: int | None = None,
) -> Source:
    """A ``ZFNetModule`` checkpoint (as ``zfnet fit`` and ``make demo`` write) with
    the test split of the data it was trained on, and the paper's layers conv1 to
    conv5 (each the ReLU after its convolution, see ``zfnet_layers``).

    Args:
        checkpoint: the ``.ckpt`` file.
        data_dir: where the data is (default: the checkpoint's setting).
        images: only the first ``images`` test images (default: all).

    Raises:
        ValueError: if ``images`` is not a positive int.
    """
    if images is not None:
        images = positive_int("images", images)
    module = ZFNetModule.load_from_checkpoint(
        checkpoint, weights_only=True, map_location="cpu"
    )
    model = module.model.eval()
    data = _data_module(checkpoint, data_dir)
    dataset = data.test_set
    if images is not None:
        dataset = Subset(dataset, range(min(images, len(dataset))))
    names = {m: n for n, m in model.named_modules()}
    layers = {
        short: names[m] for short, m in zfnet_layers(model).items() if "conv" in short
    }
    width = module.hparams.get("width", 1.0)
    return Source(
        model=model,
        dataset=dataset,
        layers=layers,
        classes=list(FashionMNIST.classes),
        mean=[data.mean],
        std=[data.std],
        window=max(1, data.image_size // 5),
        stride=max(1, data.image_size // 10),
        title=f"ZFNet (width {width:g})",
        description=f"{Path(checkpoint)} on {len(dataset)} test images of "
        f"{type(data).__name__.removesuffix('DataModule')}",
    )


def _data_module(checkpoint: str | os.PathLike, data_dir: str | None):
    """The checkpoint's (Cluttered) Fashion-MNIST data module, set up for testing."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    settings = saved.get("datamodule_hyper_parameters", {})
    if "ten_crop_test" in settings:
        raise ValueError(
            f"{checkpoint} was trained on ImageNet folders: build a Source with the "
            "validation images (one crop each) and pass it with --source"
        )
    fashion = "fragments" not in settings
    kind = FashionMNISTDataModule if fashion else ClutteredFashionMNISTDataModule
    overrides = {"num_workers": 0} | ({"data_dir": data_dir} if data_dir else {})
    data = kind.from_checkpoint(checkpoint, **overrides)
    data.prepare_data()
    data.setup("test")
    return data


def load_source(spec: str) -> Source:
    """The :class:`Source` made by the function ``spec`` names,
    ``"package.module:function"`` (called without arguments).

    Raises:
        ValueError: a ``spec`` not of that form.
        TypeError: if it names something other than a function, or the function
            returns something other than a :class:`Source`.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(
            f"source must name a function as 'package.module:function', got {spec!r}"
        )
    made: Callable[[], Source] = getattr(
        importlib.import_module(module_name), attribute
    )
    if not callable(made):
        raise TypeError(
            f"{spec} is a {type(made).__name__}, not a function returning an "
            "explorer.Source"
        )
    source = made()
    if not isinstance(source, Source):
        raise TypeError(f"{spec} returned {type(source)}, not an explorer.Source")
    return source
