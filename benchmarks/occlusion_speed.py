"""Occlusion's cost against Captum's on today's CNNs, and the arithmetic limit.

    python -m benchmarks.occlusion_speed [--quick] [--device cuda] [--out DIR]
        [--models resnet50 vgg16 ...] [--occluders 32/16 16/8] [--repeats 3]
        [--memory] [--size 64]

Per model (random weights, batch norm calibrated on random images; one image at
224x224, 299x299 for Inception v3) and occluder (side/stride), in one run:
``captum.attr.Occlusion`` at ``perturbations_per_eval`` 1, 16 and 64 (the best is the
baseline), ``OcclusionSensitivity`` with full passes (``incremental=False``) and by
default (incremental where its plan pays), each speed-up over Captum's best, the
multiply-add limit of incremental inference (``count_multiply_adds``) and how much
of it the default reaches, and the largest difference from Captum's map (beside
the largest between Captum's own maps at the three settings: on CUDA, TF32
convolutions make any change of batching move the maps in the 2nd-3rd digit). The
machine's load drifts, so after Captum's sweep over ``perturbations_per_eval`` its
best setting and our two paths run in turns ``--repeats`` times (default 3), and
each time reported is its best run. With ``--memory``, peak memory of Captum and
of ours at ``perturbations_per_eval`` 16 and 64 (each in a fresh process: the rise
of its peak resident set; on CUDA the peak allocated). Rows of models run before
are kept in the results file. ``--size`` gives every model that input side instead
(small inputs: CIFAR's 32, Tiny ImageNet's 64), in results files of their own.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from captum.attr import Occlusion
from torch import nn
from torchvision import models

from captum_deconvnet import OcclusionSensitivity
from captum_deconvnet._occlusion_args import occluder_regions
from captum_deconvnet.incremental import IncrementalForward, count_multiply_adds
from lightning_zfnet import zfnet

from .timing import environment, parse_speed_args, write_results

PER_EVAL = (1, 16, 64)
MODELS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "zfnet": (zfnet, 224),  # its classifier is sized to the input (see build)
    "resnet18": (models.resnet18, 224),
    "resnet50": (models.resnet50, 224),
    # transform_input: as torchvision builds them with their ImageNet weights
    "googlenet": (
        lambda: models.googlenet(
            init_weights=True, aux_logits=False, transform_input=True
        ),
        224,
    ),
    "inception_v3": (
        lambda: models.inception_v3(
            init_weights=True, aux_logits=False, transform_input=True
        ),
        299,
    ),
    "vgg16": (models.vgg16, 224),
    "mobilenet_v2": (models.mobilenet_v2, 224),
    "efficientnet_b0": (models.efficientnet_b0, 224),
    "shufflenet_v2": (models.shufflenet_v2_x1_0, 224),
}
QUICK = {"resnet18": 64}


def calibrated(
    model: nn.Module, size: int, device: str = "cpu", channels: int = 3
) -> nn.Module:
    """``model`` in eval mode with its batch norm's statistics taken from random
    images (so activations neither vanish nor saturate) and linear layers of unit
    gain (so occluding changes the outputs measurably)."""
    torch.manual_seed(0)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=layer.in_features**-0.5)
    model = model.to(device).train()
    with torch.no_grad():
        for _ in range(4 if norms else 0):  # a running average over 8 images
            model(torch.randn(2, channels, size, size, device=device))
    return model.eval()


def build(name: str, size: int, device: str) -> tuple[nn.Module, torch.Tensor]:
    """The model with random weights, calibrated, and one image."""
    torch.manual_seed(0)
    make = MODELS[name][0]
    network = make(num_classes=1000, input_size=size) if make is zfnet else make()
    model = calibrated(network, size, device)
    return model, torch.randn(1, 3, size, size, device=device)


def timed(fn: Callable[[], torch.Tensor], device: str) -> tuple[float, torch.Tensor]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def occluder_row(
    model, image, window: int, stride: int, device: str, repeats: int = 1
) -> dict:
    kwargs = {"sliding_window_shapes": (3, window, window), "strides": stride}
    kwargs["target"] = 0
    with torch.no_grad():
        model(image)  # warm up
    captum, captum_s, maps = Occlusion(model), {}, {}
    for per_eval in PER_EVAL:
        captum_s[str(per_eval)], maps[per_eval] = timed(
            lambda p=per_eval: captum.attribute(
                image, perturbations_per_eval=p, **kwargs
            ),
            device,
        )
    best = int(min(captum_s, key=captum_s.get))
    reference = maps[best]
    # Captum's maps at other perturbations_per_eval: how far batching alone moves
    # the numbers (far on CUDA with TF32), the floor for our difference
    spread = max((m - reference).abs().max() for m in maps.values())
    full = OcclusionSensitivity(model, incremental=False)
    default = OcclusionSensitivity(model)
    runs = {
        "captum": lambda: captum.attribute(
            image, perturbations_per_eval=best, **kwargs
        ),
        "full": lambda: full.attribute(image, **kwargs),
        "default": lambda: default.attribute(image, **kwargs),
    }
    seconds = {name: [] for name in runs}
    seconds["captum"].append(captum_s[str(best)])  # its sweep's run counts
    results, boxed = {}, {}  # per run, its last call's incremental chunks
    for turn in range(repeats):
        for name, run in runs.items():
            if name != "captum" or turn > 0:
                with incremental_chunk_sizes() as boxed[name]:
                    elapsed, results[name] = timed(run, device)
                seconds[name].append(elapsed)
    row = {"window": window, "stride": stride, "captum_s": captum_s}
    row["captum_best_per_eval"] = best
    row["captum_spread"] = (spread / reference.abs().max()).item()
    row["repeats"] = repeats
    row["captum_best_s"] = min(seconds["captum"])
    row["positions"] = len(
        occluder_regions(
            image.shape[1:], kwargs["sliding_window_shapes"], (stride,) * 3
        )
    )
    # the first call makes any plan it refuses; later calls of the same geometry
    # remember the refusal (see captum_deconvnet._scan._REFUSED_LIMITS)
    row["default_first_s"] = seconds["default"][0]
    for name in ("full", "default"):
        row[f"{name}_s"] = min(seconds[name])
        difference = (results[name] - reference).abs().max() / reference.abs().max()
        row[f"{name}_max_relative_difference"] = difference.item()
        row[f"{name}_speedup"] = row["captum_best_s"] / row[f"{name}_s"]
    incremental = sum(boxed["default"]) // len(image)  # of its last run
    row["default_path"] = (
        "full passes"
        if not incremental
        else "incremental"
        if incremental == row["positions"]
        else f"incremental for {incremental} positions"
    )
    counted = count_multiply_adds(model, image, window, stride)
    row["multiply_adds"] = {
        "full": counted.full,
        "incremental": counted.incremental,
        "limit": counted.limit,
    }
    row["share_of_limit"] = row["default_speedup"] / counted.limit
    return row


@contextmanager
def incremental_chunk_sizes() -> Iterator[list[int]]:
    """The number of copies of each chunk the incremental plan computes inside the
    block (how occlusion ran: the chunks it boxed, the rest full passes)."""
    sizes: list[int] = []
    call = IncrementalForward.__call__

    def recording(self, index, corners, patches):  # noqa: ANN001, ANN202
        sizes.append(len(index))
        return call(self, index, corners, patches)

    IncrementalForward.__call__ = recording
    try:
        yield sizes
    finally:
        IncrementalForward.__call__ = call


def peak_memory(
    name: str, method: str, per_eval: int, device: str, quick: bool
) -> float:
    """MiB of memory one occlusion run adds at its peak, in a fresh process."""
    command = [
        sys.executable, "-m", "benchmarks.occlusion_speed", "--probe", name, method,
        str(per_eval), "--device", device,
    ] + (["--quick"] if quick else [])  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _probe(name: str, method: str, per_eval: int, device: str, quick: bool) -> None:
    """Print the MiB that one run adds to the memory in use at its peak (32x32
    occluder, stride 24): on CUDA the peak allocated, on the CPU the resident set
    sampled every millisecond, after freed memory went back to the system."""
    size = QUICK[name] if quick else MODELS[name][1]
    model, image = build(name, size, device)
    window = 16 if quick else 32
    kwargs = {"sliding_window_shapes": (3, window, window), "strides": window * 3 // 4}
    kwargs.update(target=0, perturbations_per_eval=per_eval)
    occlusion = Occlusion(model) if method == "captum" else OcclusionSensitivity(model)
    with torch.no_grad():
        model(image)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated()
        occlusion.attribute(image, **kwargs)
        print((torch.cuda.max_memory_allocated() - before) / 2**20)
        return
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before, peak, done = _resident(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _resident())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    occlusion.attribute(image, **kwargs)
    done.set()
    sampler.join()
    print((max(peak[0], _resident()) - before) / 2**20)


def _resident() -> int:
    """Bytes of this process's resident set."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _device(env: dict) -> str:
    name = env.get("device_name", "cpu")
    return (
        env["device"]
        if name == "cpu"
        else f"{env['device']} ({name}, torch {env['torch']})"
    )


