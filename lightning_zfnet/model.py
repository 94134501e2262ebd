"""ZFNet, the network of Zeiler & Fergus (2014), Fig. 3.

Padding is not stated in the paper; conv1 padding 1, conv2 padding 0 and 3x3/2 pools
with padding 1 after layers 1-2 (none after layer 5) reproduce the figure's map sizes
110, 55, 26, 13, 13, 13, 13, 6 at 224x224.

The builder also makes the variants the paper compares: Krizhevsky et al.'s first
layer (Sec. 4.1, Fig. 6) and the wider, narrower and shallower networks of Table 3.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "LAYERS",
    "ZFNet",
    "contrast_norm",
    "feature_map_sizes",
    "zfnet",
    "zfnet_layers",
]

# Output maps of conv1..conv5, for the paper's model (a) and the wider model (b) of
# Table 2.
_WIDTHS = {False: (96, 256, 384, 384, 256), True: (96, 256, 512, 1024, 512)}

# (kernel, stride, padding) of conv1 and conv2. ZFNet's (Fig. 3) against Krizhevsky et
# al.'s 11x11 stride-4 layer 1, followed by their stride-1 conv2 so that conv2 onwards
# sees maps of nearly the same size (at 224: 28 against 26; 6 after pool5 in both).
_FIRST_LAYERS = {
    "zfnet": ((7, 2, 1), (5, 2, 0)),
    "krizhevsky": ((11, 4, 2), (5, 1, 2)),
}

# The ReLU after each layer's convolution or linear map.
_RELUS = {
    "conv1": "features.1",
    "conv2": "features.5",
    "conv3": "features.9",
    "conv4": "features.11",
    "conv5": "features.13",
    "fc6": "classifier.1",
    "fc7": "classifier.4",
}

#: The module whose output is each layer's features: what the next layer reads (after
#: its ReLU and, for layers 1, 2 and 5, its pooling and contrast normalisation). The
#: indices hold in every variant: a removed layer leaves ``nn.Identity`` in its place.
LAYERS = {
    "conv1": "features.3",
    "conv2": "features.7",
    "conv3": "features.9",
    "conv4": "features.11",
    "conv5": "features.14",
    "fc6": "classifier.2",
    "fc7": "classifier.5",
}


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
        input_size: side of the square input the classifier is sized for: at
            least 53 with conv1 at stride 2, 29 at stride 1, 39 with
            Krizhevsky's layer 1.
        width: multiplier on every layer's width; 1.0 is the paper's network.
        wide: the wider variant (b) of Table 2, with 512/1024/512 maps in layers 3-5.
        dropout: dropout probability after fc6 and fc7.
        conv1_stride: stride of ZFNet's first layer; 1 is the small-input variant,
            which keeps twice the resolution for small images (64x64 and so on).
        init: ``"kaiming"`` (trains from scratch reliably) or ``"paper"`` (weights
            N(0, 0.01^2), biases 0, as Sec. 3 states; known to stall from scratch).
        layer1: ``"zfnet"`` (7x7 filters, stride ``conv1_stride``) or
            ``"krizhevsky"``: Krizhevsky et al.'s 11x11 filters at stride 4 (padding
            2), with their stride-1 conv2 (padding 2), the network Sec. 4.1 and
            Fig. 6 diagnose; the other layers are unchanged.
        fc_units: units of fc6 and fc7 before ``width`` scales them (Table 3 tries
            2048 and 8192).
        removed_layers: layers left out, any of 3, 4, 5 (convolutions) and 6, 7 (fully
            connected), as in Table 3 ("removed layers 3,4,6,7"). ``nn.Identity``
            takes each removed module's place, so the others keep their indices.

    Raises:
        ValueError: for a value out of range, naming it.
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
        layer1: str = "zfnet",
        fc_units: int = 4096,
        removed_layers: Sequence[int] = (),
    ) -> None:
        super().__init__()
        _check_arguments(
            num_classes=num_classes,
            in_channels=in_channels,
            width=width,
            dropout=dropout,
            conv1_stride=conv1_stride,
            init=init,
            layer1=layer1,
            fc_units=fc_units,
            removed_layers=removed_layers,
        )
        removed = set(removed_layers)
        widths = [_scaled(c, width) for c in _WIDTHS[wide]]
        self.features, channels = _features(
            in_channels, widths, layer1, conv1_stride, removed
        )
        side = feature_map_sizes(self.features, input_size)[-1]
        self.classifier = _classifier(
            channels * side * side,
            _scaled(fc_units, width),
            num_classes,
            dropout,
            removed,
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


def _check_arguments(
    *,
    num_classes: int,
    in_channels: int,
    width: float,
    dropout: float,
    conv1_stride: int,
    init: str,
    layer1: str,
    fc_units: int,
    removed_layers: Sequence[int],
) -> None:
    """Raise ValueError naming the first argument of :class:`ZFNet` out of range."""
    for name, value in (
        ("num_classes", num_classes),
        ("in_channels", in_channels),
        ("fc_units", fc_units),
    ):
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
    if layer1 not in _FIRST_LAYERS:
        raise ValueError(
            f"layer1 must be one of {sorted(_FIRST_LAYERS)}, got {layer1!r}"
        )
    if layer1 == "krizhevsky" and conv1_stride != 2:
        raise ValueError(
            "conv1_stride sets ZFNet's layer 1; Krizhevsky's has stride 4 (got "
            f"conv1_stride={conv1_stride!r} with layer1='krizhevsky'): leave "
            "conv1_stride at its default, 2"
        )
    if not set(removed_layers) <= {3, 4, 5, 6, 7}:
        raise ValueError(
            f"removed_layers may hold 3, 4, 5, 6 and 7, got {list(removed_layers)}"
        )


def _features(
    in_channels: int,
    widths: list[int],
    layer1: str,
    conv1_stride: int,
    removed: set[int],
) -> tuple[nn.Sequential, int]:
    """conv1..pool5, and the channels pool5 puts out."""
    (k1, s1, p1), (k2, s2, p2) = _FIRST_LAYERS[layer1]
    s1 = conv1_stride if layer1 == "zfnet" else s1
    features = nn.Sequential(
        nn.Conv2d(in_channels, widths[0], kernel_size=k1, stride=s1, padding=p1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        contrast_norm(),
        nn.Conv2d(widths[0], widths[1], kernel_size=k2, stride=s2, padding=p2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        contrast_norm(),
    )
    channels = widths[1]
    for number, out in zip((3, 4, 5), widths[2:], strict=True):
        kept = number not in removed
        conv = nn.Conv2d(channels, out, kernel_size=3, padding=1)
        features.extend(_block(kept, conv, nn.ReLU(inplace=True)))
        channels = out if kept else channels
    features.append(nn.MaxPool2d(kernel_size=3, stride=2))
    return features, channels


def _classifier(
    units: int, fc: int, num_classes: int, dropout: float, removed: set[int]
) -> nn.Sequential:
    """fc6, fc7 (each Linear, ReLU, Dropout) and the output layer."""
    classifier = nn.Sequential()
    for number in (6, 7):
        kept = number not in removed
        layer = [nn.Linear(units, fc), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        classifier.extend(_block(kept, *layer))
        units = fc if kept else units
    classifier.append(nn.Linear(units, num_classes))
    return classifier


def _block(kept: bool, *modules: nn.Module) -> list[nn.Module]:
    """``modules``, or as many ``nn.Identity`` placeholders for a removed layer."""
    return list(modules) if kept else [nn.Identity() for _ in modules]


def feature_map_sizes(layers: nn.Sequential, input_size: int) -> list[int]:
    """Side of each conv and max-pool output in ``layers`` for a square input.

    Raises:
        ValueError: if the input is too small for some layer, naming the smallest
            input the layers take.
    """
    sizes, side = [], input_size
    for k, s, p in _windows(layers):
        side = (side + 2 * p - k) // s + 1
        if side < 1:
            smallest = _smallest_input_size(layers)
            raise ValueError(
                f"input_size {input_size} is too small for this network: its "
                f"smallest input is {smallest}x{smallest} pixels"
            )
        sizes.append(side)
    return sizes


def _smallest_input_size(layers: nn.Sequential) -> int:
    """Side of the smallest square input for which every conv and max-pool in
    ``layers`` outputs at least one pixel."""
    need = 1  # pixels out of the last layer
    for k, s, p in reversed(_windows(layers)):
        # (side + 2p - k) // s + 1 >= need  <=>  side >= (need - 1) * s + k - 2p
        need = max((need - 1) * s + k - 2 * p, 1)
    return need


def _windows(layers: nn.Sequential) -> list[tuple[int, int, int]]:
    """Kernel size, stride and padding of each conv and max-pool in ``layers``."""
    return [
        tuple(_pair(getattr(layer, a)) for a in ("kernel_size", "stride", "padding"))
        for layer in layers
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d))
    ]


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
    layer1: str = "zfnet",
    fc_units: int = 4096,
    removed_layers: Sequence[int] = (),
) -> ZFNet:
    """Build ZFNet; ``zfnet()`` is the paper's model for 224x224 ImageNet crops.

    Example::

        >>> model = zfnet(num_classes=10, in_channels=1, input_size=64, conv1_stride=1)
        >>> krizhevsky = zfnet(layer1="krizhevsky")  # Fig. 6's other network
        >>> shallow = zfnet(removed_layers=[3, 4, 6, 7])  # Table 3's 4-layer network
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
        layer1=layer1,
        fc_units=fc_units,
        removed_layers=removed_layers,
    )


def zfnet_layers(model: ZFNet) -> dict[str, nn.Module]:
    """The paper's layers by their names in the paper: ``conv1`` ... ``conv5``,
    ``fc6``, ``fc7``, each the ReLU after its convolution or linear map. Layers a
    variant removed (``removed_layers``) are left out."""
    found = {name: model.get_submodule(path) for name, path in _RELUS.items()}
    return {name: m for name, m in found.items() if isinstance(m, nn.ReLU)}
