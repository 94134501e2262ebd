"""``make experiments``: the paper's architecture diagnosis (Fig. 6), ablations
(Table 3) and transfer with few labels (Tables 4-7) on offline data, with a report.

python -m experiments [--out experiments/results] [--runs runs/experiments]
python -m experiments --report-only   # the report again, from OUT/results.json

Trained networks go to ``--runs`` and are reused by a later run; the report
(``report.md``, ``results.json``, ``figures/``) goes to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

from lightning_zfnet.data import FashionMNISTDataModule

from . import diagnosis, report, sources, transfer

DIAGNOSIS_IMAGES = 1000  # test images for dead filters and layer-2 projections


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/results"))
    parser.add_argument("--runs", type=Path, default=Path("runs/experiments"))
    parser.add_argument("--data", default="data", help="Fashion-MNIST's data_dir")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite report.md and the transfer figure from OUT/results.json",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        rewrite_report(args.out)
        return
    results = run(args.out, args.runs, args.data)
    print(f"\nreport: {args.out / 'report.md'}")
    for part, seconds in results["seconds"].items():
        print(f"{part:12s}{seconds:.0f} s")


def run(
    out: Path,
    runs: Path,
    data_dir: str,
    networks: tuple[sources.Network, ...] = sources.NETWORKS,
    plan: transfer.Plan = transfer.PLAN,
    extra: tuple[str, ...] = (),
) -> dict:
    """Train ``networks``, diagnose, run the transfer ``plan``, write the report.

    ``extra`` options go to every training (tests shorten it with them).
    """
    (out / "figures").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = {"environment": _environment()}
    results["networks"] = {
        n.key: sources.train(n, runs, data_dir, extra) for n in networks
    }
    trained = time.perf_counter()
    results["diagnosis"], images = _diagnose(results["networks"], out / "figures")
    results["diagnosis_images"] = images
    results["shift_images"] = min(images, diagnosis.SHIFT_IMAGES)
    diagnosed = time.perf_counter()
    source = results["networks"][sources.SOURCE.key]["checkpoint"]
    results["transfer"] = {
        target: transfer.run(source, target, runs / "transfer", plan)
        for target in transfer.TARGETS
    }
    transfer.figure(results["transfer"], out / "figures" / "transfer.png")
    end = time.perf_counter()
    results["seconds"] = {
        "networks": trained - start,
        "diagnosis": diagnosed - trained,
        "transfer": end - diagnosed,
        "total": end - start,
    }
    report.write(results, out)
    for measures in results["diagnosis"].values():
        measures.pop("figure")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def rewrite_report(out: Path) -> Path:
    """Write ``out/report.md`` and the transfer figure again from the results of a
    run (``out/results.json``); Fig. 6 and the diagnosis figure stay as they are."""
    results = json.loads((out / "results.json").read_text())
    for result in results["transfer"].values():  # JSON keys are strings
        result["modes"] = {
            mode: {int(budget): values for budget, values in by.items()}
            for mode, by in result["modes"].items()
        }
    transfer.figure(results["transfer"], out / "figures" / "transfer.png")
    return report.write(results, out)


def _diagnose(networks: dict, figures: Path) -> tuple[dict, int]:
    """Fig. 6's measures and figures for the two first layers, and the number of
    test images (of the networks' data) they were measured on."""
    data = FashionMNISTDataModule.from_checkpoint(networks["zfnet"]["checkpoint"])
    data.setup("test")
    count = min(DIAGNOSIS_IMAGES, len(data.test_set))
    images = torch.stack([data.test_set[i][0] for i in range(count)])
    background = -data.mean / data.std
    measured, labels = {}, {}
    for key in (sources.KRIZHEVSKY.key, sources.ZFNET.key):
        model = sources.load_network(networks[key]["checkpoint"])
        measured[key] = diagnosis.measure(model, images, background)
        labels[key] = networks[key]["label"]
    diagnosis.fig6(measured, labels, figures / "fig6.png")
    diagnosis.measures_figure(measured, labels, figures / "diagnosis.png")
    return measured, count


def _environment() -> dict:
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPU cores",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg()[0],
    }


if __name__ == "__main__":
    main()
