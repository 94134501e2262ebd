"""``make demo``: train the embedded default (or reuse its checkpoint), test it and
write a report of what it learned (OUT/report.md, figures in OUT/figures).

python -m reports.demo --out runs/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lightning_zfnet import train_default

from .report import write_report


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
