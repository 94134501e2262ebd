"""ZFNet, the network of Zeiler & Fergus (2014), Fig. 3.

Padding is not stated in the paper; conv1 padding 1, conv2 padding 0 and 3x3/2 pools
with padding 1 after layers 1-2 (none after layer 5) reproduce the figure's map sizes
110, 55, 26, 13, 13, 13, 13, 6 at 224x224.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ZFNet", "zfnet", "contrast_norm", "feature_map_sizes"]

# Output maps of conv1..conv5 and the width of fc6/fc7, for the paper's model (a) and
# the wider model (b) of Table 2.
_WIDTHS = {False: (96, 256, 384, 384, 256, 4096), True: (96, 256, 512, 1024, 512, 4096)}


def contrast_norm() -> nn.LocalResponseNorm:
    """Krizhevsky's local response normalisation (n=5, k=2, alpha=1e-4, beta=0.75).

    ``nn.LocalResponseNorm`` divides alpha by n, so alpha is given as 5 * 1e-4.
    """
    return nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class ZFNet(nn.Module):
    """ZFNet: five conv layers and three fully connected layers.

    Args:
        num_classes: size of the output layer.
        in_channels: channels of the input image.
        input_size: side of the square input the classifier is sized for (>= 54).
        width: multiplier on every layer's width; 1.0 is the paper's network.
        wide: the wider variant (b) of Table 2, with 512/1024/512 maps in layers 3-5.
        dropout: dropout probability after fc6 and fc7.
        conv1_stride: stride of the first layer; 1 is the small-input variant, which
            keeps twice the resolution for small images (64x64 and so on).
        init: ``"kaiming"`` (trains from scratch reliably) or ``"paper"`` (weights
            N(0, 0.01^2), biases 0, as Sec. 3 states; known to stall from scratch).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        width: float = 1.0,
        wide: bool = False,
        dropout: float = 0.5,
        conv1_stride: int = 2,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if conv1_stride not in (1, 2):
            raise ValueError(f"conv1_stride must be 1 or 2, got {conv1_stride!r}")
        if init not in ("kaiming", "paper"):
            raise ValueError(f"init must be 'kaiming' or 'paper', got {init!r}")
        c1, c2, c3, c4, c5, fc = (_scaled(c, width) for c in _WIDTHS[wide])
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=7, stride=conv1_stride, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            contrast_norm(),
            nn.Conv2d(c1, c2, kernel_size=5, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            contrast_norm(),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        side = feature_map_sizes(self.features, input_size)[-1]
        self.classifier = nn.Sequential(
            nn.Linear(c5 * side * side, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, num_classes),
        )
        self._initialise(init)

    def _initialise(self, init: str) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if init == "paper":
                    nn.init.normal_(m.weight, std=1e-2)
                else:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        if init == "kaiming":
            # A silent output layer starts training at chance level instead of from
            # large random logits, which otherwise stall the first hundreds of steps.
            nn.init.zeros_(self.classifier[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def feature_map_sizes(layers: nn.Sequential, input_size: int) -> list[int]:
    """Side of each conv and max-pool output in ``layers`` for a square input.

    Raises:
        ValueError: if the input is too small for some layer.
    """
    sizes, side = [], input_size
    for layer in layers:
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (
                _pair(getattr(layer, a)) for a in ("kernel_size", "stride", "padding")
            )
            side = (side + 2 * p - k) // s + 1
            if side < 1:
                raise ValueError(
                    f"input_size {input_size} is too small: {layer} outputs nothing"
                )
            sizes.append(side)
    return sizes


def _pair(v: int | tuple[int, ...]) -> int:
    if isinstance(v, tuple):
        if len(set(v)) != 1:
            raise ValueError(
                f"only square kernels, strides and paddings are supported: {v}"
            )
        return v[0]
    return v


def zfnet(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    width: float = 1.0,
    wide: bool = False,
    dropout: float = 0.5,
    conv1_stride: int = 2,
    init: str = "kaiming",
) -> ZFNet:
    """Build ZFNet; ``zfnet()`` is the paper's model for 224x224 ImageNet crops.

    Example::

        >>> model = zfnet(num_classes=10, in_channels=1, input_size=64, conv1_stride=1)
    """
    return ZFNet(
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        width=width,
        wide=wide,
        dropout=dropout,
        conv1_stride=conv1_stride,
        init=init,
    )


def zfnet_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The paper's layers by their names in the paper: ``conv1`` ... ``conv5``,
    ``fc6``, ``fc7``, each the ReLU after its convolution or linear map."""
    layers = {}
    for prefix, stack, kind in (
        ("conv", model.features, nn.Conv2d),
        ("fc", model.classifier, nn.Linear),
    ):
        relus = [
            after
            for before, after in zip(stack, stack[1:], strict=False)
            if isinstance(before, kind) and isinstance(after, nn.ReLU)
        ]
        start = 1 if prefix == "conv" else 6
        layers.update({f"{prefix}{start + i}": m for i, m in enumerate(relus)})
    return layers
