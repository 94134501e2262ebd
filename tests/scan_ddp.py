"""Scan a tiny data set for top-k activations with ``Trainer.predict``; the tests run
it as ``python -m tests.scan_ddp OUT DEVICES`` (DDP relaunches this command line)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_zfnet import scan_top_activations


def tiny_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(inplace=True),  # rewrites the conv's output: the scan must copy it
        nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.ReLU(),
    ).eval()


def tiny_images() -> torch.Tensor:
    """Rounded values, so that activations tie and the tie-breaking is exercised."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(37, 1, 10, 10, generator=generator).mul(2).round()


def scan(devices: int, strategy: str = "auto", distinct_images: bool = False):
    model = tiny_model()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    layers = [model[0], model[4]]
    top = scan_top_activations(
        model, layers, tiny_images(), 5, 4, trainer, distinct_images=distinct_images
    )
    return top, trainer


def main(out: Path, devices: int) -> None:
    top, trainer = scan(devices, strategy="ddp")
    model = tiny_model()  # the same again, and the processes already connected
    distinct = scan_top_activations(
        model, [model[0], model[4]], tiny_images(), 5, 4, trainer, distinct_images=True
    )
    states = {
        form: {name: state.entries(name)._asdict() for name in state.layers}
        for form, state in (("state", top), ("distinct", distinct))
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {**states, "world_size": trainer.world_size},
        out / f"rank{trainer.global_rank}.pt",
    )
    # Lightning leaves the process group up; gloo's threads can abort the
    # interpreter's exit ("terminate called without an active exception").
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
