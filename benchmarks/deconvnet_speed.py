"""DeconvNet's cost against Captum's, on ZFNet at 224.

    python -m benchmarks.deconvnet_speed [--quick] [--device cuda] [--out DIR]

1. ``DeconvNet.attribute`` against ``captum.attr.Deconvolution``, batch 8.
2. ``FeatureMapDeconvNet`` on 64 (image, channel) pairs in one call against the 64
   ``NeuronDeconvolution`` calls that give the same projections (each pair's strongest
   activation; equal up to that activation's value, which ours carries).
"""

from __future__ import annotations

import torch
from captum.attr import Deconvolution, NeuronDeconvolution

from captum_deconvnet import DeconvNet, FeatureMapDeconvNet
from lightning_zfnet import zfnet

from .timing import environment, median_seconds, parse_speed_args, write_results


def attribute_speed(model, size: int, batch: int, device: str, repeats: int) -> dict:
    x = torch.randn(batch, 3, size, size, device=device)
    ours = median_seconds(
        lambda: DeconvNet(model).attribute(x, target=0), repeats, 1, device
    )
    theirs = median_seconds(
        lambda: Deconvolution(model).attribute(x, target=0), repeats, 1, device
    )
    return {"batch": batch, "ours_s": ours, "captum_s": theirs, "ratio": ours / theirs}


def feature_map_speed(model, index: int, size: int, pairs: int, device: str) -> dict:
    """Projections of the strongest activation of ``pairs`` feature maps of
    ``model.features[index]``: one FeatureMapDeconvNet call against one
    NeuronDeconvolution call per pair."""
    torch.manual_seed(0)
    images = torch.randn(pairs // 4, 3, size, size, device=device)
    x = images.repeat_interleave(4, dim=0)  # every image with 4 channels
    channels = torch.arange(pairs, device=device) % 8
    # Same projections? Checked in float64: in float32 the pools' argmax can flip on
    # near-ties between a batch of 64 and a batch of 1.
    ours, theirs, values = _feature_map_calls(
        model.double(), index, x.double(), channels
    )
    expected = theirs() * values.view(-1, 1, 1, 1)
    error = (ours() - expected).abs().max().item() / expected.abs().max().item()
    ours, theirs, _ = _feature_map_calls(model.float(), index, x, channels)
    ours_s = median_seconds(ours, 3, 1, device)
    theirs_s = median_seconds(theirs, 3, 1, device)
    return {
        "pairs": pairs,
        "ours_s": ours_s,
        "captum_s": theirs_s,
        "speedup": theirs_s / ours_s,
        "max_relative_difference": error,
    }


def _feature_map_calls(model, index: int, x: torch.Tensor, channels: torch.Tensor):
    layer = model.features[index]
    with torch.no_grad():
        activation = model.features[: index + 1](x)
    pairs, width = len(x), activation.shape[-1]
    maps = activation[torch.arange(pairs), channels].flatten(1)
    values, strongest = maps.max(dim=1)

    def ours():
        return FeatureMapDeconvNet(model, layer, "gradient").attribute(x, channels)

    def theirs():
        explainer = NeuronDeconvolution(model, layer)
        neurons = [
            (int(c), int(p) // width, int(p) % width)
            for c, p in zip(channels, strongest, strict=True)
        ]
        return torch.cat(
            [explainer.attribute(x[i : i + 1], n) for i, n in enumerate(neurons)]
        )

    return ours, theirs, values


def main(argv: list[str] | None = None) -> dict:
    args = parse_speed_args(
        argv, __doc__.split("\n\n")[0], quick_help="64x64 inputs, few pairs"
    )
    size, pairs, repeats = (64, 8, 2) if args.quick else (224, 64, 5)
    torch.manual_seed(0)
    model = zfnet(num_classes=1000, input_size=size).to(args.device).eval()
    torch.nn.init.normal_(model.classifier[-1].weight, std=0.01)
    results = {
        "environment": environment(args.device),
        "model": f"ZFNet, 1000 classes, {size}x{size}",
        "attribute": attribute_speed(model, size, 8, args.device, repeats),
        "feature_maps": feature_map_speed(
            model, 13, size, pairs, args.device
        ),  # conv5 relu
    }
    a, f = results["attribute"], results["feature_maps"]
    table = "\n".join(
        [
            f"DeconvNet speed, {results['model']}, {args.device}",
            "",
            "| measurement | ours (s) | Captum (s) | ratio |",
            "|---|---|---|---|",
            f"| attribute, batch {a['batch']} | {a['ours_s']:.3f} "
            f"| {a['captum_s']:.3f} | {a['ratio']:.2f}x the time of Deconvolution |",
            f"| {f['pairs']} conv5 feature maps | {f['ours_s']:.3f} "
            f"| {f['captum_s']:.3f} "
            f"| {f['speedup']:.2f}x faster than NeuronDeconvolution calls |",
        ]
    )
    write_results(args.out, "deconvnet_speed", args, results, table)
    return results


if __name__ == "__main__":
    main()
