"""Leaving the user's model as it was: each module's train/eval mode and every
buffer come back after a block, also when it raises; and the one thing eval mode
cannot make independent of the batch (batch norm without running statistics) is
refused up front. :func:`~captum_deconvnet.layers.guarded` uses all three.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["buffers_kept", "check_batch_independent", "eval_mode"]


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


@contextmanager
def buffers_kept(model: nn.Module) -> Iterator[None]:
    """Every module's buffers as they were before the block, also when it raises:
    the same tensors (a buffer replaced, added or removed inside is undone) with
    the same shapes and values (a forward that counts its calls, say, ran once per
    occluded copy, where a plain call runs it once). Only what changed is written
    back, so buffers that cannot be written (expanded views, inference tensors)
    and that the forward leaves alone pass untouched."""
    entries = [
        (module, dict(module._buffers), set(module._non_persistent_buffers_set))
        for module in model.modules()
    ]
    saved = {
        id(b): b.detach().clone()
        for _, buffers, _ in entries
        for b in buffers.values()
        if b is not None
    }
    try:
        yield
    finally:
        for module, buffers, transient in entries:
            now = dict(module._buffers)  # a TorchScript module's cannot be cleared
            if now.keys() != buffers.keys() or any(
                now[name] is not b for name, b in buffers.items()
            ):
                module._buffers.clear()
                module._buffers.update(buffers)
            module._non_persistent_buffers_set.clear()
            module._non_persistent_buffers_set.update(transient)
        for _, buffers, _ in entries:
            for b in buffers.values():
                if b is not None:
                    _restore(b, saved[id(b)])


def _restore(buffer: Tensor, saved: Tensor) -> None:
    """Write ``saved`` back into ``buffer`` if the block changed its shape, dtype
    or values."""
    if buffer.dtype == saved.dtype and torch.equal(buffer, saved):
        return
    with torch.no_grad():
        if buffer.shape != saved.shape:
            buffer.resize_(saved.shape)
        buffer.copy_(saved)


def check_batch_independent(model: nn.Module) -> None:
    """Refuse a model whose output for one example depends on the rest of the
    batch even in eval mode.

    Raises:
        ValueError: naming the first batch norm without running statistics.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (
            module.running_mean is None
        ):
            raise ValueError(
                f"{name or 'the model'} ({type(module).__name__}) has no running "
                "statistics (track_running_stats=False), so even in eval mode its "
                "output for an example depends on the rest of the batch, and "
                "results would depend on how examples and occluded copies are "
                "batched. Give it running statistics (track_running_stats=True, "
                "then estimate them on data)"
            )
