"""The attribution methods the benchmark compares, and the control maps beside them.

Each entry turns ``(model, images, targets)`` into attributions of the images' shape.
The registry refuses duplicate names; the table's row order is registration order.
Each method is called as its source defines it: Grad-CAM rectifies its weighted sum
(Selvaraju et al. 2017, Eq. 2; Captum's ``LayerGradCam`` leaves the ReLU out unless
``relu_attributions=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Occlusion,
    Saliency,
)
from torch import Tensor, nn

from captum_deconvnet import DeconvNet, OcclusionSensitivity

__all__ = ["METHODS", "Method", "Setup"]


@dataclass(frozen=True)
class Setup:
    """What some methods need to know about the model and the images. Layers are
    named (``model.get_submodule``), so a copy of the model finds its own."""

    gradcam_layer: str  # the last conv layer
    output_layer: str  # where the passes are counted
    window: int  # occluder side, pixels
    stride: int  # occluder step, pixels
    ig_steps: int = 50
    ig_batch: int = 256  # integrated gradients' internal batch (memory)


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "ours", "captum" or "control"
    explain: Callable[[nn.Module, Tensor, Tensor, Setup], Tensor]
    multiplies_by_inputs: bool = False  # how captum.metrics.infidelity must perturb
    # A method documented and tested to give the same maps as an earlier one: the
    # benchmark times it, checks the maps match, and scores it only if they do not.
    same_as: str | None = None


METHODS: dict[str, Method] = {}


def _register(
    name: str, kind: str, multiplies_by_inputs: bool = False, same_as: str | None = None
):
    def add(explain: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        if same_as is not None and same_as not in METHODS:
            raise ValueError(f"{name!r} is the same as {same_as!r}, not registered")
        METHODS[name] = Method(name, kind, explain, multiplies_by_inputs, same_as)
        return explain

    return add


def _occlusion_args(images: Tensor, setup: Setup) -> dict:
    c = images.shape[1]
    return {
        "sliding_window_shapes": (c, setup.window, setup.window),
        "strides": (c, setup.stride, setup.stride),
        "baselines": 0.0,  # the data's mean: inputs are normalised
    }


@_register("DeconvNet", "ours")
def _deconvnet(model, images, targets, setup):
    return DeconvNet(model).attribute(images, target=targets)


@_register("OcclusionSensitivity", "ours", multiplies_by_inputs=True)
def _occlusion_sensitivity(model, images, targets, setup):
    explainer = OcclusionSensitivity(model)
    return explainer.attribute(images, target=targets, **_occlusion_args(images, setup))


@_register("Deconvolution", "captum")
def _deconvolution(model, images, targets, setup):
    return Deconvolution(model).attribute(images, target=targets)


@_register("Occlusion", "captum", True, same_as="OcclusionSensitivity")
def _occlusion(model, images, targets, setup):
    return Occlusion(model).attribute(
        images,
        target=targets,
        perturbations_per_eval=16,  # its fastest on CPU (see occlusion_speed)
        **_occlusion_args(images, setup),
    )


@_register("LayerGradCam", "captum")
def _gradcam(model, images, targets, setup):
    layer = model.get_submodule(setup.gradcam_layer)
    cam = LayerGradCam(model, layer).attribute(
        images, target=targets, relu_attributions=True
    )
    cam = LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), "bilinear")
    return cam.expand_as(images).contiguous()


@_register("IntegratedGradients", "captum", multiplies_by_inputs=True)
def _integrated_gradients(model, images, targets, setup):
    return IntegratedGradients(model).attribute(
        images,
        target=targets,
        n_steps=setup.ig_steps,
        internal_batch_size=setup.ig_batch,
    )


@_register("GuidedBackprop", "captum")
def _guided_backprop(model, images, targets, setup):
    return GuidedBackprop(model).attribute(images, target=targets)


@_register("Saliency", "captum")
def _saliency(model, images, targets, setup):
    return Saliency(model).attribute(images, target=targets)


@_register("random", "control")
def _random(model, images, targets, setup):
    generator = torch.Generator().manual_seed(0)
    return torch.rand(images.shape, generator=generator).to(images)


@_register("centre Gaussian", "control")
def _centre(model, images, targets, setup):
    h, w = images.shape[-2:]
    ys = torch.arange(h, dtype=images.dtype, device=images.device) - (h - 1) / 2
    xs = torch.arange(w, dtype=images.dtype, device=images.device) - (w - 1) / 2
    sigma = min(h, w) / 4
    bump = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))
    return bump.expand_as(images).contiguous()


@_register("Sobel edges", "control")
def _sobel(model, images, targets, setup):
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([gx, gx.T])[:, None].to(images)
    grey = images.mean(dim=1, keepdim=True)
    edges = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return edges.pow(2).sum(dim=1, keepdim=True).sqrt().expand_as(images).contiguous()
