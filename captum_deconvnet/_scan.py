"""The occluded copies of an input, run through the model chunk by chunk: as full
forward passes, or incrementally where the model allows it and it pays (see
``incremental``), optionally approximately."""

from __future__ import annotations

import math
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ._occlusion_args import Region, region_covers, region_masks
from .incremental import Approximation, IncrementalForward, channel_sums, drill_down
from .incremental.count import position_limit
from .layers import BatchedInputs, layer_tensor, outside_stacklevel

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
# Making a plan (a trace and an interpreted pass that keeps values) costs about this
# many unoccluded passes: 1.1-7.5 measured on torchvision models and small CNNs, the
# most where the layers are many and cheap. A plan is made only where full passes
# would cost enough for the least saving accepted (MIN_LIMIT) to repay that.
PLAN_COST = 8
# Per model, by input shape (C, H, W) and box, the speed-up limit of the exact plans
# refused for it (below MIN_LIMIT): a later call of the same geometry skips making
# the plan, which only making it could refuse (25-80 ms on 64x64 inputs, measured).
# The limit depends on the graph and the geometry alone; an entry made stale by a
# change to the model can only cost speed, as the call then runs exact full passes.
_REFUSED_LIMITS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, float]] = (
    weakref.WeakKeyDictionary()
)
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
    ``nn.Module`` taking one batch of images alone, the input is on a device where
    plans pay (the CPU; anywhere for an approximation that cuts boxes) and the plan
    can pay for itself: full passes must cost enough to repay making it
    (``PLAN_COST``), its boxes must save enough (``MIN_LIMIT``) and, with
    ``adaptive``, its chunks must be measured cheaper than full passes'; otherwise
    copies run as full passes (a plan refused for its saving is remembered, per
    model and geometry, and not made again). ``adaptive`` lets the chunk size
    grow from small while the time per copy falls (at most ``positions``; on a GPU
    whole copies start there); else chunks hold ``positions``. ``approximate``
    trades exactness for speed (see :class:`Approximation`).
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
        self.watch = watch
        # The copies of a chunk share one box, which a cut would shrink for all
        # (about its centre, or to where any changes): one position a chunk keeps
        # each position's cut its own, so results do not depend on the batching.
        if approximate is not None and approximate.needs_plan:
            positions, adaptive = 1, False
        self.positions = positions
        self.adaptive = adaptive
        self.approximate = approximate
        # what the drill-down refines by: a value per copy of one position's outputs
        self.score: Callable[[Tensor], Tensor] = lambda outputs: outputs
        self.plan = self.unoccluded = None
        self.pass_seconds: float | None = None  # the unoccluded pass, when timed
        needs_plan = approximate is not None and approximate.needs_plan
        pays = tensors[0].device.type in PLANS_PAY_ON
        # A small input's full passes gain much from batching, which only the first
        # chunk measures: the plan is weighed after it (see run).
        self.plan_after_first_chunk = False
        if incremental and self._plannable() and (pays or needs_plan):
            if not needs_plan and adaptive and self._small_input():
                self.plan_after_first_chunk = True
            elif needs_plan or self._plan_pays(len(regions)):
                self._make_plan()
        if needs_plan and self.plan is None:
            runs = "exact full passes"
            if approximate.drills_down:
                runs = "full passes, exact at the positions its drill-down computes"
            warnings.warn(
                f"{approximate} cuts the boxes of incremental inference, which this "
                "call cannot use (it needs an nn.Module taking one float batch "
                "(N, C, H, W) alone, without hooks, that torch.fx can trace): it runs "
                f"{runs}",
                UserWarning,
                stacklevel=outside_stacklevel(),
            )

    def _plannable(self) -> bool:
        return (
            isinstance(self.forward_func, nn.Module)
            and len(self.tensors) == 1
            and self.tensors[0].ndim == 4
            and self.tensors[0].is_floating_point()
            and not self.extra
        )

    def _small_input(self) -> bool:
        """Whether the first chunk of full passes holds more than two copies."""
        return self.tensors[0][0].numel() * 2 < FIRST_CHUNK_ELEMENTS

    def _plan_pays(self, positions: int, seconds: float | None = None) -> bool:
        """Whether full passes of ``positions`` positions, at ``seconds`` each (or,
        unmeasured, an unoccluded pass's time each: without batching's gain), would
        cost enough for the least saving accepted to repay making the plan."""
        saving = 1 - 1 / max(MIN_LIMIT, 1.0)
        if seconds is None or self.pass_seconds is None:
            return positions * saving >= PLAN_COST
        return positions * seconds * saving >= PLAN_COST * self.pass_seconds

    def _make_plan(self) -> None:
        approximate = self.approximate
        exact = approximate is None or not approximate.needs_plan
        refused = _REFUSED_LIMITS.get(self.forward_func, {})
        geometry = (tuple(self.tensors[0].shape[1:]), tuple(self._box()))
        if exact and refused.get(geometry, math.inf) < MIN_LIMIT:
            return
        cap = approximate.projective_field if approximate else 1.0
        tolerance = approximate.tolerance if approximate else 0.0
        with BatchedInputs():  # its pass may be the first: see unoccluded_output
            self.plan = IncrementalForward.plan(
                self.forward_func, self.tensors[0], self.watch, cap, tolerance
            )
        if self.plan is None:
            return
        self.unoccluded = self.plan.output
        limit = position_limit(self.plan, self._box()) if exact else math.inf
        if limit < MIN_LIMIT:
            self.plan = None
            _REFUSED_LIMITS.setdefault(self.forward_func, {})[geometry] = limit

    def unoccluded_output(self, with_watched: bool = False):
        """The model's output for the inputs (and the watched layer's per-channel
        sums). Run first, it checks that the model's convolutions get batches
        (:class:`BatchedInputs`): the copies, batches of the same examples, need
        no check then, which spares them a Python call per operation."""
        if self.unoccluded is not None and not with_watched:
            return self.unoccluded  # the plan ran it already
        began = time.perf_counter()
        with self._watching() as sums, BatchedInputs():
            output = self.forward_func(*self.tensors, *self.extra)
        self.pass_seconds = time.perf_counter() - began
        return (output, sums[0] if sums else None) if with_watched else output

    def __iter__(self) -> Iterator[tuple[list[Region], Tensor, Tensor | None]]:
        if self.approximate is not None and self.approximate.drills_down:
            yield from drill_down(self, self.approximate)
            return
        yield from self.run(self.regions)

    def run(
        self, regions: list[Region]
    ) -> Iterator[tuple[list[Region], Tensor, Tensor | None]]:
        """The copies of ``regions``, chunk by chunk, in the chunk size that
        :class:`ChunkSearch` finds. After the first chunk of full passes of a small
        input, a plan is made if they cost enough to repay it, and its chunks start
        at that chunk's size; once their search settles, the plan is dropped if its
        best chunks cost more per position than full passes did."""
        start, search = 0, self._search()
        full_seconds = math.inf  # per position, the cheapest full chunk timed
        device = self.tensors[0].device
        # made once: a chunk's own would be a copy to the device, which waits for
        # the work queued there (a GPU would idle while the next chunk is queued)
        image = self.tensors[self.index]
        masks = region_masks(regions, image.shape[1:], image.device)
        while start < len(regions):
            chunk = regions[start : start + search.size]
            if not search.settled and device.type == "cuda":  # time it alone
                torch.cuda.synchronize(device)
            began = time.perf_counter()
            incremental = self.plan is not None
            part = [m[start : start + len(chunk)] for m in masks]
            outputs, watched = self._chunk(chunk, part)
            if not search.settled and device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = (time.perf_counter() - began) / len(chunk)
            yield chunk, outputs, watched
            start += len(chunk)
            search.record(len(chunk), seconds)
            if not incremental:
                full_seconds = min(full_seconds, seconds)
            if self.plan_after_first_chunk:
                self.plan_after_first_chunk = False
                if self._plan_pays(len(regions) - start, seconds):
                    self._make_plan()
                    if self.plan is not None:  # first compared at the same size
                        search = self._search(first=len(chunk))
            elif incremental and search.settled and search.best > full_seconds:
                self.plan = None  # its boxes cost more than full passes here
                search = self._search()

    def _search(self, first: int | None = None) -> ChunkSearch:
        """A search for the chunk size of the way copies run now, from ``first``
        or the size :meth:`_first_size` gives."""
        return ChunkSearch(first or self._first_size(), self.positions, self.adaptive)

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

    def _chunk(
        self, chunk: list[Region], masks: list[Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """The chunk's outputs and watched sums; ``masks`` are its regions' (see
        :func:`region_masks`)."""
        if self.plan is not None:
            return self._incremental(chunk)
        with self._watching() as sums:
            outputs = self.forward_func(*self._copies(masks), *self._extra(len(chunk)))
        return outputs, sums[0] if sums else None

    def _copies(self, masks: list[Tensor]) -> tuple[Tensor, ...]:
        """Every input repeated once per region of ``masks``, the occluded one
        filled there."""
        image = self.tensors[self.index]
        covers = region_covers(masks)
        occluded = torch.where(covers[:, None], self.fill, image)  # (P, N, ...)
        return tuple(
            occluded.reshape(-1, *t.shape[1:])
            if i == self.index
            else t.repeat(len(covers), *[1] * (t.ndim - 1))
            for i, t in enumerate(self.tensors)
        )

    def _extra(self, copies: int) -> tuple:
        return tuple(
            torch.cat([a] * copies) if isinstance(a, Tensor) and a.ndim else a
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


class ChunkSearch:
    """The number of positions per chunk: fixed at ``first``, or with ``adaptive``
    doubled from ``first`` (up to ``most``) while the best of ``TRIALS`` timings
    per position falls (the best, so that one slow moment on a busy machine does
    not decide); then the cheapest size measured is kept."""

    def __init__(self, first: int, most: int, adaptive: bool) -> None:
        self.size = first
        self.most = most
        self.settled = not adaptive
        self.seconds: dict[int, list[float]] = {}  # per position, per size

    @property
    def best(self) -> float:
        """The least time per position measured (``inf`` before any)."""
        return min((min(s) for s in self.seconds.values()), default=math.inf)

    def record(self, positions: int, seconds: float) -> None:
        """One chunk of ``positions`` positions took ``seconds`` per position."""
        if self.settled or positions < self.size:
            return
        self.seconds.setdefault(self.size, []).append(seconds)
        if len(self.seconds[self.size]) < TRIALS:
            return
        best = min(self.seconds, key=lambda size: min(self.seconds[size]))
        if best < self.size or self.size >= self.most:
            self.size, self.settled = best, True
        else:
            self.size = min(2 * self.size, self.most)
