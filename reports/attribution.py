"""The report's sections on what the decisions rest on: correspondence of object parts
(Table 1), occlusion sensitivity (Fig. 7) and the attribution benchmark. Each section
writes its figures and returns its markdown."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from benchmarks import compare
from benchmarks.report import headline_table
from captum_deconvnet import (
    FeatureMapDeconvNet,
    OcclusionSensitivity,
    box_part_masks,
    correspondence,
    occlusion_figure,
    plot_correspondence,
    random_masks_like,
)

from .context import SEED, ReportContext, one_per_class

CORRESPONDENCE_IMAGES = 8  # images per class


def correspondence_section(ctx: ReportContext) -> str:
    layers = {"conv5": ctx.layers["conv5"], "fc7": ctx.layers["fc7"]}
    generator = torch.Generator().manual_seed(SEED)
    tables = []
    for label in sorted(set(ctx.labels.tolist())):
        chosen = (ctx.labels == label).nonzero().flatten()[:CORRESPONDENCE_IMAGES]
        if len(chosen) < 2:  # the score compares pairs
            continue
        masks = box_part_masks(ctx.boxes[chosen], tuple(ctx.images.shape[-2:]))
        masks["random"] = _random_within_boxes(
            masks["middle"], ctx.boxes[chosen], generator
        )
        table = correspondence(
            ctx.model,
            ctx.images[chosen],
            masks,
            list(layers.values()),
            fill=ctx.background,
        )
        tables.append(  # keyed by the paper's layer names
            {
                p: dict(zip(layers, row.values(), strict=True))
                for p, row in table.items()
            }
        )
    mean = {
        part: {
            name: sum(t[part][name] for t in tables) / len(tables) for name in layers
        }
        for part in tables[0]
    }
    path, link = ctx.figure("correspondence.png")
    plot_correspondence(mean, path)
    return f"""{_markdown_table(mean, layers)}

![correspondence scores]({link})

Does the network tie the same part of an object together across images? As in the
paper's Table 1: take {CORRESPONDENCE_IMAGES} test images of one class, blank out the
same part of the item in each (the top, middle or bottom third of its box), and compare
how each image's features change: the score is the mean Hamming distance between the
signs of those changes over pairs of images, averaged over the {len(tables)} classes.
Lower means the occlusion changes the features of different images alike, so the
network treats that part consistently. The control blanks a region of the same size at
a random place on each item (the "random" row; the paper's random regions were anywhere,
but its objects filled the images, while here most of an image is empty background,
whose occlusion changes nothing): parts scoring clearly below it are parts the network
has a consistent representation of. The paper found lower scores than random for eyes
and nose in layer 5, and less difference in layer 7, whose features stand more for the
class than for its parts."""


OCCLUSION_IMAGES = 3
OCCLUDER = (12, 2)  # side and step in pixels: under half an item, on a fine grid


def occlusion_section(ctx: ReportContext) -> str:
    chosen = one_per_class(ctx.labels, OCCLUSION_IMAGES)
    images, labels = ctx.images[chosen], ctx.labels[chosen]
    conv5 = ctx.layers["conv5"]
    window, stride = OCCLUDER
    maps = OcclusionSensitivity(ctx.model).sensitivity_maps(
        images, window, stride, target=labels, layer=conv5
    )
    projections = FeatureMapDeconvNet(ctx.model, conv5).attribute(images, maps.channel)
    links = []
    for i in range(len(images)):
        figure = occlusion_figure(images[i], maps, i, projections[i], ctx.classes)
        path, link = ctx.figure(f"occlusion_{i}.png")
        figure.savefig(path, dpi=110, bbox_inches="tight")
        links.append(f"![occlusion of image {i}]({link})")
    rows, cols = maps.probability.shape[1:]
    return f"""{chr(10).join(links)}

A grey square of {window}×{window} pixels (each image's mean value) slides over the
image in steps of {stride} pixels ({rows}×{cols} positions), as in the paper's Fig. 7,
and for each position the network is run on the occluded image. (a) the image, with the
square's size at its top left; (b) the total activation of the conv5 feature map that
is strongest on the unoccluded image, for the square at each position: dark where
hiding that region silences the feature; (c) that feature map's strongest activation
projected to pixels by the deconvnet, which shows what the feature looks at; (d) the
probability of the true class: low (blue) where the square hides what the network
needs; (e) the most probable class for each position. If the network uses the item
rather than the clutter around it, (d) drops over the item only, and (b) and (c) point
at the same part of it."""


BENCHMARK_IMAGES = (16, 4)  # images, and the subset for robustness and sanity


def benchmark_section(ctx: ReportContext) -> str:
    images, subset = BENCHMARK_IMAGES
    out = ctx.out / "benchmark"
    results = compare.run(
        compare.parse_args(
            ["--ckpt", str(ctx.checkpoint), "--images", str(images)]
            + ["--subset", str(subset), "--out", str(out), "--model", "zfnet"]
        )
    )
    return f"""{headline_table(results, "zfnet")}

![the metrics as bars](benchmark/metrics.png)

![attributions of a few images](benchmark/attributions.png)

Eight attribution methods and three controls on {images} test images of this network
(cost, robustness and sanity on the first {subset}), from `python -m benchmarks.compare`
(every number is in `benchmark/results.json`; the repository's `benchmarks/results/`
holds a run on 128 images). Cost is seconds per image and passes through the network;
faithfulness is RISE's deletion AUC (lower: removing the most relevant pixels first
quickly kills the class probability) and insertion AUC (higher); localisation is the
pointing game (is the map's maximum on the item's box) and the share of the map's mass
inside the box; robustness is Captum's max-sensitivity and infidelity (lower); the last
column is Adebayo et al.'s sanity check, the rank correlation between the maps of the
trained network and of one whose layers were all re-initialised (near 1: the map does
not depend on what the network learned). The controls (a random map, a centred
Gaussian, the image's edges) set the floor each number must beat."""


def _random_within_boxes(
    masks: Tensor, boxes: Tensor, generator: torch.Generator
) -> Tensor:
    """Each mask moved to a random place inside its image's box. Anywhere in the
    image it would mostly blank empty background, which changes no feature, and
    unchanged features count as agreement: the control would look consistent."""
    moved = torch.zeros_like(masks)
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        crop = masks[i : i + 1, y0:y1, x0:x1]
        moved[i, y0:y1, x0:x1] = random_masks_like(crop, generator)[0]
    return moved


def _markdown_table(
    table: Mapping[str, Mapping[str, float]], layers: Mapping[str, nn.Module]
) -> str:
    rows = [
        "| occluded region | " + " | ".join(layers) + " |",
        "|---|" + "---:|" * len(layers),
    ]
    for part, scores in table.items():
        region = "random place on the item" if part == "random" else f"{part} third"
        values = " | ".join(f"{scores[name]:.3f}" for name in layers)
        rows.append(f"| {region} | {values} |")
    return "\n".join(rows)
