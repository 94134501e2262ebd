"""Timing and result files shared by the benchmark scripts."""

from __future__ import annotations

import json
import platform
import statistics
import time
from argparse import ArgumentParser, Namespace
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import captum
import torch

__all__ = ["environment", "median_seconds", "parse_speed_args", "write_results"]


def median_seconds(
    fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, device: str = "cpu"
) -> float:
    """Median wall time of ``fn()`` after ``warmup`` calls, synchronising the device."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def environment(device: str = "cpu") -> dict[str, Any]:
    """Versions and hardware, stored beside every result."""
    cuda = str(device).startswith("cuda")
    name = torch.cuda.get_device_name() if cuda else "cpu"
    settings = {"cudnn_tf32": torch.backends.cudnn.allow_tf32} if cuda else {}
    return {
        "torch": torch.__version__,
        "captum": captum.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        **settings,
    }


def parse_speed_args(
    argv: list[str] | None,
    description: str,
    quick_help: str,
    parents: Sequence[ArgumentParser] = (),
) -> Namespace:
    """The options every speed script takes, and :func:`write_results` reads:
    ``--quick``, ``--device`` and ``--out``; ``parents`` (made with
    ``add_help=False``) add a script's own, which ``--help`` then lists too."""
    parser = ArgumentParser(description=description, parents=list(parents))
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="folder of the results (default: the committed ones, overwritten)",
    )
    return parser.parse_args(argv)


def write_results(
    out: Path, name: str, args: Namespace, results: dict, table: str
) -> None:
    """Write ``<name>[_quick]_<device>.json`` (every number) and ``.md`` (the table)
    in ``out``, and print the table."""
    stem = name + ("_quick" if args.quick else "") + f"_{args.device}"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{stem}.md").write_text(table + "\n")
    print(table)
