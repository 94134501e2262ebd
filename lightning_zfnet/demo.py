"""``make demo``: train the embedded default (or reuse its checkpoint), test it and
write a report of what it learned (OUT/report.md, figures in OUT/figures).

python -m lightning_zfnet.demo --out runs/demo
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .cli import run_cli
from .report import write_report

CONFIG = (
    Path(__file__).resolve().parents[1] / "configs" / "cluttered_fashion_mnist.yaml"
)


def train_default(out: Path, config: Path = CONFIG, extra: list[str] = ()) -> dict:
    """Fit ``config`` into ``out/train`` unless its checkpoint exists, then test it.

    Returns the checkpoint path, the test metrics, the seconds each step took and
    the data folder the test read.
    """
    checkpoint = out / "train" / "checkpoints" / "last.ckpt"

    def args(stage: str, folder: str) -> list[str]:  # each stage logs apart
        save_dir = f"--trainer.logger.init_args.save_dir={out / folder}"
        return [stage, "--config", str(config), save_dir, *extra]

    timings = {}
    if not checkpoint.exists():
        start = time.perf_counter()
        run_cli(args("fit", "train"))
        timings["train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    cli = run_cli([*args("test", "test"), f"--ckpt_path={checkpoint}"])
    timings["test_s"] = time.perf_counter() - start
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    return {
        "checkpoint": str(checkpoint),
        "metrics": metrics,
        "timings": timings,
        "data_dir": str(cli.datamodule.data_dir),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = train_default(args.out)
    (args.out / "summary.json").write_text(json.dumps(result, indent=2))
    print(f"\ncheckpoint: {result['checkpoint']}")
    print(f"logs:       {args.out / 'train' / 'metrics.csv'}")
    for name, value in sorted(result["metrics"].items()):
        print(f"{name:12s}{value:.4f}")
    for name, seconds in result["timings"].items():
        print(f"{name:12s}{seconds:.0f} s")
    report = write_report(
        result["checkpoint"],
        args.out,
        result["data_dir"],
        result["timings"],
        result["metrics"],
    )
    print(f"\nreport:     {report}")


if __name__ == "__main__":
    main()
