"""Running the user's model: the one guard every entry point calls it through, and
reading layer outputs out of it without leaving anything behind.

:func:`guarded` is what every public class and analysis wraps its work in. Inside it
the model is the module a compiled or ``DataParallel`` wrapper holds, in eval mode
(each module's own mode comes back, also when the call raises), and 1-, 2- and 3-D
convolutions refuse unbatched inputs. :func:`model_output` and :func:`layer_tensor`
check what the model and a layer return.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import captum
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ._inputs import check_submodule
from .model_state import buffers_kept, check_batch_independent, eval_mode

__all__ = [
    "BatchedInputs",
    "UnbatchedInputError",
    "check_layers",
    "model_device",
    "guarded",
    "layer_did_not_run",
    "layer_name",
    "layer_outputs",
    "layer_tensor",
    "model_output",
    "unwrap",
]


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters (or buffers) are; the CPU for a model without.
    Images a function loads itself (from a dataset) go there."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return next(tensors, torch.zeros(())).device


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """The qualified name of ``layer`` in ``model`` (``""`` for the model itself).

    Raises:
        TypeError, ValueError: as :func:`check_submodule`.
    """
    check_submodule(model, layer)
    return next(name for name, m in model.named_modules() if m is layer)


def check_layers(layers: Any) -> None:
    """Raise unless ``layers`` is a non-empty list (a tuple, an ``nn.ModuleList``)
    of layers: one module given alone is refused, even a ``Sequential``, which would
    pass for its children.

    Raises:
        ValueError: naming what came instead, and what to pass.
        TypeError: for an entry that is not a module (a layer's name, say).
    """
    listed = isinstance(layers, nn.ModuleList)  # never run itself: not one layer
    if isinstance(layers, nn.Module) and not listed:
        # a module's repr lists all of its children: name its type instead
        got = f"{type(layers).__name__}; pass one layer as [layer]"
    elif not isinstance(layers, Sequence) and not listed:
        got = f"{type(layers).__name__}; pass the layers as a list, list(layers)"
    elif not len(layers):
        got = f"an empty {type(layers).__name__}; name at least one layer"
    else:
        odd = next(
            (entry for entry in layers if not isinstance(entry, nn.Module)), None
        )
        if odd is not None:
            raise TypeError(
                f"layers must be submodules of the model, got {odd!r} "
                f"({type(odd).__name__}); for a name, pass model.get_submodule(name)"
            )
        return
    raise ValueError(f"layers must be a non-empty list of submodules, got {got}")


def unwrap(model: Any) -> Any:
    """The module that ``torch.compile`` (``OptimizedModule``), ``nn.DataParallel``
    or ``DistributedDataParallel`` wrappers hold, to run eagerly in this process;
    anything else as it is.

    Raises:
        ValueError: if a wrapper carries hooks of its own (they would be skipped).
    """
    while True:
        # A compiled module exists only once torch._dynamo is imported (which takes
        # seconds, so it is not imported here).
        dynamo = sys.modules.get("torch._dynamo.eval_frame")
        if dynamo is not None and isinstance(model, dynamo.OptimizedModule):
            inner = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            inner = model.module
        else:
            return model
        if _own_hooks(model):
            raise ValueError(
                f"the {type(model).__name__} wrapper has hooks of its own, which "
                "would be skipped: the wrapped module runs without the wrapper. "
                "Register them on the wrapped module instead"
            )
        model = inner


def _own_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


_active = threading.local()  # depth of nested guards in this thread


@contextmanager
def guarded(
    model: Callable, warn: bool = True, check_batches: bool = True
) -> Iterator[Callable]:
    """Every entry point's use of the user's model; yields the module to run.

    - A compiled or data-parallel wrapper gives the module it holds (:func:`unwrap`).
    - Modules whose output for one example depends on the rest of the batch even in
      eval mode (batch norm without running statistics) are refused.
    - The model runs in eval mode (batch norm uses its running statistics, dropout
      is off), with one ``UserWarning`` naming the modules that were in training
      mode (unless ``warn`` is off, for callers whose result cannot depend on the
      mode); each module's own mode comes back afterwards, also when the call
      raises. So do its buffers (:func:`buffers_kept`), which a forward may write.
    - 1-, 2- and 3-D convolutions and 2-D pools refuse unbatched inputs
      (:class:`BatchedInputs`); with ``check_batches`` off the caller checks the
      passes it chooses (the check costs a Python call per operation).

    A callable that is not a module runs as it is, with the convolution check.

    Raises:
        ValueError: for a batch-dependent module, hooks on a wrapper, and (inside
            the block) an unbatched input to a convolution.
    """
    model = unwrap(model)
    depth = getattr(_active, "depth", 0)
    with contextlib.ExitStack() as stack:
        if isinstance(model, nn.Module):
            check_batch_independent(model)
            if warn:
                _warn_training(model)
            stack.enter_context(eval_mode(model))
            if not depth:
                stack.enter_context(buffers_kept(model))
        if not depth and check_batches:  # the outermost guard checks for all
            stack.enter_context(BatchedInputs())
        _active.depth = depth + 1
        try:
            yield model
        finally:
            _active.depth = depth


_MODE_DEPENDENT = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)


def _warn_training(model: nn.Module, most: int = 6) -> None:
    in_training = [(name, m) for name, m in model.named_modules() if m.training]
    if not in_training:
        return
    # Batch norm and dropout first: they are what the switch changes.
    in_training.sort(key=lambda item: not isinstance(item[1], _MODE_DEPENDENT))
    training = [
        f"{name or '(the model)'} ({type(m).__name__})" for name, m in in_training
    ]
    listed = ", ".join(training[:most])
    if len(training) > most:
        listed += f" and {len(training) - most} more"
    warnings.warn(
        f"modules in training mode: {listed}. This call runs the model in eval "
        "mode (batch norm uses its running statistics, dropout is off) and puts "
        "each module back in its own mode afterwards; call model.eval() first to "
        "silence this warning",
        UserWarning,
        stacklevel=outside_stacklevel(),
    )


_INTERNAL = (
    str(Path(__file__).parent),
    str(Path(captum.__file__).parent),
    contextlib.__file__,
)


def outside_stacklevel() -> int:
    """The ``stacklevel`` (for the caller of this function) of the first frame
    outside this package, Captum and contextlib: the user's line."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


# The batched rank of functions that also take one unbatched example.
_BATCHED_RANK = {
    F.conv1d: 3,
    F.conv2d: 4,
    F.conv3d: 5,
    F.conv_transpose1d: 3,
    F.conv_transpose2d: 4,
    F.conv_transpose3d: 5,
    F.max_pool2d: 4,
    F.avg_pool2d: 4,
}
_LAYOUT = {3: "(N, C, L)", 4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}


class UnbatchedInputError(ValueError):
    """A convolution or pool of the model (``operation``) got an input of ``shape``,
    without the batch dimension of its ``rank``."""

    def __init__(self, operation: str, shape: tuple[int, ...], rank: int) -> None:
        self.operation, self.shape = operation, shape
        super().__init__(
            f"the model's {operation} got an input of shape {shape}; inputs must "
            f"be batches {_LAYOUT[rank]} (add the batch dimension to a single "
            "example: x[None])"
        )


class BatchedInputs(TorchFunctionMode):
    """Refuses convolutions and pools on unbatched inputs (with an
    :class:`UnbatchedInputError`). PyTorch takes a single ``(C, H, W)`` image
    there, so an image passed without its batch dimension would otherwise run,
    with its channels read as the batch."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        rank = _BATCHED_RANK.get(func)
        first = args[0] if args else (kwargs or {}).get("input")
        if rank is not None and isinstance(first, Tensor) and first.ndim != rank:
            raise UnbatchedInputError(func.__name__, tuple(first.shape), rank)
        return func(*args, **(kwargs or {}))


def model_output(output: Any, n: int) -> Tensor:
    """``output`` if it is one tensor with a row per example of a batch of ``n``.

    Raises:
        TypeError: for anything but a tensor (a tuple, dict, list, ...), saying how
            to wrap the model.
        ValueError: for a tensor without ``n`` rows.
    """
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the model must return one (N, ...) tensor, but it returned "
            f"{_describe(output)}. Wrap it so that it returns the tensor to "
            "explain, e.g. an nn.Module whose forward returns model(x)[0] (or "
            "model(x)['logits']); OcclusionSensitivity also takes a function such "
            "as lambda x: model(x)[0]"
        )
    if output.ndim == 0 or output.shape[0] != n:
        raise ValueError(
            f"the model returned shape {tuple(output.shape)} for a batch of {n}; it "
            "must return one row per example, (N, ...)"
        )
    return output


def layer_tensor(
    layer: nn.Module, value: Any, n: int | None = None, where: str = "output"
) -> Tensor:
    """``value``, the ``where`` (output or input) of ``layer``, if it is one tensor
    (with ``n`` rows, when given).

    Raises:
        TypeError: for anything but a tensor.
        ValueError: for a tensor whose first dimension is not the batch.
    """
    if not isinstance(value, Tensor):
        raise TypeError(
            f"the {where} of layer {layer!r} must be one tensor, got {_describe(value)}"
        )
    if n is not None and (value.ndim == 0 or value.shape[0] != n):
        raise ValueError(
            f"the {where} of layer {layer!r} has shape {tuple(value.shape)}, not one "
            f"row per example of the batch of {n}: inputs must be batches "
            "(N, C, H, W for images)"
        )
    return value


def layer_did_not_run(layer: nn.Module) -> ValueError:
    return ValueError(f"layer {layer!r} did not run in the model's forward pass")


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return f"a dict with keys {list(value)}"
    if isinstance(value, (tuple, list)):
        parts = ", ".join(_describe(v) for v in value[:3])
        more = ", ..." if len(value) > 3 else ""
        return f"a {type(value).__name__} of {len(value)}: ({parts}{more})"
    return f"a {type(value).__name__}"


class _AllCaptured(Exception):
    """Ends a forward pass once every requested layer has run."""


def layer_outputs(
    model: nn.Module,
    layers: Sequence[nn.Module],
    inputs: Tensor,
    stop_early: bool = True,
) -> tuple[list[Tensor], Any]:
    """Outputs of ``layers`` (the first time each runs) and the model's output.

    The model runs through :func:`guarded` (eval mode, compiled and data-parallel
    wrappers unwrapped). Outputs are cloned, because a following in-place ReLU would
    otherwise rewrite them. With ``stop_early`` the forward pass ends once the last
    layer has run and the model's output is ``None``. The hooks are removed whatever
    happens.

    Raises:
        TypeError: if ``inputs`` is not a tensor, or a layer's output is not one
            tensor.
        ValueError: if ``layers`` is not a non-empty list (:func:`check_layers`), a
            layer does not run in the forward pass, or its output has no row per
            example.
    """
    check_layers(layers)
    if not isinstance(inputs, Tensor):
        raise TypeError(
            f"inputs must be a tensor (N, ...), got {type(inputs).__name__}"
        )
    captured: dict[int, Tensor] = {}
    n = inputs.shape[0]

    def hook(index: int, output: Any) -> None:
        if index in captured:
            return
        captured[index] = layer_tensor(layers[index], output, n).detach().clone()
        if stop_early and len(captured) == len(layers):
            raise _AllCaptured

    output = None
    with guarded(model) as plain:
        handles = [
            layer.register_forward_hook(lambda m, a, out, i=i: hook(i, out))
            for i, layer in enumerate(layers)
        ]
        try:
            output = plain(inputs)
        except _AllCaptured:
            pass
        finally:
            for handle in handles:
                handle.remove()
    missing = [layers[i] for i in range(len(layers)) if i not in captured]
    if missing:
        raise layer_did_not_run(missing[0])
    return [captured[i] for i in range(len(layers))], output
