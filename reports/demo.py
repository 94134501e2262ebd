"""``make demo``: train the embedded default (or reuse its checkpoint), test it and
write a report of what it learned (OUT/report.md, figures in OUT/figures) and the
explorer's site (OUT/explorer/index.html).

python -m reports.demo --out runs/demo
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from explorer import build_site, from_checkpoint
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
    explore(result, args.out)


# The explorer's site for the same network (explorer/): every channel of conv1-conv5
# over the first EXPLORER_IMAGES test images, maps for EXPLORER_MAPS of them.
EXPLORER_IMAGES, EXPLORER_MAPS = 1000, 32


def explore(result: dict, out: Path) -> None:
    start = time.perf_counter()
    source = from_checkpoint(result["checkpoint"], result["data_dir"], EXPLORER_IMAGES)
    site = out / "explorer"
    if "train_s" in result["timings"]:  # a new network: a site of an earlier one
        shutil.rmtree(site, ignore_errors=True)  # would be refused, not resumed
    index = build_site(source, site, maps=EXPLORER_MAPS)
    print(f"explorer:   {index}  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
