"""A trained ZFNet's features on another task (Sec. 5.2 and 5.3, Tables 4-7)."""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from .model import LAYERS, ZFNet
from .module import ZFNetModule

__all__ = ["TransferModule", "read_source"]

# The source hyperparameters that fix the network's architecture.
_ARCHITECTURE = (
    "width",
    "wide",
    "dropout",
    "conv1_stride",
    "init",
    "layer1",
    "fc_units",
    "removed_layers",
)
# Modules of ZFNet below its output layer, input first (see model.LAYERS).
_ORDER = [f"features.{i}" for i in range(15)] + [f"classifier.{i}" for i in range(6)]
_HEAD = "classifier.6"


def read_source(checkpoint: str | os.PathLike) -> tuple[dict, dict]:
    """The hyperparameters and the network's weights in a ``ZFNetModule``
    checkpoint (keys without the ``model.`` prefix).

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the file is not a checkpoint, or it does not hold a
            ZFNetModule's network (a TransferModule's: give its source instead).
    """
    name = os.fspath(checkpoint)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"no checkpoint file {name!r}")
    try:
        saved = torch.load(name, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file: text, empty, pickled objects
        raise ValueError(
            f"{name!r} is not a checkpoint torch.load can read safely ({error!r:.200})"
        ) from error
    if not isinstance(saved, dict):
        raise ValueError(f"{name!r} is not a ZFNetModule checkpoint")
    hparams = dict(saved.get("hyper_parameters", {}))
    if "freeze" in hparams and "checkpoint" in hparams:
        raise ValueError(
            f"{name!r} is a TransferModule checkpoint; give the ZFNetModule checkpoint "
            f"it was made from ({hparams['checkpoint']!r}) as the source"
        )
    state = {
        key.removeprefix("model."): value
        for key, value in saved.get("state_dict", {}).items()
        if key.startswith("model.")
    }
    if "in_channels" not in hparams or "features.0.weight" not in state:
        raise ValueError(f"{name!r} is not a ZFNetModule checkpoint")
    return hparams, state


class TransferModule(ZFNetModule):
    """A ZFNet trained on a source task with a new classifier for a target task.

    The architecture, and with ``pretrained`` the weights, come from the source's
    checkpoint. Every module after ``layer`` is cut (``nn.Identity`` takes its
    place) and a new linear classifier reads that layer's features, flattened. The
    paper's runs and the options that make them:

    - Tables 4-6, "ImageNet-pretrained": ``layer="fc7"``, ``freeze="all"``;
    - fine-tuning the whole network: ``freeze="none"``;
    - "non-pretrained", the same network from scratch: ``pretrained=False``,
      ``freeze="none"``;
    - Table 7, one layer's features: ``layer="conv3"`` (say), ``freeze="all"``.

    Frozen layers keep their weights: their parameters do not require gradients,
    the optimiser does not see them, and they stay in eval mode (their dropout is
    off) also while the module trains, a fixed feature extractor. Test metrics add
    ``test/mean_class_top1``, the mean of the per-class accuracies the paper
    reports. The checkpoint is read when the module is built, so it must exist also
    when a transfer checkpoint is loaded.

    Attributes:
        frozen: names of the frozen modules in ``model``, input first.

    Args:
        checkpoint: the source ``ZFNetModule`` checkpoint (``zfnet fit`` writes it).
        num_classes, in_channels, input_size: of the target task (the ``zfnet``
            command links them from the data). ``in_channels`` must be the
            source's; ``input_size`` too if ``layer`` is fc6 or fc7.
        layer: whose features the classifier reads: ``conv1``..``conv5``,
            ``fc6``, ``fc7`` (after its ReLU, and for 1, 2, 5 its pooling and
            normalisation; see :data:`~lightning_zfnet.model.LAYERS`).
        freeze: ``"all"`` (every layer up to ``layer``), ``"none"``, or a layer
            name: that layer and those below it.
        pretrained: start from the source's weights; otherwise from a fresh
            initialisation of the same network.
        standardize: standardise the features before the classifier with a batch
            normalisation without learnt scale and shift (running statistics at
            test time, so the classifier stays linear in the features), which lets
            one learning rate serve every layer's features, as in MAE's linear
            probes.
        lr, momentum, weight_decay, scheduler, lr_factor, patience, step_size,
            warmup, channels_last: as for :class:`ZFNetModule`.

    Raises:
        ValueError: for an unknown or removed layer, a ``freeze`` above ``layer``,
            or a target whose channels or size do not fit the source's weights.
    """

    def __init__(
        self,
        checkpoint: str,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        layer: str = "fc7",
        freeze: str = "all",
        pretrained: bool = True,
        standardize: bool = True,
        lr: float = 1e-2,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        scheduler: Literal["plateau", "step", "cosine", "onecycle", "none"] = "none",
        lr_factor: float = 0.1,
        patience: int = 2,
        step_size: int = 30,
        warmup: float = 0.1,
        channels_last: bool = False,
    ) -> None:
        source, state = read_source(checkpoint)
        _check_choices(layer, freeze, source)
        if in_channels != source["in_channels"]:
            raise ValueError(
                f"the target has {in_channels} channels, the source network "
                f"{source['in_channels']}: give the target the source's channels"
            )
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            **{k: source[k] for k in _ARCHITECTURE if k in source},
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            scheduler=scheduler,
            lr_factor=lr_factor,
            patience=patience,
            step_size=step_size,
            warmup=warmup,
            channels_last=channels_last,
        )
        _cut_after(self.model, layer)
        width = _feature_width(self.model, in_channels, input_size)
        head = nn.Linear(width, num_classes)
        nn.init.zeros_(head.weight)  # a linear classifier starts at chance level
        nn.init.zeros_(head.bias)
        norm = nn.BatchNorm1d(width, affine=False) if standardize else nn.Identity()
        self.model.classifier[6] = nn.Sequential(norm, head)
        if pretrained:
            _load_backbone(self.model, state, source)
        last = layer if freeze == "all" else None if freeze == "none" else freeze
        self.frozen = _ORDER[: _ORDER.index(LAYERS[last]) + 1] if last else []
        for name in self.frozen:
            self.model.get_submodule(name).requires_grad_(False)
        self.train()  # frozen layers go to eval mode now: fit does not call train()
        self.test_metrics.add_metrics(
            {"mean_class_top1": MulticlassAccuracy(num_classes, average="macro")}
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        # A batch of one image has no statistics to standardise with (the last batch
        # of a draw of, say, 65 images in batches of 64): skip it, as drop_last would.
        if self.hparams.standardize and len(batch[0]) == 1:
            return None
        return super().training_step(batch, batch_idx)

    def train(self, mode: bool = True) -> TransferModule:
        """Set the training mode; frozen layers stay in eval mode."""
        super().train(mode)
        for name in getattr(self, "frozen", ()):
            self.model.get_submodule(name).eval()
        return self


def _check_choices(layer: str, freeze: str, source: dict[str, Any]) -> None:
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {list(LAYERS)}, got {layer!r}")
    if freeze not in ("all", "none", *LAYERS):
        raise ValueError(
            f"freeze must be 'all', 'none' or one of {list(LAYERS)}, got {freeze!r}"
        )
    if freeze in LAYERS and list(LAYERS).index(freeze) > list(LAYERS).index(layer):
        raise ValueError(f"freeze={freeze!r} lies above layer={layer!r}: it is cut")
    removed = source.get("removed_layers") or ()
    if int(layer[-1]) in removed:
        raise ValueError(f"layer {layer!r} was removed from the source network")


def _cut_after(model: ZFNet, layer: str) -> None:
    """Put ``nn.Identity`` in place of every module after ``layer``'s features."""
    for name in _ORDER[_ORDER.index(LAYERS[layer]) + 1 :]:
        part, index = name.split(".")
        getattr(model, part)[int(index)] = nn.Identity()


@torch.no_grad()
def _feature_width(model: ZFNet, in_channels: int, input_size: int) -> int:
    """Length of the flattened features the output layer receives."""
    model.classifier[6] = nn.Identity()
    training = model.training
    model.eval()
    try:
        return model(torch.zeros(1, in_channels, input_size, input_size)).shape[1]
    finally:
        model.train(training)


def _load_backbone(model: ZFNet, state: dict, source: dict[str, Any]) -> None:
    """Copy the source's weights into every parameter below the new classifier."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(_HEAD)}
    for key, value in own.items():
        if key not in state:
            raise ValueError(f"the source checkpoint has no weights for {key!r}")
        if state[key].shape != value.shape:
            raise ValueError(
                f"the source's {key} has shape {tuple(state[key].shape)}, the "
                f"target's {tuple(value.shape)}: fc6 needs the source's input_size "
                f"({source.get('input_size')}), or take a conv layer's features"
            )
    model.load_state_dict({**model.state_dict(), **{k: state[k] for k in own}})
