"""The k strongest activations of every channel of some layers, over a whole dataset.

:class:`TopKActivations` is a small mergeable state: per layer and channel, the k
largest values with the image and position each came from. Its order is total (value
first, then image, row and column, smallest first), so updating in any order, or
scanning parts separately and merging, gives exactly the same state. With
``distinct_images`` a channel's k slots hold k different images, each at its strongest
position, as in the paper's Fig. 2.
:func:`top_activations` streams a dataset through a model in this process;
``lightning_zfnet.scan_top_activations`` does the same in Lightning's predict loop,
where under DDP every process scans its share and the states are merged at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ._inputs import check_images, holds_integers, positive_int
from .layers import check_layers, guarded, layer_name, layer_outputs, model_device

__all__ = [
    "IndexedDataset",
    "TopEntries",
    "TopKActivations",
    "check_indexed",
    "first_item",
    "top_activations",
]

_EMPTY = -1  # the key of a slot no activation has filled yet
# Activations shortlisted at once: bounds the memory an update takes beyond its
# batch (a few bytes each, 64 MiB of float32 values).
SHORTLIST_ELEMENTS = 2**24


class TopEntries(NamedTuple):
    """The top-k of one layer, each ``(C, k)``, strongest first. Slots not filled
    (fewer than k activations seen) have value ``-inf`` and image ``-1``."""

    values: Tensor
    images: Tensor
    rows: Tensor
    cols: Tensor


@dataclass
class _LayerTop:
    values: Tensor  # (C, k) float64
    keys: Tensor  # (C, k) int64: (image * height + row) * width + col
    map_size: tuple[int, int]


class TopKActivations:
    """Per layer and channel, the ``k`` largest activations and where they were.

    Ties are broken by image index, then row, then column (smallest first), and an
    activation seen twice (same image and position) counts once, with its largest
    value, so the state depends only on the set of activations seen.

    By default an image may fill several of a channel's slots, at several
    positions. With ``distinct_images`` it fills at most one, at its strongest
    position for that channel (of equal values, the smallest row, then column): the
    k slots are k images, as in the paper's Fig. 2, whose 9 activations per feature
    map come from 9 different validation images. An image given again in a later
    update or in a merged state keeps its strongest position of all seen. Both
    forms are exact whatever the order of updates and merges; states of the two
    forms do not merge.

    Args:
        k: activations kept per channel.
        distinct_images: keep at most one activation per image and channel.

    Example::

        >>> top = TopKActivations(k=9, distinct_images=True)
        >>> top.update("features.4", activations, image_indices)
        >>> top.merge(top_of_another_process)
        >>> values, images, rows, cols = top.entries("features.4")
    """

    def __init__(self, k: int = 9, distinct_images: bool = False) -> None:
        self.k = positive_int("k", k)  # a numpy int is an int
        if not isinstance(distinct_images, bool):
            raise TypeError(f"distinct_images must be a bool, got {distinct_images!r}")
        self.distinct_images = distinct_images
        self._layers: dict[str, _LayerTop] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # states saved before distinct_images existed kept every position
        self.__dict__.update({"distinct_images": False, **state})

    @property
    def layers(self) -> list[str]:
        """Names of the layers seen so far."""
        return list(self._layers)

    def update(self, name: str, activations: Tensor, image_indices: Tensor) -> None:
        """Add a batch of activations of layer ``name``.

        An index may come again in a later update: its activations join those
        seen before (an activation seen twice counts once, with its largest value;
        with ``distinct_images`` the image keeps its strongest of all).

        Args:
            name: the layer's name.
            activations: ``(N, C, H, W)`` or ``(N, C)`` (treated as ``H = W = 1``).
            image_indices: ``(N,)`` dataset indices of the batch's images.

        Raises:
            TypeError: activations that are not a tensor.
            ValueError: activations of another shape, holding NaN or integers
                beyond 2**53, indices that are not ``N`` distinct non-negative
                ints.
        """
        if not isinstance(activations, Tensor):
            raise TypeError(
                f"activations must be a tensor (N, C, H, W) or (N, C), got "
                f"{type(activations).__name__}"
            )
        if activations.ndim == 2:
            activations = activations[:, :, None, None]
        if activations.ndim != 4:
            raise ValueError(
                f"activations must be (N, C, H, W) or (N, C), got "
                f"{tuple(activations.shape)}"
            )
        if activations.isnan().any():
            raise ValueError(
                f"activations of {name!r} hold NaN, which has no rank among the "
                "top activations: check the model and the images"
            )
        exact = 2**53  # the state keeps float64, which holds integers up to this
        if activations.dtype == torch.int64 and bool((activations.abs() > exact).any()):
            raise ValueError(
                f"activations of {name!r} hold integers beyond 2**53, which the "
                "state's float64 cannot tell apart: scale them down first"
            )
        n, _, h, w = activations.shape
        indices = torch.as_tensor(image_indices, device=activations.device)
        if not holds_integers(indices):
            raise ValueError(f"image_indices must be ints, got {image_indices!r}")
        indices = indices.long()
        if indices.shape != (n,) or (n and indices.min() < 0):
            raise ValueError(
                f"image_indices must be {n} non-negative indices, got {image_indices!r}"
            )
        if indices.unique().numel() != n:
            raise ValueError(f"image_indices repeat within the batch: {indices}")
        values, keys = self._candidates(activations.detach(), indices)
        if not values.is_floating_point():
            values = values.double()  # an empty slot's -inf needs a float
        values, keys = _shortlist(values, keys, self.k)
        self._add(name, _LayerTop(values.double(), keys, (h, w)))

    def _candidates(
        self, activations: Tensor, indices: Tensor
    ) -> tuple[Tensor, Tensor]:
        """A batch's activations ``(C, M)``, in image order, and their keys, which
        ascend along each row: ``(M,)`` for all channels, or ``(C, M)`` with
        ``distinct_images`` (``M = N``: each image's strongest position). Values
        stay in their dtype (float64 holds each exactly, in the same order), so
        only the shortlist is widened."""
        _, c, h, w = activations.shape
        indices, order = indices.sort()
        if self.distinct_images:
            # max gives the first of equal values: the smallest row, then column
            values, positions = activations.flatten(2).max(dim=2)  # (N, C)
            keys = indices[:, None] * (h * w) + positions[order]
            return values[order].T, keys.T
        values = activations[order].transpose(0, 1).reshape(c, -1)
        positions = torch.arange(h * w, device=activations.device)
        return values, (indices[:, None] * (h * w) + positions).reshape(-1)

    def merge(self, other: TopKActivations) -> TopKActivations:
        """Fold in the state of ``other`` (another process, another part of the
        data); returns ``self``. The result does not depend on the order of merges."""
        if not isinstance(other, TopKActivations):
            raise TypeError(f"can only merge a TopKActivations, got {type(other)}")
        if other.k != self.k:
            raise ValueError(f"cannot merge a top-{other.k} into a top-{self.k}")
        if other.distinct_images != self.distinct_images:
            raise ValueError(
                f"cannot merge a state with distinct_images={other.distinct_images} "
                f"into one with distinct_images={self.distinct_images}: scan both "
                "the same way"
            )
        for name, top in other._layers.items():
            self._add(name, top)
        return self

    def entries(self, name: str) -> TopEntries:
        """The top-k of layer ``name``, each ``(C, k)``, strongest first."""
        if name not in self._layers:
            raise KeyError(f"no activations of layer {name!r}; have {self.layers}")
        top = self._layers[name]
        h, w = top.map_size
        empty = top.keys == _EMPTY
        images = torch.where(empty, _EMPTY, top.keys // (h * w))
        rows = torch.where(empty, 0, top.keys % (h * w) // w)
        cols = torch.where(empty, 0, top.keys % w)
        return TopEntries(top.values.clone(), images, rows, cols)

    def _add(self, name: str, new: _LayerTop) -> None:
        old = self._layers.get(name)
        if old is None:
            c = new.values.shape[0]
            old = _LayerTop(
                torch.full((c, self.k), -torch.inf, dtype=torch.float64),
                torch.full((c, self.k), _EMPTY, dtype=torch.long),
                new.map_size,
            )
        if old.map_size != new.map_size or old.values.shape[0] != new.values.shape[0]:
            raise ValueError(
                f"layer {name!r}: maps of {new.values.shape[0]} channels of "
                f"{new.map_size} do not match the {old.values.shape[0]} of "
                f"{old.map_size} seen before"
            )
        device = new.values.device
        values = torch.cat([old.values.to(device), new.values], dim=1)
        keys = torch.cat([old.keys.to(device), new.keys], dim=1)
        per_image = new.map_size[0] * new.map_size[1] if self.distinct_images else 1
        values, keys = _best(values, keys, self.k, per_image)
        self._layers[name] = _LayerTop(values.cpu(), keys.cpu(), new.map_size)


def _best(
    values: Tensor, keys: Tensor, k: int, group: int = 1
) -> tuple[Tensor, Tensor]:
    """Per row, the ``k`` best (value largest, then key smallest) entries, one per
    group of ``group`` consecutive keys (1: of distinct keys; an image's positions:
    of distinct images), each group's best."""
    values, keys = _ranked(values, keys)
    last = torch.iinfo(keys.dtype).max  # empty slots' group
    groups = (keys // group).masked_fill(keys == _EMPTY, last)
    order = groups.argsort(dim=1, stable=True)
    values, keys, groups = (t.gather(1, order) for t in (values, keys, groups))
    # Now a group's entries are adjacent, its best first: drop the others.
    repeated = torch.zeros_like(keys, dtype=torch.bool)
    repeated[:, 1:] = (groups[:, 1:] == groups[:, :-1]) & (groups[:, 1:] != last)
    values = values.masked_fill(repeated, -torch.inf)
    keys = keys.masked_fill(repeated, _EMPTY)
    values, keys = _ranked(values, keys)
    return values[:, :k], keys[:, :k]


def _ranked(values: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """Rows in the state's order: value largest first, then key smallest, empty
    slots after every activation of the same value (-inf)."""
    rank = keys.masked_fill(keys == _EMPTY, torch.iinfo(keys.dtype).max)
    values, keys = _sorted(values, keys, rank, descending=False)
    # A stable sort by value keeps equal values in key order.
    return _sorted(values, keys, values, descending=True)


def _shortlist(values: Tensor, keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per row of ``values`` (``(C, M)``, with ``keys`` ``(M,)`` or ``(C, M)``
    ascending along the row), at most ``2k`` entries that include its top ``k``;
    the rest are marked empty.

    Sorting whole rows is slow for large maps; this is linear. Everything above the
    k-th largest value is kept, and of the values equal to it the first ``k``, which
    have the smallest keys. Rows go in blocks of about ``SHORTLIST_ELEMENTS``, so
    the temporaries stay small whatever the batch and map.
    """
    keys = keys.expand_as(values)
    if values.shape[1] <= 2 * k:
        return values, keys
    rows = max(1, SHORTLIST_ELEMENTS // values.shape[1])
    parts = zip(values.split(rows), keys.split(rows), strict=True)
    blocks = [_shortlist_rows(v, i, k) for v, i in parts]
    return torch.cat([b[0] for b in blocks]), torch.cat([b[1] for b in blocks])


def _shortlist_rows(values: Tensor, keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
    kth = values.topk(k, dim=1).values[:, -1:]
    ties = values == kth
    kept = (values > kth) | (ties & (ties.cumsum(dim=1, dtype=torch.int32) <= k))
    index = kept.to(torch.uint8).topk(2 * k, dim=1).indices  # all kept, some not
    dropped = ~kept.gather(1, index)
    return (
        values.gather(1, index).masked_fill(dropped, -torch.inf),
        keys.gather(1, index).masked_fill(dropped, _EMPTY),
    )


def _sorted(
    values: Tensor, keys: Tensor, by: Tensor, descending: bool
) -> tuple[Tensor, Tensor]:
    order = by.argsort(dim=1, descending=descending, stable=True)
    return values.gather(1, order), keys.gather(1, order)


def top_activations(
    model: nn.Module,
    layers: Sequence[nn.Module],
    dataset: Dataset | Tensor,
    k: int = 9,
    batch_size: int = 64,
    num_workers: int = 0,
    distinct_images: bool = False,
) -> TopKActivations:
    """The top-``k`` activations of every channel of ``layers`` over ``dataset``, in
    this process; item ``i`` of the dataset has image index ``i``. The model runs in
    eval mode (see "What it accepts" in the README) and without gradients; the
    state's values are float64, which hold float16, bfloat16 and float32
    activations exactly. To spread a large dataset over processes or GPUs,
    ``lightning_zfnet.scan_top_activations`` runs the same scan in Lightning's
    predict loop and merges the states exactly.

    Args:
        model: the network.
        layers: submodules of ``model`` whose outputs ``(N, C, H, W)`` or ``(N, C)``
            are scanned.
        dataset: images ``(N, C, H, W)``, or a dataset whose items are images or
            tuples starting with one (``(image, label, ...)``); each batch goes to
            the model's device.
        k: activations kept per channel.
        batch_size: images per forward pass.
        num_workers: data loader workers.
        distinct_images: keep at most one activation per image and channel, at its
            strongest position: the k slots are k different images, the paper's
            Fig. 2. Default ``False``: the k strongest (image, position) pairs, so
            one image may fill several slots.

    Returns:
        The state, keyed by the layers' names in ``model`` (in the module a
        compiled or ``DataParallel`` model wraps); its entries are ``(C, k)`` per
        layer, strongest first.

    Raises:
        TypeError: if the dataset's images are not tensors, a layer's output is
            not one tensor, or ``dataset`` is a ``DataLoader`` or an
            ``IterableDataset``.
        ValueError: if ``layers`` is not a non-empty list (one layer alone is
            refused) or a layer is not a submodule of ``model`` or does not run,
            the dataset is empty, or the images are not ``(N, C, H, W)``.

    Example::

        >>> top = top_activations(model, [model.features[4]], val_set, k=9)
        >>> top.entries("features.4").images[5]  # images of channel 5's top 9
        >>> top_activations(model, [model.features[4]], val_set, k=9,
        ...                 distinct_images=True)  # 9 different images each
    """
    check_layers(layers)
    check_indexed(dataset)
    if not len(dataset):
        raise ValueError("dataset is empty: there is nothing to scan")
    top = TopKActivations(k, distinct_images)
    loader = DataLoader(
        IndexedDataset(dataset), batch_size=batch_size, num_workers=num_workers
    )
    with guarded(model) as plain, torch.no_grad():
        names = [layer_name(plain, layer) for layer in layers]
        device = model_device(plain)  # the loader's batches come on the CPU
        for indices, items in loader:
            images = check_images(first_item(items), "the dataset's batches")
            images = images.to(device)
            outputs, _ = layer_outputs(plain, layers, images)
            for name, output in zip(names, outputs, strict=True):
                top.update(name, output, indices)
    return top


def check_indexed(dataset: Any) -> None:
    """Raise a ``TypeError`` for a ``DataLoader`` or an ``IterableDataset``: a scan
    numbers images by their index in the dataset, and loads them by it again."""
    if isinstance(dataset, DataLoader):
        raise TypeError(
            "dataset must be a Dataset or a tensor of images, not a DataLoader: "
            "item i's index is its image's, so the scan makes its own loader"
        )
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            "dataset must be a Dataset that can be indexed, or a tensor of images, "
            f"not an IterableDataset ({type(dataset).__name__}): item i's index is "
            "its image's, which the projections load again"
        )


class IndexedDataset(Dataset):
    """Items of ``dataset`` as ``(index, item)``, so a batch knows its images."""

    def __init__(self, dataset: Dataset | Tensor) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.dataset[index]


def first_item(item: Any) -> Tensor:
    """The image of a dataset item or batch: itself, or its first element."""
    return item[0] if isinstance(item, (tuple, list)) else item
