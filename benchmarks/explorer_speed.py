"""Throughput of the explorer's scan (each channel's top-9 over a dataset, from 9
different images, and each image's prediction) in Lightning's predict loop, one
process against two (DDP).

    python -m benchmarks.explorer_speed [--quick] [--device cpu|cuda] [--out DIR]

On the CPU the two runs share the same cores: one process with all of them as
threads, or two processes (gloo) with half each. With ``--device cuda`` one GPU
against two. Each run is a fresh command (``strategy="ddp"`` relaunches it); its
timing starts after a warm-up scan, so process start and connection are left out.
Writes ``explorer_speed[_quick]_<device>.json`` and ``.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lightning_zfnet import TopKWriter, fixed_batches, run_batches, zfnet
from lightning_zfnet.batches import default_trainer
from lightning_zfnet.model import zfnet_layers
from lightning_zfnet.scan import top_k_compute

from .timing import environment, write_results

BATCH = 64


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1024 images, not 8192")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    # One timed run, as the parent starts it (and DDP relaunches it).
    parser.add_argument("--processes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def scan_once(args: argparse.Namespace) -> None:
    """Scan conv1-conv5 of the demo's ZFNet (random weights) over random images
    with ``args.processes`` processes; rank 0 writes the seconds it took."""
    torch.manual_seed(0)
    model = zfnet(num_classes=10, in_channels=1, input_size=64, width=0.25)
    model = model.eval()
    names = {m: n for n, m in model.named_modules()}
    layers = [names[m] for s, m in zfnet_layers(model).items() if s.startswith("conv")]
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(args.images, 1, 64, 64, generator=generator)
    trainer = default_trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=args.processes,
        strategy="ddp" if args.processes > 1 else "auto",
    )
    compute = top_k_compute(layers, 9, outputs=True, distinct_images=True)

    def scan(count: int) -> float:
        start = time.perf_counter()
        run_batches(
            model, images[:count], fixed_batches(count, BATCH), compute,
            TopKWriter(9, count, distinct_images=True), trainer,
        )  # fmt: skip
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    scan(BATCH * args.processes)  # warm-up, and the processes connect
    seconds = scan(args.images)
    if trainer.is_global_zero:
        args.result.write_text(json.dumps({"seconds": seconds}))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def run(processes: int, images: int, device: str) -> dict:
    threads = max(1, (os.cpu_count() or 2) // processes)
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        command = [
            sys.executable, "-m", "benchmarks.explorer_speed", "--device", device,
            "--processes", str(processes), "--images", str(images),
            "--result", str(result),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, env=env, check=True, capture_output=True)
        seconds = json.loads(result.read_text())["seconds"]
    return {
        "processes": processes,
        "threads_per_process": threads if device == "cpu" else None,
        "images": images,
        "seconds": seconds,
        "images_per_second": images / seconds,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.processes is not None:
        scan_once(args)
        return {}
    images = 1024 if args.quick else 8192
    rows = [run(processes, images, args.device) for processes in (1, 2)]
    results = {
        "environment": environment(args.device),
        "config": {
            "model": "ZFNet width 0.25, 64x64, 1 channel, random weights",
            "layers": "conv1-conv5, top-9 of distinct images each, every prediction",
            "batch_per_process": BATCH,
        },
        "runs": rows,
    }
    table = "\n".join(
        [
            "| processes | threads each | images | seconds | images / s |",
            "|---|---|---|---|---|",
            *(
                f"| {r['processes']} | {r['threads_per_process'] or '-'} | "
                f"{r['images']} | {r['seconds']:.2f} | {r['images_per_second']:.0f} |"
                for r in rows
            ),
        ]
    )
    write_results(args.out, "explorer_speed", args, results, table)
    return results


if __name__ == "__main__":
    main()
