"""The networks the experiments compare, trained on Fashion-MNIST with one recipe.

Every network is ``configs/fashion_mnist.yaml`` (ZFNet at quarter width, 64x64
images) with an overlay (a variant from ``configs/variants``, or the transfer
source's classes) and a shortened schedule, trained and tested by the ``zfnet``
command. The plain ZFNet is also one side of the diagnosis.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lightning_zfnet import ZFNetModule, train_default

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "configs" / "fashion_mnist.yaml"

# The shortened schedule shared by every network: 3 epochs of 300 batches of 64
# (57,600 images, about one pass over the training set), onecycle learning rate.
SCHEDULE = (
    "--trainer.max_epochs=3",
    "--trainer.limit_train_batches=300",
    "--trainer.limit_val_batches=10",
    "--model.channels_last=true",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
)


@dataclass(frozen=True)
class Network:
    """One trained network: ``key`` names its run folder, ``overlay`` the config
    laid over the base config (a path from the repository's root; None: the plain
    ZFNet), ``seed`` the run's seed."""

    key: str
    label: str
    overlay: str | None = None
    seed: int = 0

    def command(self) -> str:
        """The ``zfnet fit`` command that trains it (besides the schedule)."""
        parts = ["zfnet fit --config configs/fashion_mnist.yaml"]
        if self.overlay:
            parts.append(f"--config {self.overlay}")
        if self.seed:
            parts.append(f"--seed_everything {self.seed}")
        return " ".join(parts)


def _variant(key: str, label: str) -> Network:
    return Network(key, label, f"configs/variants/{key}.yaml")


ZFNET = Network("zfnet", "ZFNet (Fig. 3): conv1 7x7, stride 2")
KRIZHEVSKY = _variant("krizhevsky_layer1", "Krizhevsky's layer 1: 11x11, stride 4")
SOURCE = Network(
    "fashion_mnist_0_4",
    "ZFNet on classes 0-4 (the transfer source)",
    "configs/transfer/fashion_mnist_0_4.yaml",
)
# Table 3's rows: the plain ZFNet (and another seed of it, for the noise) first.
ABLATIONS = (
    ZFNET,
    Network("zfnet_seed1", "ZFNet, another seed", seed=1),
    _variant("no_fc7", "Removed layer 7"),
    _variant("no_fc6_fc7", "Removed layers 6,7"),
    _variant("no_conv3_conv4", "Removed layers 3,4"),
    _variant("no_conv3_conv4_fc6_fc7", "Removed layers 3,4,6,7"),
    _variant("fc6_fc7_2048", "Layers 6,7: 2048 units"),
    _variant("fc6_fc7_8192", "Layers 6,7: 8192 units"),
    _variant("wide_conv3_conv5", "Layers 3,4,5: 512,1024,512 maps"),
    _variant("wide_conv3_conv5_fc6_fc7_8192", "Layers 3,4,5 wide and 6,7: 8192 units"),
)
NETWORKS = (*ABLATIONS, KRIZHEVSKY, SOURCE)


def train(
    network: Network, runs: Path, data_dir: str, extra: tuple[str, ...] = ()
) -> dict:
    """Fit ``network`` into ``runs/<key>`` unless its checkpoint exists, test it.

    Returns its test metrics, the last epoch's training top-1 (with dropout on), its
    parameter count, checkpoint, command and the seconds fitting and testing took
    (fitting 0 when the checkpoint was reused).
    """
    args = [*SCHEDULE, f"--data.init_args.data_dir={data_dir}", *extra]
    if network.overlay:
        args = ["--config", str(ROOT / network.overlay), *args]
    args.append(f"--seed_everything={network.seed}")
    start = time.perf_counter()
    result = train_default(runs / network.key, BASE_CONFIG, args)
    seconds = time.perf_counter() - start
    module = ZFNetModule.load_from_checkpoint(result["checkpoint"], map_location="cpu")
    return {
        "label": network.label,
        "command": network.command(),
        "checkpoint": result["checkpoint"],
        "test_top1": result["metrics"]["test/top1"],
        "train_top1": _last_train_top1(runs / network.key / "train" / "metrics.csv"),
        "parameters": sum(p.numel() for p in module.parameters()),
        "fit_s": result["timings"].get("train_s", 0.0),
        "seconds": seconds,
    }


def _last_train_top1(metrics_csv: Path) -> float | None:
    """The last epoch's ``train/top1`` in a CSVLogger file, if logged."""
    if not metrics_csv.exists():
        return None
    with metrics_csv.open() as lines:
        values = [
            row["train/top1"] for row in csv.DictReader(lines) if row.get("train/top1")
        ]
    return float(values[-1]) if values else None


def load_network(checkpoint: str) -> torch.nn.Module:
    """The trained ZFNet of a checkpoint, in eval mode on the CPU."""
    return ZFNetModule.load_from_checkpoint(checkpoint, map_location="cpu").model.eval()
