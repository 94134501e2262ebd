"""The occluded copies of an input, run through the model chunk by chunk: as full
forward passes, or incrementally where the model allows it (see ``_incremental``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ._incremental import IncrementalForward, channel_sums
from ._occlusion_args import Region
from .layers import layer_tensor

__all__ = ["OcclusionScan"]


class OcclusionScan:
    """The occluded copies of one input, position after position, in chunks.

    Iterating yields ``(regions, outputs, watched)``: the chunk's occluder regions,
    the model's outputs for them (position-major: copy ``p * N + n`` is image ``n``
    under region ``p``) and the watched layer's per-channel sums (or ``None``).
    Copies run incrementally when ``incremental`` is on and the model is an
    ``nn.Module`` taking one batch of images alone; otherwise as full passes.
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        tensors: tuple[Tensor, ...],
        index: int,
        regions: list[Region],
        fill: Tensor,
        extra: tuple,
        positions: int,
        watch: nn.Module | None = None,
        incremental: bool = True,
    ) -> None:
        self.forward_func = forward_func
        self.plan = None
        if (
            incremental
            and isinstance(forward_func, nn.Module)
            and len(tensors) == 1
            and tensors[0].ndim == 4
            and not extra
        ):
            self.plan = IncrementalForward.plan(forward_func, tensors[0], watch)
        self.tensors = tensors
        self.index = index
        self.regions = regions
        self.fill = torch.broadcast_to(fill, tensors[index].shape)
        self.extra = extra
        self.positions = positions
        self.watch = watch

    def unoccluded_output(self, with_watched: bool = False):
        if self.plan is not None and not with_watched:
            return self.plan.output  # the plan ran it already
        with self._watching() as sums:
            output = self.forward_func(*self.tensors, *self.extra)
        return (output, sums[0] if sums else None) if with_watched else output

    def __iter__(self) -> Iterator[tuple[list[Region], Tensor, Tensor | None]]:
        for start in range(0, len(self.regions), self.positions):
            chunk = self.regions[start : start + self.positions]
            if self.plan is not None:
                outputs, watched = self._incremental(chunk)
            else:
                with self._watching() as sums:
                    outputs = self.forward_func(
                        *self._copies(chunk), *self._extra(chunk)
                    )
                watched = sums[0] if sums else None
            yield chunk, outputs, watched

    def _copies(self, chunk: list[Region]) -> tuple[Tensor, ...]:
        """Every input repeated once per region, the occluded one filled there."""
        repeats = len(chunk)
        copies = [t.repeat(repeats, *[1] * (t.ndim - 1)) for t in self.tensors]
        n = self.tensors[0].shape[0]
        occluded = copies[self.index]
        for p, region in enumerate(chunk):
            where = (slice(None), *region)
            occluded[p * n : (p + 1) * n][where] = self.fill[where]
        return tuple(copies)

    def _extra(self, chunk: list[Region]) -> tuple:
        return tuple(
            torch.cat([a] * len(chunk)) if isinstance(a, Tensor) and a.ndim else a
            for a in self.extra
        )

    def _incremental(self, chunk: list[Region]) -> tuple[Tensor, Tensor | None]:
        """The copies as boxes of a fixed size (the window's, moved inside the image
        where the last positions are clipped) for the incremental forward."""
        images = self.tensors[0]
        n, _, height, width = images.shape
        box = [max(r[d].stop - r[d].start for r in chunk) for d in (1, 2)]
        corners, patches = [], []
        for region in chunk:
            y0 = min(region[1].start, height - box[0])
            x0 = min(region[2].start, width - box[1])
            patch = images[:, :, y0 : y0 + box[0], x0 : x0 + box[1]].clone()
            inside = (
                region[0],
                slice(region[1].start - y0, region[1].stop - y0),
                slice(region[2].start - x0, region[2].stop - x0),
            )
            patch[(slice(None), *inside)] = self.fill[(slice(None), *region)]
            patches.append(patch)
            corners += [(y0, x0)] * n
        index = torch.arange(n).repeat(len(chunk))
        corners = torch.tensor(corners)
        return self.plan(index, corners, torch.cat(patches))

    @contextmanager
    def _watching(self) -> Iterator[list[Tensor]]:
        """Collects the watched layer's per-channel sums of the forward passes run
        inside; the hook goes whatever happens."""
        sums: list[Tensor] = []
        if self.watch is None:
            yield sums
            return
        handle = self.watch.register_forward_hook(
            lambda m, a, out: sums.append(channel_sums(layer_tensor(m, out)))
        )
        try:
            yield sums
        finally:
            handle.remove()
