"""The demo's report: what the trained ZFNet learned, shown with the paper's figures.

``write_report`` writes ``report.md`` and its PNG figures into ``figures/``. Each
section is a function ``(ReportContext) -> markdown`` that writes its own figures;
``SECTIONS`` lists them in order, so a new section is one function and one line.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.datasets import FashionMNIST

from captum_deconvnet import (
    FeatureMapDeconvNet,
    OcclusionSensitivity,
    box_part_masks,
    correspondence,
    invariance_curves,
    occlusion_figure,
    plot_correspondence,
    plot_invariance,
    project_top_activations,
    random_masks_like,
    save_atlas,
    save_filters,
    save_grid,
    top_activations,
)

from .data import ClutteredFashionMNISTDataModule
from .module import ZFNetModule

__all__ = ["SECTIONS", "ReportContext", "load_context", "write_report"]

SUBSET = 2000  # test images the figures are computed from: enough, and quick
SEED = 0


@dataclass
class ReportContext:
    """What every section works from.

    Attributes:
        model: the trained ZFNet, in eval mode, on the CPU.
        images, labels, boxes: a seeded subset of the test split, ``(N, 1, H, W)``,
            ``(N,)`` and the items' boxes ``(N, 4)`` (``x0, y0, x1, y1``).
        background: the input value of a black pixel (what occluders and
            transformations fill in).
        classes: the class names.
        hparams: the model's hyperparameters.
        test_size: images in the whole test split.
        checkpoint: the checkpoint the model came from.
        out: the report's folder; figures go to ``out / "figures"``.
        layers: the paper's layers by name (see :func:`zfnet_layers`).
    """

    model: nn.Module
    images: Tensor
    labels: Tensor
    boxes: Tensor
    background: float
    classes: list[str]
    hparams: dict
    test_size: int
    checkpoint: Path
    out: Path
    layers: dict[str, nn.Module] = field(init=False)

    def __post_init__(self) -> None:
        self.layers = zfnet_layers(self.model)

    def figure(self, name: str) -> tuple[Path, str]:
        """The PNG file of figure ``name`` and its link from the report."""
        folder = self.out / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name, f"figures/{name}"

    def name_of(self, module: nn.Module) -> str:
        """``module``'s qualified name in the model (``features.1``)."""
        return next(name for name, m in self.model.named_modules() if m is module)


