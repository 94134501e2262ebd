"""bf16 on CPUs without oneDNN's bf16 kernels: there PyTorch computes bf16 through
conversions to and from float32, and the default's training steps ran 5x slower
under ``bf16-mixed`` than in float32 (0.45 against 2.25 steps a second, ``make
demo``'s progress bar over its first steps on a 2-core AVX2 machine), where a CPU
with them ran 1.2x faster (``benchmarks/results/training_speed_cpu.md``)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from .model import contrast_norm

__all__ = ["check_half_on_cpu", "cpu_has_native_bf16", "warn_emulated_bf16"]


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


def check_half_on_cpu(trainer: pl.Trainer) -> None:
    """Refuse ``16-true`` or ``bf16-true`` on a CPU where PyTorch has no kernel in
    that dtype for ZFNet's contrast normalisation (it failed at the first batch).

    Raises:
        ValueError: naming the precision and what to give instead.
    """
    precision = str(trainer.precision)
    dtype = {"16-true": torch.float16, "bf16-true": torch.bfloat16}.get(precision)
    if dtype is None or trainer.strategy.root_device.type != "cpu":
        return
    try:
        contrast_norm()(torch.zeros(1, 1, 1, 1, dtype=dtype))
    except NotImplementedError:
        raise ValueError(
            f"--trainer.precision {precision}: PyTorch has no {dtype} kernel on the "
            "CPU for ZFNet's contrast normalisation (LocalResponseNorm); give "
            "--trainer.precision 32-true, or bf16-mixed"
        ) from None
