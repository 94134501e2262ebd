"""The report's sections on what the features are: first-layer filters (Fig. 6), the
feature atlas (Fig. 2), their evolution in training (Fig. 4) and invariance (Fig. 5).
Each section writes its figures and returns its markdown."""

from __future__ import annotations

import re
import shutil

import torch
from torch import Tensor

from captum_deconvnet import (
    invariance_curves,
    plot_invariance,
    project_top_activations,
    save_atlas,
    save_filters,
    save_grid,
    top_activations,
)

from .context import SEED, ReportContext, one_per_class


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
    top = top_activations(
        ctx.model, modules, ctx.images, k=9, batch_size=250, distinct_images=True
    )
    chosen = {name: _some_channels(top.entries(name).values) for name in convs}
    # Only the channels shown are projected: most of the cost otherwise.
    atlases = project_top_activations(
        ctx.model, top, ctx.images, batch_size=128, channels=chosen
    )
    parts = [
        f"""For each convolutional layer, {ATLAS_CHANNELS} of its channels (feature
maps, drawn at random among those that respond at all) and for each channel its 9
strongest activations over {len(ctx.images)} test images, one per image (9 images, each
at the position where the channel responds most), as in the paper's Fig. 2.
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
    chosen = one_per_class(ctx.labels, 5)
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
