"""The embedded default: fit ``configs/cluttered_fashion_mnist.yaml`` once, test it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DEFAULT_CONFIG", "train_default"]

DEFAULT_CONFIG = (
    Path(__file__).resolve().parents[1] / "configs" / "cluttered_fashion_mnist.yaml"
)


def train_default(
    out: Path, config: Path = DEFAULT_CONFIG, extra: Sequence[str] = ()
) -> dict:
    """Fit ``config`` into ``out/train`` unless its checkpoint exists, then test it
    (the ``zfnet`` command logs the test into ``out/train/test/version_<n>``, so the
    training's logs stay as they are).

    Returns the checkpoint path, the test metrics, the seconds each step took and
    the data folder the test read.
    """
    # imported here: the package imports this module, and `python -m
    # lightning_zfnet.cli` warns when the package has imported cli before it runs
    from .cli import run_cli

    out = Path(out)
    checkpoint = out / "train" / "checkpoints" / "last.ckpt"

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
