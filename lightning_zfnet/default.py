"""The embedded default: fit ``configs/cluttered_fashion_mnist.yaml`` once, test it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
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
    unless ``extra`` sets the precision, by ``--trainer.precision`` or in a config
    (``--config``, ``-c``, ``--trainer``).

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
    config: Path, extra: Sequence[str], stage: str = "training"
) -> list[str]:
    """``--trainer.precision=32-true`` when ``config`` trains in bf16 on a CPU
    without bf16 kernels and ``extra`` leaves the precision to the config; says so,
    naming the ``stage`` (``"training"``, or ``"testing"`` a checkpoint alone)."""
    if any(_sets_precision(flag, value) for flag, value in _options(extra)):
        return []
    precision = str(_trainer_of(*_loaded(str(config))).get("precision"))
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


def _options(args: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """``(flag, value)`` of each option in ``args``, given as ``--flag=value``,
    ``--flag value``, ``-cvalue`` or ``-c=value``."""
    for i, arg in enumerate(args):
        if arg.startswith("-c") and len(arg) > 2:
            yield "-c", arg[2:].removeprefix("=")
        elif "=" in arg and arg.startswith("--"):
            yield tuple(arg.split("=", 1))
        elif arg.startswith("-"):
            yield arg, args[i + 1] if i + 1 < len(args) else None


def _sets_precision(flag: str, value: str | None) -> bool:
    """Whether the option sets the trainer's precision: ``--trainer.precision``,
    or a config that does, of the whole command (``--config``, ``-c``) or of the
    trainer (``--trainer``)."""
    if flag == "--trainer.precision":
        return True
    if value is None or flag not in ("--config", "-c", "--trainer"):
        return False
    if flag == "--trainer":  # a file or YAML text, as the trainer of a config
        return "precision" in _trainer_of({"trainer": value}, Path.cwd())
    return "precision" in _trainer_of(*_loaded(value))


def _loaded(value: str, folder: Path | None = None) -> tuple[object, Path]:
    """A config as jsonargparse takes it, a file (relative to ``folder``, the
    working directory by default) or YAML text: its contents, and the folder that
    its relative paths start from."""
    path = (folder or Path.cwd()) / value
    try:
        if path.is_file():
            return yaml.safe_load(path.read_text()), path.parent
        return yaml.safe_load(value), folder or Path.cwd()
    except (OSError, yaml.YAMLError):  # the command line reports it
        return None, folder or Path.cwd()


def _trainer_of(config: object, folder: Path) -> dict:
    """The ``trainer`` settings of a loaded config: empty for none, or for a
    config that is not a mapping (the command line refuses it); a path among
    them is read as jsonargparse does, relative to the config's folder."""
    trainer = config.get("trainer") if isinstance(config, dict) else None
    if isinstance(trainer, str):
        trainer, _ = _loaded(trainer, folder)
    return trainer if isinstance(trainer, dict) else {}
