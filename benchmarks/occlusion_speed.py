"""Occlusion's cost against Captum's, on ZFNet at 224 with 1000 classes.

    python -m benchmarks.occlusion_speed [--quick] [--device cuda] [--out DIR]

For occluders 16/8, 32/16 and 48/16 (side/stride) on one image: ``captum.attr.
Occlusion`` at each ``perturbations_per_eval`` tried (the best one is the baseline),
``OcclusionSensitivity`` with full forward passes and with incremental inference
(the default), whether their maps equal Captum's, and the multiply-add ratio that
bounds the incremental speed-up: convolutions and linear layers of full passes
against those of the incremental ones, counted from the boxes it computes.
"""

from __future__ import annotations

import torch
from captum.attr import Occlusion
from torch import nn

from captum_deconvnet import OcclusionSensitivity
from captum_deconvnet._incremental import IncrementalForward
from lightning_zfnet import zfnet

from .timing import environment, median_seconds, parse_speed_args, write_results

OCCLUDERS = ((16, 8), (32, 16), (48, 16))
PER_EVAL = (1, 16, 64)


def multiply_adds(model: nn.Module, image: torch.Tensor, window: int) -> dict:
    """Multiply-adds of one full forward pass and of one incremental copy (an
    interior position), from the layers' output sizes and the plan's boxes."""
    sizes: dict[nn.Module, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda m, a, out: sizes.__setitem__(m, out.shape))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(image)
    for hook in hooks:
        hook.remove()
    plan = IncrementalForward.plan(model, image)
    corner = torch.tensor([[image.shape[2] // 2] * 2])
    patch = torch.zeros(1, image.shape[1], window, window, device=image.device)
    with torch.no_grad():
        plan(torch.tensor([0]), corner, patch)
    names = {m: n.replace(".", "_") for n, m in model.named_modules()}
    full = incremental = 0
    for module, shape in sizes.items():
        if isinstance(module, nn.Linear):
            per_output, positions = module.in_features, 1
        else:
            kernel = module.kernel_size[0] * module.kernel_size[1]
            per_output = module.in_channels // module.groups * kernel
            positions = shape[2] * shape[3]
        macs = per_output * shape[1]
        full += macs * positions
        box = plan.box_sizes.get(names[module])
        incremental += macs * (box[0] * box[1] if box else positions)
    return {"full": full, "incremental": incremental, "limit": full / incremental}


def occluder_speed(model, image, window: int, stride: int, device: str, repeats: int):
    kwargs = {"sliding_window_shapes": (3, window, window), "strides": stride}
    kwargs["target"] = 0
    captum = Occlusion(model)
    captum_s = {
        str(per_eval): median_seconds(
            lambda p=per_eval: captum.attribute(
                image, perturbations_per_eval=p, **kwargs
            ),
            repeats,
            1,
            device,
        )
        for per_eval in PER_EVAL
    }
    best = int(min(captum_s, key=captum_s.get))
    reference = captum.attribute(image, perturbations_per_eval=best, **kwargs)
    full = OcclusionSensitivity(model, incremental=False)
    fast = OcclusionSensitivity(model)
    row = {"window": window, "stride": stride, "captum_s": captum_s}
    row["captum_best_per_eval"] = best
    for name, occlusion in (("full", full), ("incremental", fast)):
        row[f"{name}_s"] = median_seconds(
            lambda o=occlusion: o.attribute(image, **kwargs), repeats, 1, device
        )
        difference = (occlusion.attribute(image, **kwargs) - reference).abs().max()
        row[f"{name}_max_relative_difference"] = (
            difference / reference.abs().max()
        ).item()
        row[f"{name}_speedup"] = captum_s[str(best)] / row[f"{name}_s"]
    row["multiply_adds"] = multiply_adds(model, image, window)
    return row


def table(results: dict) -> str:
    lines = [
        f"Occlusion speed, {results['model']}, {results['environment']['device']}"
        f" ({results['environment']['threads']} threads)",
        "",
        "| occluder | positions | Captum best (s) | ours, full passes (s) "
        "| ours, incremental (s) | speed-up, full | speed-up, incremental "
        "| multiply-add limit | max rel. difference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["occluders"]:
        best = r["captum_best_per_eval"]
        lines.append(
            f"| {r['window']}x{r['window']} / {r['stride']} | {r['positions']} "
            f"| {r['captum_s'][str(best)]:.2f} (per_eval {best}) | {r['full_s']:.2f} "
            f"| {r['incremental_s']:.2f} | {r['full_speedup']:.2f}x "
            f"| {r['incremental_speedup']:.2f}x | {r['multiply_adds']['limit']:.2f}x "
            f"| {r['incremental_max_relative_difference']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_speed_args(
        argv, __doc__.splitlines()[0], quick_help="a 64x64 model, 1 run"
    )
    size, repeats = (64, 1) if args.quick else (224, 3)
    occluders = ((16, 8),) if args.quick else OCCLUDERS
    torch.manual_seed(0)
    model = zfnet(num_classes=1000, input_size=size).to(args.device).eval()
    nn.init.normal_(model.classifier[-1].weight, std=0.01)
    image = torch.randn(1, 3, size, size, device=args.device)
    results = {
        "environment": environment(args.device),
        "model": f"ZFNet, 1000 classes, {size}x{size}, one image",
        "occluders": [],
    }
    for window, stride in occluders:
        row = occluder_speed(model, image, window, stride, args.device, repeats)
        row["positions"] = ((size - window + stride - 1) // stride + 1) ** 2
        results["occluders"].append(row)
        print(f"{window}/{stride}: {row['incremental_speedup']:.2f}x", flush=True)
    text = table(results)
    write_results(args.out, "occlusion_speed", args, results, text)
    return results


if __name__ == "__main__":
    main()
