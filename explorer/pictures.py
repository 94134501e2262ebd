"""Tensors to the PNG files of the site: pictures, heat maps and the panels of the
paper's Fig. 7, each its own file so a page lays them out (and scales them) in HTML.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from captum_deconvnet import SensitivityMaps, normalize_projection, upsample_grid

__all__ = ["coloured", "diverging", "occlusion_panels", "png"]


def png(picture: Tensor) -> bytes:
    """A picture ``(C, H, W)`` in ``[0, 1]`` (C 1 or 3) as PNG bytes."""
    # In NumPy: torch's pointwise ops on one small picture cost more in thread
    # start-up than in arithmetic, and a site has hundreds of thousands.
    array = picture.detach().float().cpu().numpy().transpose(1, 2, 0)
    pixels = np.rint(np.clip(array, 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(
        buffer, format="png"
    )
    return buffer.getvalue()


def coloured(values: Tensor, cmap: str, low: float, high: float) -> Tensor:
    """``(..., H, W)`` values as RGB pictures ``(..., 3, H, W)``, ``low`` to ``high``
    across the colour map."""
    unit = (values.float().cpu() - low) / max(high - low, 1e-12)
    rgb = matplotlib.colormaps[cmap](unit.clamp(0, 1).numpy())[..., :3]
    return torch.from_numpy(rgb).movedim(-1, -3).float()


def diverging(maps: Tensor) -> Tensor:
    """Attribution maps ``(N, H, W)`` as RGB ``(N, 3, H, W)``: each scaled by its
    largest magnitude, red positive, blue negative (as the benchmark's figure)."""
    scale = maps.flatten(1).abs().amax(1).clamp(min=1e-12)[:, None, None]
    return coloured(maps / scale, "bwr", -1.0, 1.0)


def occlusion_panels(
    maps: SensitivityMaps, index: int, projection: Tensor, size: tuple[int, int]
) -> tuple[dict[str, bytes], dict]:
    """Panels (b) to (e) of Fig. 7 for image ``index`` of ``maps`` at image
    ``size``, as PNGs by name, and what their captions need: the activation's and
    the probability's ranges and the colour of each most probable class."""

    def full(grid: Tensor) -> Tensor:
        return upsample_grid(grid[index].cpu(), size, maps.window, maps.stride)

    activation, probability = full(maps.activation), full(maps.probability)
    top = full(maps.top_class)
    classes = sorted(set(top.flatten().tolist()))
    palette = matplotlib.colormaps["tab10"]
    colours = torch.tensor([palette(i % 10)[:3] for i in range(len(classes))])
    codes = torch.searchsorted(torch.tensor(classes), top)
    ranges = {
        "activation": [float(activation.min()), float(activation.max())],
        "probability": [float(probability.min()), float(probability.max())],
    }
    files = {
        "activation": png(coloured(activation, "viridis", *ranges["activation"])),
        "projection": png(normalize_projection(projection[None])[0]),
        "probability": png(coloured(probability, "jet", *ranges["probability"])),
        "classes": png(colours[codes].permute(2, 0, 1)),
    }
    legend = [
        [k, "#" + "".join(f"{round(255 * c):02x}" for c in colours[i].tolist())]
        for i, k in enumerate(classes)
    ]
    return files, {**ranges, "classes": legend}
