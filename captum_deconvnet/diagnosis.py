"""Measures behind the paper's architecture diagnosis (Sec. 4.1, Fig. 6).

Zeiler and Fergus saw three things in Krizhevsky et al.'s first two layers: filters
that mix extremely high and low frequencies with little in between, dead filters,
and aliasing in layer 2's maps from the large stride of layer 1. Each has a measure
here that works on any CNN:

- :func:`high_frequency_fraction` and :func:`radial_spectrum`: where a filter's
  energy lies in frequency, in cycles per input pixel (for a first layer);
- :func:`firing_rates`: how often each map is positive over a set of images; a map
  that never is (rate 0) is dead;
- :func:`shifted_activity` and :func:`shift_variation`: how much a layer's total
  activity changes as the input moves by less than the layer's stride. The sum of
  a map's samples does not depend on such a shift when the map is sampled above
  its Nyquist rate; what changes it is energy at multiples of the sampling
  frequency, that is aliasing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._inputs import check_images, positive_int
from .layers import layer_outputs
from .model_state import eval_mode

__all__ = [
    "filter_spectrum",
    "firing_rates",
    "high_frequency_fraction",
    "radial_spectrum",
    "shift_variation",
    "shifted_activity",
]


def filter_spectrum(weight: Tensor, size: int = 64) -> tuple[Tensor, Tensor]:
    """Each filter's energy spectrum, the squared magnitude of its frequency
    response, summed over input channels and normalised to sum 1.

    The filters are zero-padded to ``size`` x ``size`` before the FFT, so filters
    of different sizes are sampled on the same frequencies (and the grid
    approximates the continuous response: the finer, the closer).

    Args:
        weight: ``(out_channels, in_channels, kh, kw)`` convolution weights.
        size: side of the frequency grid, at least the kernel's.

    Returns:
        ``(radius, energy)``: ``(size, size)`` radial frequency of each grid point
        in cycles per pixel of the layer's input (0 to 0.707), and
        ``(out_channels, size, size)`` each filter's share of its energy there.

    Raises:
        TypeError: if ``weight`` is not a tensor (a layer, say, not its weight).
        ValueError: if ``weight`` is not 4-D or ``size`` is smaller than the kernel.
    """
    if not isinstance(weight, Tensor):
        raise TypeError(
            "weight must be a convolution's weight tensor (out, in, kh, kw), such "
            f"as layer.weight, got {type(weight).__name__}"
        )
    if weight.ndim != 4:
        raise ValueError(f"weight must be (out, in, kh, kw), got {tuple(weight.shape)}")
    if size < max(weight.shape[-2:]):
        raise ValueError(f"size {size} is smaller than the kernel {weight.shape[-2:]}")
    response = torch.fft.fft2(weight.detach().double().cpu(), s=(size, size))
    energy = response.abs().pow(2).sum(dim=1)
    energy = energy / energy.flatten(1).sum(dim=1).clamp(min=1e-300)[:, None, None]
    frequency = torch.fft.fftfreq(size, dtype=torch.float64)
    radius = torch.sqrt(frequency[:, None] ** 2 + frequency[None, :] ** 2)
    return radius, energy


def high_frequency_fraction(
    weight: Tensor, cutoff: float = 0.25, size: int = 64
) -> Tensor:
    """The share of each filter's energy at radial frequencies of ``cutoff`` cycles
    per pixel or more (see :func:`filter_spectrum`).

    With ``cutoff = 1 / (2 * stride)``, the Nyquist frequency of the layer's output,
    this is the energy that aliases when the output is sampled at the layer's
    stride.

    Args:
        weight: ``(out_channels, in_channels, kh, kw)``.
        cutoff: in cycles per pixel, in ``(0, 0.5]``.
        size: side of the frequency grid.

    Returns:
        ``(out_channels,)`` float64 in ``[0, 1]``.

    Raises:
        TypeError, ValueError: as :func:`filter_spectrum`; ValueError for a
            ``cutoff`` outside ``(0, 0.5]``.
    """
    if not 0 < cutoff <= 0.5:
        raise ValueError(f"cutoff must be in (0, 0.5] cycles per pixel, got {cutoff}")
    radius, energy = filter_spectrum(weight, size)
    return (energy * (radius >= cutoff)).flatten(1).sum(dim=1)


def radial_spectrum(
    weight: Tensor, bins: int = 8, size: int = 64, relative: bool = False
) -> tuple[Tensor, Tensor]:
    """Each filter's energy in ``bins`` rings of equal width from 0 to 0.5 cycles
    per pixel (the corners beyond 0.5 join the last ring).

    Args:
        weight: ``(out_channels, in_channels, kh, kw)``.
        bins: number of rings.
        size: side of the frequency grid.
        relative: divide each ring's share by the share a flat spectrum (white
            noise, an impulse) puts there, so that outer rings, which hold more of
            the grid, do not look stronger for that alone: 1 is flat, more than 1
            stronger than flat.

    Returns:
        ``(edges, energy)``: ``(bins + 1,)`` ring edges and ``(out_channels, bins)``
        each filter's share of its energy per ring (or its ratio to a flat one's).

    Raises:
        TypeError, ValueError: as :func:`filter_spectrum`; ValueError for ``bins``
            below 1.
    """
    bins = positive_int("bins", bins)
    radius, energy = filter_spectrum(weight, size)
    edges = torch.linspace(0, 0.5, bins + 1, dtype=torch.float64)
    ring = torch.bucketize(radius, edges[1:-1], right=True).flatten()
    shares = energy.new_zeros(energy.shape[0], bins)
    shares.index_add_(1, ring, energy.flatten(1))
    if relative:
        flat = torch.bincount(ring, minlength=bins).double() / ring.numel()
        shares = shares / flat
    return edges, shares


@torch.no_grad()
def firing_rates(
    model: nn.Module, layer: nn.Module, images: Tensor, batch_size: int = 256
) -> Tensor:
    """How often each channel of ``layer``'s output is positive over ``images``.

    A dead feature map (the paper's Fig. 6(b)) has rate 0: it is zero at every
    position of every image, so nothing above it ever sees it and no gradient
    reaches its filter. The model runs in eval mode and returns to its mode.

    Args:
        model: the network.
        layer: a submodule whose output is ``(N, C, H, W)``, such as a ReLU.
        images: ``(N, C_in, H_in, W_in)``.
        batch_size: images per forward pass.

    Returns:
        ``(C,)`` the fraction of positions, over all images, where the map is > 0.

    Raises:
        TypeError: if ``images`` is not a floating-point tensor.
        ValueError: for no images, a ``batch_size`` that is not an int of 1 or more,
            or a layer whose output is not ``(N, C, H, W)`` (a linear layer's, say).
    """
    batch_size = positive_int("batch_size", batch_size)  # a numpy int too
    if len(check_images(images, "images")) == 0:
        raise ValueError("images is empty: pass a non-empty (N, C, H, W) batch")
    positive, total = None, 0
    with eval_mode(model):
        for batch in images.split(batch_size):
            (maps,), _ = layer_outputs(model, [layer], batch)
            _check_maps(maps, layer)
            counts = (maps > 0).sum(dim=(0, 2, 3)).double()
            positive = counts if positive is None else positive + counts
            total += maps.shape[0] * maps.shape[2] * maps.shape[3]
    return positive / total


def _check_maps(maps: Tensor, layer: nn.Module) -> None:
    if maps.ndim != 4:
        raise ValueError(
            f"the layer's output must be (N, C, H, W) feature maps, got shape "
            f"{tuple(maps.shape)} from {type(layer).__name__}: pick a convolutional "
            "layer or its ReLU"
        )


@torch.no_grad()
def shifted_activity(
    model: nn.Module,
    layer: nn.Module,
    images: Tensor,
    shifts: Sequence[tuple[int, int]],
    pad: int,
    fill: float = 0.0,
) -> Tensor:
    """The total activity of each of ``layer``'s maps as the input moves.

    Each image is padded with ``fill`` by ``pad`` pixels on every side and moved by
    each ``(down, right)`` of ``shifts`` within that margin. Make ``pad`` at least
    the largest shift plus the layer's receptive field, so that no position sees
    both the image and the zero padding at the canvas's border. The model runs in
    eval mode and returns to its mode.

    Args:
        model: the network (convolutional up to ``layer``: the padded images are
            larger than its usual input).
        layer: a submodule whose output is ``(N, C, H, W)``.
        images: ``(N, C_in, H, W)``.
        shifts: ``(down, right)`` pixel offsets, each in ``[-pad, pad]``.
        pad: margin added on every side, in pixels.
        fill: value of the margin (the images' background).

    Returns:
        ``(len(shifts), N, C)`` float64: the sum of each map per shift.

    Raises:
        TypeError: if ``images`` is not a floating-point tensor.
        ValueError: for images not ``(N, C, H, W)``, an empty ``shifts``, a shift
            beyond ``pad``, or a layer whose output is not ``(N, C, H, W)``.
    """
    check_images(images, "images")
    if not shifts or any(max(abs(dy), abs(dx)) > pad for dy, dx in shifts):
        raise ValueError(f"shifts must be non-empty and within pad={pad}: {shifts}")
    canvas = F.pad(images, (pad,) * 4, value=fill)
    sums = []
    with eval_mode(model):
        for dy, dx in shifts:
            moved = torch.roll(canvas, shifts=(dy, dx), dims=(-2, -1))
            (maps,), _ = layer_outputs(model, [layer], moved)
            _check_maps(maps, layer)
            sums.append(maps.double().sum(dim=(2, 3)))
    return torch.stack(sums)


def shift_variation(activity: Tensor) -> Tensor:
    """How much maps' total activity changes with the shift, relative to its size.

    For shifts smaller than the layer's stride (its jump, in input pixels), an
    alias-free map keeps its sum, so this measures aliasing:

        sum over images and channels of the std over shifts of the activity
        / sum over images and channels of its mean over shifts

    0 when no sum changes; 1 for maps whose activity comes and goes with the shift
    (for instance a 2-pixel grating sampled every 2 pixels, at shifts 0 and 1).

    Args:
        activity: ``(shifts, ...)`` non-negative sums of maps (after a ReLU), such
            as :func:`shifted_activity` returns.

    Returns:
        A scalar tensor.

    Raises:
        TypeError: if ``activity`` is not a tensor.
        ValueError: if the activity is zero at every shift.
    """
    if not isinstance(activity, Tensor):
        raise TypeError(
            f"activity must be a tensor (shifts, ...), as shifted_activity returns, "
            f"got {type(activity).__name__}"
        )
    total = activity.mean(dim=0).sum()
    if total <= 0:
        raise ValueError("the maps are zero at every shift: nothing to compare")
    return activity.std(dim=0, correction=0).sum() / total
