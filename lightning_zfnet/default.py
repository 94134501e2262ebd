"""The embedded default: fit ``configs/cluttered_fashion_mnist.yaml`` once, test it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from .precision import cpu_has_native_bf16

__all__ = ["DEFAULT_CONFIG", "train_default"]

DEFAULT_CONFIG = (
    Path(__file__).resolve().parents[1] / "configs" / "cluttered_fashion_mnist.yaml"
)


def train_default(
    out: Path, config: Path = DEFAULT_CONFIG, extra: Sequence[str] = ()
) -> dict:
    """Fit ``config`` into ``out/train`` unless its checkpoint exists, then test it
    (the ``zfnet`` command logs the test into ``out/train/test/version_<n>``, so the
    training's logs stay as they are). A config in bf16 trains in float32 on a CPU
    without bf16 kernels (AVX-512), where bf16 is 5x slower (see :mod:`.precision`),
    unless ``extra`` sets the precision or gives a config (``--config``, ``-c``,
    ``--trainer``), which may set it.

    Returns the checkpoint path, the test metrics, the seconds each step took and
    the data folder the test read.
    """
    # imported here: the package imports this module, and `python -m
    # lightning_zfnet.cli` warns when the package has imported cli before it runs
    from .cli import run_cli

    out = Path(out)
    checkpoint = out / "train" / "checkpoints" / "last.ckpt"
    stage = "testing" if checkpoint.exists() else "training"
    extra = [*extra, *_float32_where_bf16_is_emulated(config, extra, stage)]

    def args(stage: str) -> list[str]:
        # last, so that no config among the extra arguments moves the logs
        save_dir = f"--trainer.logger.init_args.save_dir={out / 'train'}"
        return [stage, "--config", str(config), *extra, save_dir]

    timings = {}
    if not checkpoint.exists():
        start = time.perf_counter()
        run_cli(args("fit"))
        timings["train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    cli = run_cli([*args("test"), f"--ckpt_path={checkpoint}"])
    timings["test_s"] = time.perf_counter() - start
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    return {
        "checkpoint": str(checkpoint),
        "metrics": metrics,
        "timings": timings,
        "data_dir": str(cli.datamodule.data_dir),
    }


def _float32_where_bf16_is_emulated(
    config: Path, extra: Sequence[str], stage: str
) -> list[str]:
    """``--trainer.precision=32-true`` when ``config`` trains in bf16 on a CPU
    without bf16 kernels and ``extra`` gives neither a precision nor a config
    (which may set one); says so, naming the ``stage`` (``"training"``, or
    ``"testing"`` a checkpoint alone)."""
    if any(_sets_precision_or_config(arg) for arg in extra):
        return []
    settings = yaml.safe_load(Path(config).read_text())
    trainer = settings.get("trainer") if isinstance(settings, dict) else None
    precision = str(trainer.get("precision")) if isinstance(trainer, dict) else ""
    if not precision.startswith("bf16") or torch.cuda.is_available():
        return []  # Lightning's "auto" accelerator takes the GPU
    if cpu_has_native_bf16():
        return []
    print(
        f"{Path(config).name} trains in {precision}, which is 5x slower on this CPU "
        f"(no bf16 kernels: they need AVX-512): {stage} in float32 "
        "(--trainer.precision=32-true)"
    )
    return ["--trainer.precision=32-true"]


def _sets_precision_or_config(arg: str) -> bool:
    """Whether a command-line argument sets the precision or gives a config that
    may: ``--trainer.precision``, the whole command's ``--config`` / ``-c``, or a
    trainer's ``--trainer`` (not ``--trainer.max_epochs`` and the like)."""
    flag = arg.split("=", 1)[0]
    return flag in ("--trainer.precision", "--config", "--trainer") or flag[:2] == "-c"
