"""Training throughput of the embedded default, against the machine's matmul peak.

    python -m benchmarks.training_speed [--quick] [--device cuda] [--out DIR]

The default's network (ZFNet at width 0.25, conv1 stride 1, 64x64 grey images,
batch 64, SGD with momentum) takes training steps (forward, backward, optimiser) on
one fixed batch, in each way of running it that ``make demo`` could use: float32
with contiguous or channels-last weights, bf16 autocast (Lightning's
``precision: bf16-mixed``), and ``torch.compile``. Each is reported in images per
second and as a fraction of the peak: the floating-point operations of one step
(counted by ``torch.utils.flop_counter``) per second, over those of a large matmul
of the same precision measured in the same run. The data pipeline's own rate (the
training loader alone, one process) is measured beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lightning_zfnet import zfnet
from lightning_zfnet.data import ClutteredImages, FlipShift

from .timing import environment, median_seconds, parse_speed_args, write_results

BATCH = 64
SIDE = 64
VARIANTS = {  # name: (channels_last, bf16 autocast, torch.compile)
    "float32": (False, False, False),
    "float32, channels-last": (True, False, False),
    "bf16 autocast, channels-last": (True, True, False),
    "float32, channels-last, compiled": (True, False, True),
    "bf16 autocast, channels-last, compiled": (True, True, True),
}


def matmul_peak(dtype: torch.dtype, device: str, size: int, repeats: int) -> float:
    """Floating-point operations per second of a ``size`` cube matmul."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = median_seconds(lambda: a @ b, repeats, 1, device)
    return 2 * size**3 / seconds


def training_step(
    device: str, channels_last: bool, bf16: bool, compiled: bool
) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(step, one_pass)``: a training step of the default on a fixed batch, and
    one forward and backward pass (for counting its operations)."""
    torch.manual_seed(0)
    model = zfnet(
        num_classes=10, in_channels=1, input_size=SIDE, width=0.25, conv1_stride=1
    )
    model = model.to(device)
    x = torch.randn(BATCH, 1, SIDE, SIDE, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    forward = torch.compile(model) if compiled else model

    def one_pass() -> None:
        with torch.autocast(device.split(":")[0], torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x), y)
        loss.backward()

    def step() -> None:
        optimizer.zero_grad()
        one_pass()
        optimizer.step()

    return step, one_pass


def step_flops(one_pass: Callable[[], None]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        one_pass()
    return counter.get_total_flops()


def loader_rate(items: int) -> float:
    """Training items per second of the default's data (composed canvases, flipped
    and shifted), in one process."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (items, 28, 28), dtype=torch.uint8, generator=generator
    )
    labels = torch.randint(0, 10, (items,), generator=generator)
    dataset = FlipShift(ClutteredImages(images, labels, canvas=SIDE), SIDE // 16, 0.0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH)
    start = time.perf_counter()
    for _ in loader:
        pass
    return items / (time.perf_counter() - start)


def measure(device: str, quick: bool) -> dict:
    repeats = 3 if quick else 10
    peaks = {
        "float32": matmul_peak(torch.float32, device, 1024 if quick else 2048, repeats),
        "bf16": matmul_peak(torch.bfloat16, device, 1024 if quick else 2048, repeats),
    }
    variants = {}
    names = list(VARIANTS)[:3] if quick else list(VARIANTS)
    for name in names:
        channels_last, bf16, compiled = VARIANTS[name]
        step, one_pass = training_step(device, channels_last, bf16, compiled)
        start = time.perf_counter()
        step()  # the first step compiles
        first_s = time.perf_counter() - start
        flops = step_flops(one_pass)  # the optimiser's few operations aside
        seconds = median_seconds(step, repeats, 2, device)
        peak = peaks["bf16" if bf16 else "float32"]
        variants[name] = {
            "images_per_s": BATCH / seconds,
            "step_s": seconds,
            "first_step_s": first_s,
            "flops_per_image": flops / BATCH,
            "fraction_of_peak": flops / seconds / peak,
            "fraction_of_float32_peak": flops / seconds / peaks["float32"],
        }
    return {
        "peak_flops": peaks,
        "variants": variants,
        "loader_items_per_s": loader_rate(512 if quick else 4096),
    }


def table(results: dict) -> str:
    peaks = results["peak_flops"]
    lines = [
        "Training step of the default (ZFNet width 0.25, conv1 stride 1,"
        f" {SIDE}x{SIDE}, batch {BATCH}), {results['environment']['device']},"
        f" {results['environment']['threads']} threads",
        "",
        f"matmul peak: float32 {peaks['float32'] / 1e9:.1f} GFLOP/s,"
        f" bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s;"
        f" training loader alone: {results['loader_items_per_s']:.0f} images/s",
        "",
        "| variant | images/s | GFLOP/image | fraction of peak (own precision) |"
        " first step (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in results["variants"].items():
        lines.append(
            f"| {name} | {row['images_per_s']:.0f} | {row['flops_per_image'] / 1e9:.3f}"
            f" | {100 * row['fraction_of_peak']:.1f} % | {row['first_step_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_speed_args(argv, __doc__.split("\n\n")[0], "3 variants, small sizes")
    results = measure(args.device, args.quick)
    results["environment"] = environment(args.device)
    write_results(args.out, "training_speed", args, results, table(results))
    return results


if __name__ == "__main__":
    main()