def zfnet_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The paper's layers by their names in the paper: ``conv1`` ... ``conv5``,
    ``fc6``, ``fc7``, each the ReLU after its convolution or linear map."""
    layers = {}
    for prefix, stack, kind in (
        ("conv", model.features, nn.Conv2d),
        ("fc", model.classifier, nn.Linear),
    ):
        relus = [
            after
            for before, after in zip(stack, stack[1:], strict=False)
            if isinstance(before, kind) and isinstance(after, nn.ReLU)
        ]
        start = 1 if prefix == "conv" else 6
        layers.update({f"{prefix}{start + i}": m for i, m in enumerate(relus)})
    return layers


def load_context(
    checkpoint: str | Path, out: str | Path, data_dir: str | Path
) -> ReportContext:
    """The model of ``checkpoint`` and a seeded subset of its test split, with the
    data settings it was trained with (read from the checkpoint)."""
    checkpoint = Path(checkpoint)
    module = ZFNetModule.load_from_checkpoint(
        checkpoint, weights_only=True, map_location="cpu"
    )
    data = ClutteredFashionMNISTDataModule.from_checkpoint(
        checkpoint, data_dir=str(data_dir), num_workers=0
    )
    data.setup("test")
    order = torch.randperm(
        len(data.test_set), generator=torch.Generator().manual_seed(SEED)
    )
    items = [data.test_set[i] for i in order[:SUBSET].tolist()]
    images, labels, boxes = (torch.stack(column) for column in zip(*items, strict=True))
    return ReportContext(
        model=module.model.eval(),
        images=images,
        labels=labels,
        boxes=boxes,
        background=-data.mean / data.std,
        classes=list(FashionMNIST.classes),
        hparams=dict(module.hparams),
        test_size=len(data.test_set),
        checkpoint=checkpoint,
        out=Path(out),
    )


# --- sections: each writes its figures and returns its markdown ---------------------


def filters_section(ctx: ReportContext) -> str:
    conv1 = ctx.model.features[0]
    path, link = ctx.figure("filters.png")
    save_filters(conv1, path, min_side=56)  # 7x7 filters: large enough to read
    count, _, height, width = conv1.weight.shape
    return f"""![the first layer's filters]({link})

The {count} filters of the first layer, {height}×{width} pixels each, as in the
paper's Fig. 6. Each is a small template the layer slides over the image: mid-grey is a
zero weight, light pixels are positive and dark ones negative, so a filter with a light
bar beside a dark one responds to an edge at that orientation. Each filter is scaled on
its own, so a weak filter looks as strong as a strong one: one that shows only noise,
with no edge, bar or blob, has learned little (the paper found such dead filters in
Krizhevsky's network and cured them with a smaller first stride and filter)."""


ATLAS_CHANNELS = 12  # channels shown per layer


def atlas_section(ctx: ReportContext) -> str:
    convs = {ctx.name_of(m): name for name, m in ctx.layers.items() if "conv" in name}
    modules = [ctx.model.get_submodule(name) for name in convs]
    top = top_activations(ctx.model, modules, ctx.images, k=9, batch_size=250)
    chosen = {name: _some_channels(top.entries(name).values) for name in convs}
    # Only the channels shown are projected: most of the cost otherwise.
    atlases = project_top_activations(
        ctx.model, top, ctx.images, batch_size=128, channels=chosen
    )
    parts = [
        f"""For each convolutional layer, {ATLAS_CHANNELS} of its channels (feature
maps, drawn at random among those that respond at all) and for each channel the 9
strongest activations over {len(ctx.images)} test images, as in the paper's Fig. 2.
Each channel is a block: on the left the 9 activations, each projected back to pixel
space on its own by the deconvnet (unpooling with the forward pass's switches,
rectifying, filtering with the transposed weights), on the right the 9 image patches
under them. Read a block as "this channel fires on ...": the patches say where, the
projections say which pixels made it fire (mid-grey is no contribution). Patches grow
with depth as the receptive field does, and so, in the paper, does what a channel
stands for: edges and blobs in layer 1, textures and corners in layer 2, object parts
and whole objects above, with more variety between the 9 patches of a channel that
still share what it detects. Look here for edges and stripes low down and for parts of
garments (collars, soles, straps, trouser legs, outlines) higher up."""
    ]
    for name, short in convs.items():
        atlas = atlases[name]
        path, link = ctx.figure(f"atlas_{short}.png")
        save_atlas(atlas, path, channels=chosen[name], per_row=4)
        silent = int((atlas.values[:, 0] <= 0).sum())
        size = "×".join(map(str, atlas.field.size))
        if atlas.field.size[0] >= ctx.images.shape[-2]:
            size += " pixels, more than the image: the patches are whole images"
        else:
            size += " pixels"
        parts.append(
            f"### {short} (`{name}`)\n\nReceptive field {size}; {silent} of "
            f"{len(atlas.values)} channels never fire on these images."
            f"\n\n![atlas of {short}]({link})"
        )
    return "\n\n".join(parts)


def _some_channels(values: Tensor) -> list[int]:
    """``ATLAS_CHANNELS`` channels at random (seeded), among those whose strongest
    activation is positive if there are enough."""
    live = (values[:, 0] > 0).nonzero().flatten()
    pool = live if len(live) >= ATLAS_CHANNELS else torch.arange(len(values))
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(SEED))
    return sorted(pool[order[:ATLAS_CHANNELS]].tolist())


def evolution_section(ctx: ReportContext) -> str:
    # FeatureEvolution writes into the training's log directory, above checkpoints/.
    folder = ctx.checkpoint.parent.parent / "feature_evolution"
    short = {f"model.{ctx.name_of(m)}": name for name, m in ctx.layers.items()}
    layers = sorted(  # in the network's order, layers the report cannot name last
        (p.name.removesuffix("_evolution.png") for p in folder.glob("*_evolution.png")),
        key=lambda layer: list(short).index(layer) if layer in short else len(short),
    )
    if not layers:
        return f"""No pictures: this checkpoint was trained without the
`FeatureEvolution` callback (nothing in `{folder}`). The default config records it;
train again into an empty folder to get this section."""
    epochs = sorted(
        {int(m.group(1)) for p in folder.iterdir() if (m := _EPOCH.search(p.name))}
    )
    after = "epoch" if len(epochs) == 1 else "epochs"
    parts = [
        f"""Each channel's strongest activation over a fixed set of validation images
(64 by default), projected to pixel space after {after}
{", ".join(map(str, epochs))} of training: a row per channel, a column per epoch (left
to right), as in the paper's Fig. 4. A row that stops changing is a feature that has
settled; a sudden change means another image became the strongest. The paper saw the
lower layers settle within a few epochs and the upper ones only after many; here the
training is short, so the upper layers may still be changing at the end."""
    ]
    for layer in layers:
        name = short.get(layer, layer)
        path, link = ctx.figure(f"evolution_{name}.png")
        shutil.copyfile(folder / f"{layer}_evolution.png", path)
        parts.append(f"### {name} (`{layer}`)\n\n![evolution of {name}]({link})")
    return "\n\n".join(parts)


_EPOCH = re.compile(r"_epoch(\d+)\.png$")


def invariance_section(ctx: ReportContext) -> str:
    chosen = _one_per_class(ctx.labels, 5)
    images, labels = ctx.images[chosen], ctx.labels[chosen]
    layers = [ctx.layers["conv1"], ctx.layers["fc7"]]
    curves = invariance_curves(ctx.model, images, labels, layers, fill=ctx.background)
    strip, strip_link = ctx.figure("invariance_images.png")
    low, high = images.amin(), images.amax()
    save_grid((images - low) / (high - low), strip, nrow=len(images), normalize=False)
    path, link = ctx.figure("invariance.png")
    plot_invariance(curves, path)
    names = ", ".join(f"image {i}: {ctx.classes[int(y)]}" for i, y in enumerate(labels))
    conv1, fc7 = (ctx.name_of(m) for m in layers)
    return f"""![the images]({strip_link})

![invariance curves]({link})

Five test images ({names}) are moved down (first row, in pixels; negative is up),
scaled about their centre (second row) and rotated (third row, in degrees), as in the
paper's Fig. 5. The first two columns show how far the features move: the Euclidean
distance between the features of the transformed and of the original image, at layer 1
(conv1, `{conv1}`) and layer 7 (fc7, `{fc7}`). The last column is the probability the
network gives the true class. Distances of different layers have different scales;
compare their shapes. In the paper, the first layer's features change sharply with the
smallest transformation while layer 7's change more gradually, and the prediction
survives translation and scaling better than rotation, except for objects that look
alike turned (here bags, say, after a half turn)."""


def _one_per_class(labels: Tensor, count: int) -> list[int]:
    """Indices of the first images of the first ``count`` classes met."""
    first: dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        first.setdefault(label, i)
    return list(first.values())[:count]


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
    chosen = _one_per_class(ctx.labels, OCCLUSION_IMAGES)
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


BENCHMARK_IMAGES = (32, 8)  # images, and the subset for robustness and sanity


def benchmark_section(ctx: ReportContext) -> str:
    # Imported here: benchmarks.compare imports lightning_zfnet.demo, which imports us.
    from benchmarks import compare
    from benchmarks.report import markdown

    images, subset = BENCHMARK_IMAGES
    out = ctx.out / "benchmark"
    results = compare.run(
        compare.parse_args(
            ["--ckpt", str(ctx.checkpoint), "--images", str(images)]
            + ["--subset", str(subset), "--out", str(out)]
        )
    )
    table = [line for line in markdown(results).splitlines() if line.startswith("|")]
    return f"""{chr(10).join(table)}

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


Section = Callable[[ReportContext], str]

# The report's sections in order: (title, function). A new section, for example
# occlusion sensitivity (Fig. 7) or an attribution benchmark table, is one function
# (ReportContext) -> markdown and one line here; its time is measured and listed.
SECTIONS: tuple[tuple[str, Section], ...] = (
    ("First-layer filters (Fig. 6)", filters_section),
    ("Feature atlas (Fig. 2)", atlas_section),
    ("Feature evolution during training (Fig. 4)", evolution_section),
    ("Invariance (Fig. 5)", invariance_section),
    ("Correspondence of object parts (Table 1)", correspondence_section),
    ("Occlusion sensitivity (Fig. 7)", occlusion_section),
    ("Attribution methods side by side", benchmark_section),
)


def write_report(
    checkpoint: str | Path,
    out: str | Path,
    data_dir: str | Path,
    timings: Mapping[str, float],
    metrics: Mapping[str, float],
) -> Path:
    """Write ``out/report.md`` and its figures in ``out/figures`` for the model in
    ``checkpoint``; returns the report's path.

    Args:
        checkpoint: a :class:`~lightning_zfnet.ZFNetModule` checkpoint trained on
            Cluttered Fashion-MNIST.
        out: the report's folder.
        data_dir: where the data module finds Fashion-MNIST.
        timings: seconds each earlier step took (``train_s``, ``test_s``).
        metrics: the test metrics (``test/top1``, ``test/top5``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = {_STEPS.get(key, key): seconds for key, seconds in timings.items()}
    start = time.perf_counter()
    ctx = load_context(checkpoint, out, data_dir)
    steps[f"loading the model and {len(ctx.images)} test images"] = (
        time.perf_counter() - start
    )
    sections = []
    for title, section in SECTIONS:
        start = time.perf_counter()
        sections.append(f"## {title}\n\n{section(ctx)}\n")
        steps[title] = time.perf_counter() - start
    path = out / "report.md"
    path.write_text("\n".join([_header(ctx, metrics, steps), *sections]))
    return path


_STEPS = {"train_s": "training", "test_s": "testing"}


def _header(
    ctx: ReportContext, metrics: Mapping[str, float], steps: Mapping[str, float]
) -> str:
    hp = ctx.hparams
    side = hp["input_size"]
    accuracy = ", ".join(
        f"{name} **{100 * metrics[key]:.2f} %**"
        for name, key in (("top-1", "test/top1"), ("top-5", "test/top5"))
        if key in metrics
    )
    rows = [f"| {step} | {seconds:.1f} |" for step, seconds in steps.items()]
    if "training" not in steps:
        rows.insert(0, "| training | not run: the checkpoint was reused |")
    return f"""# What the demo's ZFNet learned

A ZFNet (Zeiler & Fergus 2014, Fig. 3) at width {hp["width"]}, its first layer at
stride {hp.get("conv1_stride", 2)}, was trained to
classify {side}×{side} Cluttered Fashion-MNIST images: a Fashion-MNIST item at a random
place among fragments of other items, one of {hp["num_classes"]} classes. Each
section below reproduces one of the paper's figures on this network and says how to
read it. The figures are computed from {len(ctx.images)} test images drawn at random
(seed {SEED}).

- checkpoint: `{ctx.checkpoint}`
- test accuracy on the {ctx.test_size} test images: {accuracy or "not measured"}
  (chance: {100 / hp["num_classes"]:.0f} %)

| step | seconds |
|---|---:|
{chr(10).join(rows)}
"""
