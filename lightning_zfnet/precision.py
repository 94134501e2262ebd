"""bf16 on CPUs without oneDNN's bf16 kernels: there PyTorch computes bf16 through
conversions to and from float32, and the default's training steps ran 5x slower
under ``bf16-mixed`` than in float32 (0.45 against 2.25 steps a second, ``make
demo``'s progress bar over its first steps on a 2-core AVX2 machine), where a CPU
with them ran 1.2x faster (``benchmarks/results/training_speed_cpu.md``)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

__all__ = ["cpu_has_native_bf16", "warn_emulated_bf16"]


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU: x86 with AVX-512 (BW, VL and
    DQ), or ARM with bf16. False for a PyTorch built without oneDNN, whose bf16
    has no fast kernels either (it then lacks the query)."""
    if not torch.backends.mkldnn.is_available():
        return False
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return supported is not None and bool(supported())


def warn_emulated_bf16(trainer: pl.Trainer) -> None:
    """Warn when ``trainer`` would run bf16 on a CPU without oneDNN's bf16
    kernels."""
    precision = str(trainer.precision)
    on_cpu = trainer.strategy.root_device.type == "cpu"
    if precision.startswith("bf16") and on_cpu and not cpu_has_native_bf16():
        rank_zero_warn(
            f"--trainer.precision {precision} on a CPU without bf16 kernels (they "
            "need AVX-512): bf16 goes through float32 conversions here, about 5x "
            "slower than float32; pass --trainer.precision 32-true"
        )
