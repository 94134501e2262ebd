"""Checking and reshaping what users pass to ``attribute``: inputs and targets.

Captum's own helpers for this are private and accept some bad values silently (a
``target=None`` on a many-class output, an index past the end); these check first.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

TargetType = None | int | tuple | Tensor | Sequence[int | tuple]

__all__ = [
    "TargetType",
    "as_int",
    "as_tuple",
    "check_images",
    "check_submodule",
    "extra_args",
    "holds_integers",
    "per_example",
    "positive_int",
    "select_targets",
    "target_selector",
    "widened",
]


def as_tuple(
    inputs: Tensor | tuple[Tensor, ...], integers: bool = False
) -> tuple[tuple[Tensor, ...], bool]:
    """``(inputs as a tuple, whether they came as one)``, after checking each tensor;
    with ``integers``, integer tensors (token ids, say) pass too, but not ``uint8``,
    which holds images that the model wants as floats.

    Raises:
        TypeError: for something other than a floating-point (or integer) tensor.
        ValueError: for a tensor without a batch dimension, or batches of unequal size.
    """
    is_tuple = isinstance(inputs, tuple)
    tensors = inputs if is_tuple else (inputs,)
    if not tensors:
        raise ValueError("inputs is an empty tuple")
    for i, tensor in enumerate(tensors):
        name = f"inputs[{i}]" if is_tuple else "inputs"
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(tensor).__name__}")
        integer = not (tensor.is_floating_point() or tensor.is_complex()) and (
            tensor.dtype not in (torch.bool, torch.uint8)
        )
        if not (tensor.is_floating_point() or (integers and integer)):
            raise TypeError(
                f"{name} must be a floating-point tensor, got {tensor.dtype}; "
                "convert images with .float() (and scale them as the model expects)"
            )
        if tensor.ndim < 1:
            raise ValueError(
                f"{name} needs a batch dimension, got shape {tuple(tensor.shape)}"
            )
    sizes = {t.shape[0] for t in tensors}
    if len(sizes) > 1:
        raise ValueError(f"inputs have different batch sizes: {sorted(sizes)}")
    return tensors, is_tuple


def check_images(images: Any, name: str = "inputs") -> Tensor:
    """``images`` if it is a floating-point batch of images ``(N, C, H, W)``.

    Raises:
        TypeError: for something other than a floating-point tensor.
        ValueError: for a tensor of another rank.
    """
    if not isinstance(images, Tensor):
        raise TypeError(
            f"{name} must be a tensor of images (N, C, H, W), got "
            f"{type(images).__name__}"
        )
    if not images.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got {images.dtype}; convert "
            "images with .float() (and scale them as the model expects)"
        )
    if images.ndim != 4:
        raise ValueError(
            f"{name} must be images (N, C, H, W), got shape {tuple(images.shape)}"
        )
    return images


def as_int(value: Any) -> int | None:
    """``value`` as an ``int`` if it is an integer: a Python or numpy int, or an
    integer tensor of one element and no dimensions (``torch.unravel_index`` and
    indexing give those); ``None`` for anything else, a ``bool`` too."""
    if isinstance(value, bool) or (
        isinstance(value, Tensor) and (value.ndim != 0 or value.dtype == torch.bool)
    ):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` (see :func:`as_int`) if it is 1 or more.

    Raises:
        ValueError: naming ``name`` and ``value`` otherwise.
    """
    number = as_int(value)
    if number is None or number < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return number


def holds_integers(tensor: Tensor) -> bool:
    """Whether ``tensor`` is of an integer dtype (not float, complex or bool): the
    class indices, channels and image indices callers give."""
    numeric = tensor.is_floating_point() or tensor.is_complex()
    return not numeric and tensor.dtype != torch.bool


def per_example(values: Tensor, n: int, name: str) -> Tensor:
    """``values`` (one row, or one per example) as ``n`` rows, one per example.

    A batch ``k`` times longer than ``values`` takes each row ``k`` times in a row:
    that is how ``captum.attr.NoiseTunnel`` lays out ``k`` noisy copies of each
    example (``repeat_interleave``), so per-example arguments follow it there.

    Raises:
        ValueError: if ``n`` is not a multiple of the number of rows.
    """
    rows = values.shape[0]
    if rows == 1:
        return values.expand(n, *values.shape[1:])
    if rows == 0 or n % rows:
        raise ValueError(
            f"{name} needs 1 or {n} entries (one per example, or one per example "
            f"of the batch NoiseTunnel copied), got {rows}"
        )
    return values.repeat_interleave(n // rows, dim=0)


def widened(tensor: Tensor) -> Tensor:
    """``tensor`` in at least float32, for sums and softmax of float16 values."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def check_submodule(model: nn.Module, layer: nn.Module) -> None:
    """Raise ``ValueError`` unless ``layer`` is ``model`` or one of its submodules."""
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be an nn.Module, got {type(layer).__name__}")
    if not any(m is layer for m in model.modules()):
        raise ValueError(f"layer {layer!r} is not a submodule of the model")


def extra_args(additional_forward_args: Any) -> tuple:
    """Captum's ``additional_forward_args`` as a tuple of positional arguments."""
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)


