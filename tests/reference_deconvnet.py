"""The paper's deconvnet written out by hand, layer by layer, as the tests' reference.

Forward: run each layer, recording max-pool switches and input sizes. Reverse: from a
seed at some layer, go back through the layers: unpool by scatter-adding each value at
its switch, rectify with a ReLU, filter with ``conv_transpose2d`` and the forward
weights (no bias), multiply by the transposed weights of linear layers, pass contrast
normalisation (and dropout in eval mode) unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def flatten_layers(model: nn.Module) -> list[nn.Module]:
    """The chain of layers of an ``nn.Sequential`` or of ``ZFNet`` (features, flatten,
    classifier)."""
    if isinstance(model, nn.Sequential):
        return list(model)
    return [*model.features, nn.Flatten(), *model.classifier]


def forward_record(
    layers: list[nn.Module], x: Tensor
) -> tuple[list[Tensor], list[dict]]:
    """Outputs of every layer and what the reverse pass needs of each."""
    outputs, records = [], []
    for layer in layers:
        record: dict = {"input_shape": x.shape}
        if isinstance(layer, nn.MaxPool2d):
            x, record["switches"] = F.max_pool2d(
                x,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                return_indices=True,
            )
        else:
            x = layer(x)
        outputs.append(x)
        records.append(record)
    return outputs, records


def unpool(signal: Tensor, switches: Tensor, input_shape: torch.Size) -> Tensor:
    n, c = signal.shape[:2]
    out = signal.new_zeros(n, c, input_shape[2] * input_shape[3])
    out.scatter_add_(2, switches.flatten(2), signal.flatten(2))
    return out.view(n, c, input_shape[2], input_shape[3])


def reverse_layer(layer: nn.Module, signal: Tensor, record: dict) -> Tensor:
    shape = record["input_shape"]
    if isinstance(layer, nn.MaxPool2d):
        return unpool(signal, record["switches"], shape)
    if isinstance(layer, nn.ReLU):
        return F.relu(signal)
    if isinstance(layer, nn.Conv2d):
        k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
        produced = (signal.shape[-1] - 1) * s - 2 * p + k
        extra = shape[-1] - produced  # rows the forward's stride dropped
        return F.conv_transpose2d(
            signal, layer.weight, stride=s, padding=p, output_padding=extra
        )
    if isinstance(layer, nn.Linear):
        return signal @ layer.weight
    if isinstance(layer, nn.Flatten):
        return signal.reshape(shape)
    if isinstance(layer, (nn.LocalResponseNorm, nn.Dropout)):
        return signal
    raise NotImplementedError(type(layer))


def reference_projection(model: nn.Module, x: Tensor, layer_index: int, seed) -> Tensor:
    """Project ``seed(output of layer layer_index)`` back to the input."""
    layers = flatten_layers(model)
    outputs, records = forward_record(layers, x)
    signal = seed(outputs[layer_index])
    for layer, record in zip(
        reversed(layers[: layer_index + 1]),
        reversed(records[: layer_index + 1]),
        strict=True,
    ):
        signal = reverse_layer(layer, signal, record)
    return signal


def one_hot_seed(target: int):
    def seed(output: Tensor) -> Tensor:
        return F.one_hot(torch.full((output.shape[0],), target), output.shape[1]).to(
            output
        )

    return seed


def strongest_seed(channel: int):
    """Keep only the largest activation of ``channel``, with its value."""

    def seed(output: Tensor) -> Tensor:
        out = torch.zeros_like(output)
        for i in range(output.shape[0]):
            fmap = output[i, channel]
            position = divmod(int(fmap.argmax()), fmap.shape[-1])
            out[i, channel][position] = fmap[position]
        return out

    return seed


def position_seed(channels: list[int], positions: list[tuple[int, int]]):
    """Keep only activation ``positions[i]`` of map ``channels[i]`` of example i."""

    def seed(output: Tensor) -> Tensor:
        out = torch.zeros_like(output)
        for i, channel in enumerate(channels):
            row, col = positions[i]
            out[i, channel, row, col] = output[i, channel, row, col]
        return out

    return seed