def _tf32(env: dict) -> str:
    """On CUDA, whether convolutions ran in TF32 (PyTorch's default there): then
    maps computed on patches and on whole images differ in about the 3rd digit."""
    if "cudnn_tf32" not in env:
        return ""
    return ", TF32 convolutions" if env["cudnn_tf32"] else ", float32 convolutions"


def _first(row: dict) -> str:
    """The default's first call (slower than its best where it made a plan that
    it then refused, which later calls skip); absent from older runs' rows."""
    first = row.get("default_first_s")
    return "" if first is None else f" (first call {first:.2f})"


def table(results: dict) -> str:
    env = results["environment"]
    lines = [
        f"Occlusion speed, one image, random weights, {_device(env)} "
        f"({env['threads']} threads{_tf32(env)}); times in seconds, Captum's sweep "
        "one run each, the others the best of the repeats run in turns",
        "",
        "| model | occluder | positions | Captum, ppe 1 / 16 / 64 | Captum best (ppe) "
        "| ours, full passes | ours, default | speed-up, full | speed-up, default "
        "| multiply-add limit | share of limit "
        "| max rel. difference (Captum's own spread) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, model in results["models"].items():
        for r in model["occluders"]:
            c, best = r["captum_s"], r["captum_best_per_eval"]
            spread = f" ({r['captum_spread']:.1e})" if "captum_spread" in r else ""
            # a row kept from a run without repeats has its sweep's time alone
            lines.append(
                f"| {name} ({model['size']}) | {r['window']}/{r['stride']} "
                f"| {r['positions']} | {c['1']:.2f} / {c['16']:.2f} / {c['64']:.2f} "
                f"| {r.get('captum_best_s', c[str(best)]):.2f} ({best}) "
                f"| {r['full_s']:.2f} | {r['default_s']:.2f}{_first(r)}, "
                f"{r['default_path']} | {r['full_speedup']:.2f}x "
                f"| **{r['default_speedup']:.2f}x** "
                f"| {r['multiply_adds']['limit']:.2f}x | {r['share_of_limit']:.0%} "
                f"| {r['default_max_relative_difference']:.1e}{spread} |"
            )
    memory = [
        (n, m["memory_mib"]) for n, m in results["models"].items() if "memory_mib" in m
    ]
    if memory:
        lines += [
            "",
            "Peak memory added by one run (MiB), 32x32 occluder at stride 24",
            "",
            "| model | Captum, ppe 16 | ours, ppe 16 | Captum, ppe 64 | ours, ppe 64 |",
            "|---|---|---|---|---|",
        ]
        for name, m in memory:
            lines.append(
                f"| {name} | {m['captum_16']:.0f} | {m['ours_16']:.0f} "
                f"| {m['captum_64']:.0f} | {m['ours_64']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--models", nargs="+", choices=list(MODELS))
    extra.add_argument("--occluders", nargs="+", default=["32/16", "16/8"])
    extra.add_argument("--repeats", type=int, default=3)
    extra.add_argument("--size", type=int, help="every model's input side (times)")
    extra.add_argument("--memory", action="store_true")
    extra.add_argument("--memory-only", action="store_true", help="keep the times")
    extra.add_argument("--probe", nargs=3)
    options, rest = extra.parse_known_args(argv)  # --help: parse_speed_args's
    if options.size and (options.memory or options.memory_only):
        extra.error("--memory measures the models at their own sizes: drop --size")
    args = parse_speed_args(
        rest,
        __doc__.split("\n\n")[0],
        quick_help="ResNet-18 at 64x64, a 16x16 occluder",
        parents=[extra],
    )
    if options.probe:
        name, method, per_eval = options.probe
        _probe(name, method, int(per_eval), args.device, args.quick)
        return {}
    names = list(QUICK) if args.quick else options.models or list(MODELS)
    occluders = (
        [(16, 8)]
        if args.quick
        else [tuple(map(int, o.split("/"))) for o in options.occluders]
    )
    sized = "" if args.quick or not options.size else f"_{options.size}px"
    stem = "occlusion_speed" + sized + ("_quick" if args.quick else "")
    stem += f"_{args.device}"
    previous = args.out / f"{stem}.json"
    results = json.loads(previous.read_text()) if previous.exists() else {}
    results["environment"] = environment(args.device)
    results.setdefault("models", {})
    for name in names:
        size = QUICK[name] if args.quick else options.size or MODELS[name][1]
        model, image = build(name, size, args.device)
        entry = {"size": size, "environment": environment(args.device), "occluders": []}
        if options.memory_only:
            entry = results["models"].get(name, entry)
        for window, stride in [] if options.memory_only else occluders:
            row = occluder_row(
                model, image, window, stride, args.device, options.repeats
            )
            entry["occluders"].append(row)
            print(
                f"{name} {window}/{stride}: {row['default_speedup']:.2f}x "
                f"(limit {row['multiply_adds']['limit']:.2f}x)",
                flush=True,
            )
        if options.memory or options.memory_only:
            entry["memory_mib"] = {
                f"{method}_{p}": peak_memory(name, method, p, args.device, args.quick)
                for p in (16, 64)
                for method in ("captum", "ours")
            }
        results["models"][name] = entry
        # after each model, so that an interrupted run keeps what it measured
        write_results(
            args.out, "occlusion_speed" + sized, args, results, table(results)
        )
    return results


if __name__ == "__main__":
    main()