def select_targets(output: Tensor, target: TargetType) -> Tensor:
    """One output value per example, as Captum selects it from ``target``.

    ``None`` needs an output with one value per example; an ``int`` or a ``tuple``
    indexes every example's output alike; a tensor of one value does the same, one of
    ``N`` values and a list of ``N`` ints or tuples index each example's own output.

    Raises:
        ValueError: naming the target that does not fit the output.
        TypeError: for a target of another type.
    """
    n = output.shape[0]
    per_example = output.reshape(n, -1) if output.ndim > 1 else output[:, None]
    if target is None:
        if per_example.shape[1] != 1:
            raise ValueError(
                f"target=None needs one output per example, but the output has shape "
                f"{tuple(output.shape)}; pass the class to explain as target"
            )
        return per_example[:, 0]
    if isinstance(target, Tensor):
        if not holds_integers(target):
            raise TypeError(
                f"a target tensor holds class indices and must be of an integer "
                f"dtype, got {target.dtype}"
            )
        if target.numel() == 1:
            return select_targets(output, int(target.item()))
        if target.shape != (n,):
            raise ValueError(
                f"a target tensor needs 1 or {n} values, "
                f"got shape {tuple(target.shape)}"
            )
        return select_targets(output, target.tolist())
    if isinstance(target, (int, tuple)):
        return output[(slice(None), *_index(output, target))]
    if isinstance(target, Sequence) and not isinstance(target, str):
        if len(target) != n:
            raise ValueError(f"a target list needs {n} entries, got {len(target)}")
        # one indexing, not a row at a time: on a GPU each row is a kernel launch
        index = torch.tensor([_index(output, t) for t in target], dtype=torch.long)
        index = index.reshape(n, output.ndim - 1).to(output.device)
        rows = torch.arange(n, device=output.device)
        return output[(rows, *index.unbind(1))]
    raise TypeError(f"target must be an int, tuple, tensor or list, got {target!r}")


def target_selector(output: Tensor, target: TargetType) -> Callable[[Tensor], Tensor]:
    """What :func:`select_targets` takes from ``output`` (``(N, ...)``), as a
    function of outputs of the same shape or of ``P`` copies of the batch stacked
    one after another (``(P * N, ...)``, copy ``p * N + n`` is example ``n``),
    returning ``(P * N,)``.

    The target is checked and turned into one column per example once, on the
    output's device: building it again for every chunk of copies would take a
    round trip to the host each time, which stalls a GPU's queue of work.

    Raises:
        ValueError, TypeError: as :func:`select_targets`, for ``output``; the
            function, ValueError for outputs of another shape per example.
    """
    n, shape = output.shape[0], output.shape[1:]
    width = shape.numel()
    columns = torch.arange(width, device=output.device).expand(n, width)
    columns = select_targets(columns.reshape(output.shape), target)  # (N,)

    def select(outputs: Tensor) -> Tensor:
        if outputs.shape[1:] != shape or len(outputs) % n:
            raise ValueError(
                f"the model returned shape {tuple(outputs.shape)} for copies of a "
                f"batch for which it returned {(n, *shape)}: it must return "
                "the same shape per example"
            )
        rows = outputs.reshape(-1, n, width)
        index = columns.expand(len(rows), n).unsqueeze(2)
        return rows.gather(2, index).reshape(-1)

    return select


def _index(output: Tensor, target: int | tuple) -> tuple[int, ...]:
    """The output index ``target`` names for one example.

    Raises:
        TypeError: for a ``bool`` (an ``int`` to Python, never a class index) or
            an entry that is neither an ``int`` nor a tuple.
        ValueError: for an index that does not fit the output.
    """
    index = (target,) if isinstance(target, int) else target
    if not isinstance(index, tuple) or any(isinstance(i, bool) for i in index):
        raise TypeError(
            f"a target names a class by an int (or an output position by a tuple of "
            f"ints), got {target!r}: pass e.g. target=3, or a list or integer "
            "tensor of one class per example"
        )
    dims = output.shape[1:]
    if len(index) != len(dims) or not all(isinstance(i, int) for i in index):
        raise ValueError(
            f"target {target!r} does not index an output of shape {tuple(output.shape)}"
        )
    for i, size in zip(index, dims, strict=True):
        if not -size <= i < size:
            raise ValueError(
                f"target {target!r} is out of range for an output of shape "
                f"{tuple(output.shape)}"
            )
    return index
