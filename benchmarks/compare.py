"""Attribution methods side by side: cost, faithfulness, localisation, robustness and
sanity, on the embedded default (ZFNet on Cluttered Fashion-MNIST).

    python -m benchmarks.compare [--ckpt PATH] [--data DIR] [--images N] [--out DIR]
                                 [--quick] [--device cpu|cuda] [--seed S]

Without ``--ckpt`` it uses the embedded default's checkpoint, training it first if it
is absent (as ``make demo`` does). Writes results.json, results.md and PNG figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torchvision.transforms.v2.functional import gaussian_blur
from tqdm import tqdm

from lightning_zfnet import ClutteredFashionMNISTDataModule, ZFNetModule, train_default

from . import report
from .evaluate import cost, faithfulness, localisation, robustness, sanity
from .methods import METHODS, Setup
from .timing import environment

DEFAULT_RUN = Path("runs/demo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="a ZFNetModule checkpoint")
    parser.add_argument(
        "--data", help="Fashion-MNIST data_dir (default: the checkpoint's)"
    )
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument(
        "--subset",
        type=int,
        default=16,
        help="images for the cost, robustness and sanity measurements",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compare"))
    parser.add_argument("--quick", action="store_true", help="a small run, < 1 minute")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.subset = 8, 4
    return args


def load(args: argparse.Namespace):
    """The trained model and the first ``args.images`` test images with boxes."""
    checkpoint = args.ckpt
    if checkpoint is None:
        checkpoint = Path(train_default(DEFAULT_RUN)["checkpoint"])
    module = ZFNetModule.load_from_checkpoint(
        checkpoint, weights_only=True, map_location="cpu"
    )
    model = module.model.to(args.device).eval()
    overrides = {} if args.data is None else {"data_dir": args.data}
    data = ClutteredFashionMNISTDataModule.from_checkpoint(checkpoint, **overrides)
    data.prepare_data()
    data.setup("test")
    items = [data.test_set[i] for i in range(args.images)]
    images, labels, boxes = (torch.stack([it[k] for it in items]) for k in range(3))
    background = torch.full_like(images, -data.mean / data.std)  # a black canvas
    return (
        model,
        checkpoint,
        images.to(args.device),
        labels.to(args.device),
        boxes,
        background,
    )


def setup_for(model) -> Setup:
    """ZFNet's last conv layer for Grad-CAM; an occluder of a third of the item."""
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    return Setup(convs[-1], model.classifier[-1], window=10, stride=3)


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    model, checkpoint, images, targets, boxes, background = load(args)
    blurred = gaussian_blur(images, kernel_size=[11, 11], sigma=[5.0, 5.0])
    setup = setup_for(model)
    k = args.subset
    rows, attributions = {}, {}
    for name, method in tqdm(METHODS.items(), desc="methods"):
        attribution = method.explain(model, images, targets, setup)  # also warms up
        attributions[name] = attribution
        row = {"kind": method.kind}
        row |= cost(
            method,
            model,
            images[:k],
            targets[:k],
            setup,
            repeats=1 if args.quick else 3,
        )
        row |= faithfulness(model, images, targets, attribution, background, blurred)
        row |= localisation(attribution, boxes)
        samples = 3 if args.quick else 8
        row |= robustness(
            method, model, images[:k], targets[:k], attribution[:k], setup, samples
        )
        row["sanity"] = sanity(
            method, model, images[:k], targets[:k], attribution[:k], setup_for
        )
        row["sanity_final"] = row["sanity"][-1]["spearman"]
        rows[name] = row
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == targets).float().mean().item()
    results = {
        "environment": environment(args.device),
        "config": {
            "model": f"ZFNet (width {model.classifier[-1].in_features / 4096:g}) from "
            f"{checkpoint}",
            "data": "Cluttered Fashion-MNIST test split",
            "images": len(images),
            "subset": k,
            "accuracy_on_images": accuracy,
            "batch": len(images),
            "cost_batch": k,
            "dtype": str(images.dtype).replace("torch.", ""),
            "seed": args.seed,
            "occluder": {"window": setup.window, "stride": setup.stride},
        },
        "methods": rows,
    }
    write(results, images, attributions, boxes, args.out)
    return results


def write(results: dict, images, attributions, boxes, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(report.markdown(results) + "\n")
    report.bar_charts(results, out / "metrics.png")
    report.sanity_plot(results, out / "randomisation.png")
    shown = min(6, len(images))
    report.attribution_grid(
        images[:shown].cpu(),
        report.spatial_maps(attributions, shown),
        boxes[:shown],
        out / "attributions.png",
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run(args)
    print(report.markdown(results))
    print(f"\nwritten to {args.out}")
    return results


if __name__ == "__main__":
    main()
