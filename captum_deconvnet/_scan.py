"""The occluded copies of an input, run through the model chunk by chunk: as full
forward passes, or incrementally where the model allows it and it pays (see
``incremental``), optionally approximately."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ._occlusion_args import Region, region_covers, region_masks
from .incremental import Approximation, IncrementalForward, channel_sums, drill_down
from .incremental.count import position_limit
from .layers import layer_tensor

__all__ = ["OcclusionScan"]

# A plan whose boxes save less than this share of the multiply-adds costs more in
# gathering and pasting than it saves: such models run full passes.
MIN_LIMIT = 1.5
# Devices on which an exact plan can pay. On a GPU its per-layer gathers and pastes
# are launch-bound: on an H200 the plan ran 2-12x slower than Captum's full passes
# on every torchvision model measured (benchmarks/results/
# occlusion_speed_incremental_cuda.md), so there only an approximation that cuts
# boxes makes one.
PLANS_PAY_ON = ("cpu",)
# Chunks timed per size while the adaptive chunk size is searched for.
TRIALS = 2
# Input elements in the first chunk of whole copies: two 3x224x224 images.
FIRST_CHUNK_ELEMENTS = 2 * 3 * 224 * 224


class OcclusionScan:
    """The occluded copies of one input, position after position, in chunks.

    Iterating yields ``(regions, outputs, watched)``: the chunk's occluder regions,
    the model's outputs for them (position-major: copy ``p * N + n`` is image ``n``
    under region ``p``) and the watched layer's per-channel sums (or ``None``).
    Copies run incrementally when ``incremental`` is on, the model is an
    ``nn.Module`` taking one batch of images alone, its plan saves enough and the
    input is on a device where plans pay (the CPU; anywhere for an approximation
    that cuts boxes); otherwise as full passes. ``adaptive`` lets the chunk size
    grow from small while the time per copy falls (at most ``positions``; on a GPU
    whole copies start there); else chunks hold ``positions``.
    ``approximate`` trades exactness for speed (see :class:`Approximation`).
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
        adaptive: bool = False,
        approximate: Approximation | None = None,
    ) -> None:
        self.forward_func = forward_func
        self.tensors = tensors
        self.index = index
        self.regions = regions
        # in the input's dtype and place, as assigning into a copy of it casts
        image = tensors[index]
        self.fill = torch.broadcast_to(fill.to(image.device, image.dtype), image.shape)
        self.extra = extra
        self.positions = positions
        self.watch = watch
        self.adaptive = adaptive
        self.approximate = approximate
        # what the drill-down refines by: a value per copy of one position's outputs
        self.score: Callable[[Tensor], Tensor] = lambda outputs: outputs
        self.plan = self.unoccluded = None
        pays = tensors[0].device.type in PLANS_PAY_ON
        needs_plan = approximate is not None and approximate.needs_plan
        if incremental and self._plannable() and (pays or needs_plan):
            cap = approximate.projective_field if approximate else 1.0
            tolerance = approximate.tolerance if approximate else 0.0
            self.plan = IncrementalForward.plan(
                forward_func, tensors[0], watch, cap, tolerance
            )
        if self.plan is not None:
            self.unoccluded = self.plan.output
            if not needs_plan and position_limit(self.plan, self._box()) < MIN_LIMIT:
                self.plan = None

    def _plannable(self) -> bool:
        return (
            isinstance(self.forward_func, nn.Module)
            and len(self.tensors) == 1
            and self.tensors[0].ndim == 4
            and self.tensors[0].is_floating_point()
            and not self.extra
        )

    def unoccluded_output(self, with_watched: bool = False):
        if self.unoccluded is not None and not with_watched:
            return self.unoccluded  # the plan ran it already
        with self._watching() as sums:
            output = self.forward_func(*self.tensors, *self.extra)
        return (output, sums[0] if sums else None) if with_watched else output

    def __iter__(self) -> Iterator[tuple[list[Region], Tensor, Tensor | None]]:
        if self.approximate is not None and self.approximate.drills_down:
            yield from drill_down(self, self.approximate)
            return
        yield from self.run(self.regions)

    def run(
        self, regions: list[Region]
    ) -> Iterator[tuple[list[Region], Tensor, Tensor | None]]:
        """The copies of ``regions``, chunk by chunk.

        With ``adaptive``, each chunk size from the first is timed on ``TRIALS``
        full chunks (their best time per copy, so one slow moment on a busy machine
        does not decide) and doubled while that gets cheaper; then the cheapest
        size measured is kept for the rest."""
        start, size = 0, self._first_size()
        per_copy: dict[int, list[float]] = {}
        settled = not self.adaptive
        device = self.tensors[0].device
        while start < len(regions):
            chunk = regions[start : start + size]
            if not settled and device.type == "cuda":  # time this chunk alone
                torch.cuda.synchronize(device)
            began = time.perf_counter()
            outputs, watched = self._chunk(chunk)
            if not settled and device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - began
            yield chunk, outputs, watched
            start += len(chunk)
            if settled or len(chunk) < size:
                continue
            per_copy.setdefault(size, []).append(seconds / size)
            if len(per_copy[size]) < TRIALS:
                continue
            best = min(per_copy, key=lambda s: min(per_copy[s]))
            if best < size or size >= self.positions:
                size, settled = best, True
            else:
                size = min(2 * size, self.positions)

    def _first_size(self) -> int:
        """The chunk size (in positions) to start from: the largest allowed, or with
        ``adaptive`` a small one (whole copies' forward passes are cheapest at some
        batch that only a measurement finds): 8 copies' boxes, or as many whole
        copies as hold ``FIRST_CHUNK_ELEMENTS`` (2 at 3x224x224, more for small
        inputs, whose passes are cheap and whose fixed costs weigh more). On a GPU
        whole copies start at the largest: there a pass costs about the same up
        to 64 copies (Captum was fastest at 64 on nearly every model measured)."""
        on_cpu = self.tensors[0].device.type == "cpu"
        if not self.adaptive or (self.plan is None and not on_cpu):
            return self.positions
        if self.plan is not None:
            copies = 8
        else:
            elements = sum(t[0].numel() for t in self.tensors)
            copies = max(2, math.ceil(FIRST_CHUNK_ELEMENTS / elements))
        return max(1, min(self.positions, copies // len(self.tensors[0])))

    def _chunk(self, chunk: list[Region]) -> tuple[Tensor, Tensor | None]:
        if self.plan is not None:
            return self._incremental(chunk)
        with self._watching() as sums:
            outputs = self.forward_func(*self._copies(chunk), *self._extra(chunk))
        return outputs, sums[0] if sums else None

    def _copies(self, chunk: list[Region]) -> tuple[Tensor, ...]:
        """Every input repeated once per region, the occluded one filled there."""
        image = self.tensors[self.index]
        covers = region_covers(region_masks(chunk, image.shape[1:], image.device))
        occluded = torch.where(covers[:, None], self.fill, image)  # (P, N, ...)
        return tuple(
            occluded.reshape(-1, *t.shape[1:])
            if i == self.index
            else t.repeat(len(chunk), *[1] * (t.ndim - 1))
            for i, t in enumerate(self.tensors)
        )

    def _extra(self, chunk: list[Region]) -> tuple:
        return tuple(
            torch.cat([a] * len(chunk)) if isinstance(a, Tensor) and a.ndim else a
            for a in self.extra
        )

    def _box(self, chunk: list[Region] | None = None) -> list[int]:
        """The box size of a chunk: its largest window."""
        chunk = self.regions if chunk is None else chunk
        return [max(r[d].stop - r[d].start for r in chunk) for d in (1, 2)]

    def _incremental(self, chunk: list[Region]) -> tuple[Tensor, Tensor | None]:
        """The copies as boxes of a fixed size (the window's, moved inside the image
        where the last positions are clipped) for the incremental forward."""
        images = self.tensors[0]
        n, _, height, width = images.shape
        box = self._box(chunk)
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
