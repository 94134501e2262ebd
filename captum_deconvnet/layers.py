"""Reading layer outputs out of a model without leaving anything behind in it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from ._inputs import check_submodule

__all__ = ["eval_mode", "layer_name", "layer_outputs"]


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """The qualified name of ``layer`` in ``model`` (``""`` for the model itself).

    Raises:
        TypeError, ValueError: as :func:`check_submodule`.
    """
    check_submodule(model, layer)
    return next(name for name, m in model.named_modules() if m is layer)


class _AllCaptured(Exception):
    """Ends a forward pass once every requested layer has run."""


def layer_outputs(
    model: nn.Module,
    layers: Sequence[nn.Module],
    inputs: Tensor,
    stop_early: bool = True,
) -> tuple[list[Tensor], Any]:
    """Outputs of ``layers`` (the first time each runs) and the model's output.

    Outputs are cloned, because a following in-place ReLU would otherwise rewrite them.
    With ``stop_early`` the forward pass ends once the last layer has run and the
    model's output is ``None``. The hooks are removed whatever happens.

    Raises:
        ValueError: if a layer does not run in the forward pass.
    """
    captured: dict[int, Tensor] = {}

    def hook(index: int, output: Any) -> None:
        if index in captured:
            return
        if not isinstance(output, Tensor):
            raise TypeError(f"the output of {layers[index]!r} is not one tensor")
        captured[index] = output.detach().clone()
        if stop_early and len(captured) == len(layers):
            raise _AllCaptured

    handles = [
        layer.register_forward_hook(lambda m, a, out, i=i: hook(i, out))
        for i, layer in enumerate(layers)
    ]
    output = None
    try:
        output = model(inputs)
    except _AllCaptured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [layers[i] for i in range(len(layers)) if i not in captured]
    if missing:
        raise ValueError(f"layer {missing[0]!r} did not run in the forward pass")
    return [captured[i] for i in range(len(layers))], output


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for a block; each module's own mode comes back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
