"""Test utilities: tiny idx data sets, a callback that dumps each rank's state, and a
snapshot of what an attribution could leave changed in a model."""

from __future__ import annotations

import gzip
import signal
import struct
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import IterableDataset

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write a uint8 array in the idx format MNIST-style data sets use."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def fake_items(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 'garments': a bright rectangle of random size and place, whose
    brightness pattern depends on its label so that a model can learn it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        h, w = rng.integers(8, 22, size=2)
        y, x = rng.integers(2, 28 - h - 1), rng.integers(2, 28 - w - 1)
        stripes = ((np.arange(w) // (1 + label % 5)) % 2) * 100 + 80 + 10 * label
        images[i, y : y + h, x : x + w] = stripes[None, :]
    return images, labels


def write_fake_fashion_mnist(
    directory: Path, n_train: int = 256, n_test: int = 64, compress: bool = False
) -> Path:
    """Write the four idx files into ``directory``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = fake_items(n, seed)
        image_file, label_file = FILES[split]
        write_idx(directory / image_file, images, compress)
        write_idx(directory / label_file, labels, compress)
    return directory


class DumpRankState(pl.Callback):
    """Saves every rank's weights, hyperparameters and logged metrics at the end of
    fitting."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        torch.save(
            {
                "state": state,
                "hparams": dict(pl_module.hparams),
                "metrics": metrics,
                "world_size": trainer.world_size,
            },
            self.directory / f"rank{trainer.global_rank}.pt",
        )


def snapshot(model: nn.Module) -> list:
    """Everything about a model that an attribution could leave changed."""
    state = []
    for name, m in model.named_modules():
        hooks = (
            m._forward_hooks,
            m._forward_pre_hooks,
            m._backward_hooks,
            m._backward_pre_hooks,
        )
        state.append((name, id(m), m.training, tuple(len(h) for h in hooks)))
    state += [(n, p.requires_grad, p.grad) for n, p in model.named_parameters()]
    state += [(n, id(b), b.dtype, b.tolist()) for n, b in model.named_buffers()]
    return state


def tiny_training_args(data_dir) -> list[str]:
    """Overrides that shorten the embedded default's training to seconds on the fake
    data."""
    return [
        f"--data.init_args.data_dir={data_dir}",
        "--data.init_args.val_size=64",
        "--data.init_args.num_workers=0",
        "--model.width=0.25",
        # conv1 at stride 2 is ~3.5x cheaper; these runs test wiring, not accuracy
        "--model.conv1_stride=2",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
    ]


class SignalAt(pl.Callback):
    """Sends ``signal`` (a name such as ``"SIGINT"``) to its own process after the
    optimiser step that makes ``global_step`` equal ``step``, as a user's Ctrl-C or a
    scheduler's SIGTERM would arrive."""

    def __init__(self, step: int, signal: str = "SIGINT") -> None:
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            # raised in this thread, so its handler runs here and now: os.kill may
            # hand it to another thread, and the main thread meets it later, where
            # the interrupt can be swallowed (a finaliser), under load
            signal.raise_signal(getattr(signal, self.signal))


class Stream(IterableDataset):
    """``images`` as an iterable dataset: a length, but no item ``i``."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        return iter(self.images)
