"""The switch-based deconvnet of Zeiler & Fergus (2014, Sec. 2.1), Captum style."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum.attr import GradientAttribution, NeuronAttribution
from captum.log import log_usage
from torch import Tensor, nn
from torch.utils.checkpoint import CheckpointError

from ._inputs import (
    TargetType,
    as_tuple,
    check_submodule,
    extra_args,
    select_targets,
)
from ._layer_seeds import (
    NeuronSelector,
    feature_map_seed,
    layer_activation,
    select_neurons,
)
from .layers import guarded, model_output
from .rules import DeconvRules

__all__ = ["DeconvNet", "FeatureMapDeconvNet", "NeuronDeconvNet"]

Inputs = Tensor | tuple[Tensor, ...]


class _Deconv(GradientAttribution):
    """What the three classes share: the model, the rules and the reverse pass."""

    def __init__(self, model: nn.Module, normalization: str = "skip") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        DeconvRules(normalization)  # validates the name before anything runs
        if normalization == "skip":
            _check_no_cross_map_lrn(model)
        super().__init__(model)
        self.model = model
        self.normalization = normalization

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @classmethod
    def get_name(cls) -> str:
        return cls.__name__

    def _project(
        self,
        inputs: Inputs,
        additional_forward_args: Any,
        seed: Callable[[nn.Module, tuple], tuple[Tensor, Tensor]],
    ) -> Inputs:
        """Run ``seed(model, args)``, a forward pass returning ``(values,
        grad_of_values)``, under the deconvnet rules, then send ``grad_of_values``
        back to the inputs. The model runs through :func:`guarded`; gradients are
        on even inside ``torch.no_grad()`` or ``torch.inference_mode()``."""
        tensors, is_tuple = as_tuple(inputs)
        with (
            guarded(self.model) as model,
            torch.inference_mode(False),
            torch.enable_grad(),
        ):
            leaves = tuple(_usable(t).detach().requires_grad_() for t in tensors)
            extra = tuple(map(_usable, extra_args(additional_forward_args)))
            rules = DeconvRules(self.normalization)
            with rules:
                values, grad = seed(model, leaves + extra)
            rules.warn_unruled()
            if not values.requires_grad:
                raise _unreached()
            try:
                grads = torch.autograd.grad(values, leaves, grad, allow_unused=True)
            except (CheckpointError, RuntimeError) as error:
                # Both forms of torch.utils.checkpoint: the non-reentrant one finds
                # its recomputation differs, the reentrant one refuses .grad().
                if not (
                    isinstance(error, CheckpointError) or "use_reentrant" in str(error)
                ):
                    raise
                raise ValueError(
                    "the model recomputes checkpointed blocks in the backward pass "
                    "(torch.utils.checkpoint, e.g. densenet's memory_efficient=True), "
                    "where the deconvnet rules do not reach: build it without "
                    "checkpointing"
                ) from error
        if all(g is None for g in grads):
            raise _unreached()
        grads = tuple(
            torch.zeros_like(t) if g is None else g
            for t, g in zip(tensors, grads, strict=True)
        )
        return grads if is_tuple else grads[0]


def _unreached() -> ValueError:
    return ValueError(
        "no input reaches what is projected through autograd, so the projection "
        "would be all zeros: the model's forward does not use the inputs or cuts "
        "them off (a torch.no_grad() block or .detach() in forward, a frozen "
        "backbone run that way, say). Run that part of the forward with gradients"
    )


def _check_no_cross_map_lrn(model: nn.Module) -> None:
    """Refuse ``nn.CrossMapLRN2d``: it runs as an autograd function, out of the
    rules' sight, so ``normalization="skip"`` would backpropagate through it."""
    for name, module in model.named_modules():
        if isinstance(module, nn.CrossMapLRN2d):
            raise ValueError(
                f"{name or 'the model'} (CrossMapLRN2d) cannot be skipped on the way "
                "back, as normalization='skip' asks: it is an autograd function the "
                "rules do not see. Pass normalization='gradient' to backpropagate "
                "through it, or use nn.LocalResponseNorm"
            )


def _usable(value: Any) -> Any:
    """An inference tensor (made under ``torch.inference_mode()``) as an ordinary
    copy that autograd can record; anything else as it is."""
    if isinstance(value, Tensor) and value.is_inference():
        return value.clone()
    return value


class DeconvNet(_Deconv):
    """Project a model output back to the input through the paper's deconvnet.

    Reverse pass: unpool with the forward max-pool switches, rectify with a ReLU, filter
    with the transposed forward weights (no biases). Every ReLU the forward pass calls
    is rectified, including ``F.relu``/``torch.relu`` in ``forward``, which Captum's
    ``Deconvolution`` misses, and ``nn.Hardtanh(0, inf)`` and ``nn.LeakyReLU(0)``,
    which are ReLUs. Other activations (GELU, LeakyReLU, ReLU6, sigmoid, tanh, ...)
    and clamps at 0 (``x.clamp(min=0)``, which may guard a variance as
    well as be a ReLU) keep their gradient and a warning names them. A TorchScript
    model's operations are out of sight: it gets its plain gradient, as from Captum.
    The model runs in eval mode and is left as it was (see
    :func:`~captum_deconvnet.layers.guarded`).

    Args:
        model: the network (a compiled or ``DataParallel`` one runs the module it
            holds); it returns one ``(N, ...)`` tensor.
        normalization: ``"skip"`` (the paper) passes the reverse signal through local
            response normalisation unchanged; ``"gradient"`` backpropagates through it,
            which makes the result equal ``captum.attr.Deconvolution`` on models whose
            ReLUs are ``nn.ReLU`` modules.

    Raises:
        ValueError: with ``normalization="skip"``, for a model holding an
            ``nn.CrossMapLRN2d``, which the rules cannot skip.

    Example::

        >>> deconv = DeconvNet(model)
        >>> projection = deconv.attribute(images, target=labels)
    """

    @log_usage()
    def attribute(
        self,
        inputs: Inputs,
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> Inputs:
        """Deconvnet projection of the ``target`` output of each example.

        Args:
            inputs: a batch, or a tuple of batches the model takes together.
            target: output to project, per Captum's conventions: int, tuple, tensor of
                1 or N values, list of N ints or tuples; ``None`` for one output per
                example.
            additional_forward_args: further arguments of the model, not attributed.

        Returns:
            One projection per input tensor, with its shape and dtype (a tensor for
            a tensor).

        Raises:
            TypeError: if the model does not return one tensor.
            ValueError: for a target that does not fit the output, an unbatched
                input to a convolution of the model, a model that recomputes
                checkpointed blocks (``torch.utils.checkpoint``) in the backward
                pass, where the rules do not reach, or an output that no input
                reaches through autograd (``torch.no_grad()`` in ``forward``).
        """

        def seed(model: nn.Module, args: tuple) -> tuple[Tensor, Tensor]:
            output = model_output(model(*args), args[0].shape[0])
            selected = select_targets(output, target)
            return selected, torch.ones_like(selected)

        return self._project(inputs, additional_forward_args, seed)


class NeuronDeconvNet(_Deconv, NeuronAttribution):
    """Deconvnet projection of one neuron (or a sum of neurons) of ``layer``.

    Captum's ``NeuronDeconvolution`` semantics, with the rules of :class:`DeconvNet`.
    The forward pass stops once ``layer`` has run (the first time it runs).

    Args:
        model: the network.
        layer: a submodule of ``model`` whose output (or input) holds the neuron.
        normalization: as for :class:`DeconvNet`.
    """

    def __init__(self, model: nn.Module, layer: nn.Module, normalization: str = "skip"):
        check_submodule(model, layer)
        _Deconv.__init__(self, model, normalization)
        self.layer = layer

    @log_usage()
    def attribute(
        self,
        inputs: Inputs,
        neuron_selector: NeuronSelector,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
    ) -> Inputs:
        """Projection of the selected neuron for each example.

        Args:
            inputs: a batch, or a tuple of batches the model takes together.
            neuron_selector: an int (for a 2-D layer), a tuple of ints and slices
                indexing one example's activation (slices sum their neurons;
                negative ints count from the end, as in Captum's
                ``NeuronDeconvolution``), or a callable taking the layer's
                activation and returning one value per example.
            additional_forward_args: further arguments of the model, not attributed.
            attribute_to_neuron_input: select from the layer's input, not its output.

        Raises:
            TypeError: a ``neuron_selector`` of another kind (a float entry, a
                list), or a callable one that does not return a tensor.
            ValueError: a ``neuron_selector`` that does not fit the activation, a
                layer that does not run, or one that no input reaches through
                autograd.
        """

        def seed(model: nn.Module, args: tuple) -> tuple[Tensor, Tensor]:
            activation = layer_activation(
                model, self.layer, args, attribute_to_neuron_input
            )
            selected = select_neurons(activation, neuron_selector)
            return selected, torch.ones_like(selected)

        return self._project(inputs, additional_forward_args, seed)


class FeatureMapDeconvNet(_Deconv):
    """Pixel-space projections of single feature maps, as in the paper's figures.

    For each example and its channel, every other activation of ``layer`` is zeroed and
    the rest (the map's strongest activation, or the whole map) is passed down the
    deconvnet with its own value. A batch of (input, channel) pairs costs one forward
    and one reverse pass.

    Args:
        model: the network.
        layer: a submodule whose output is ``(N, C, ...)``.
        normalization: as for :class:`DeconvNet`.
    """

    def __init__(self, model: nn.Module, layer: nn.Module, normalization: str = "skip"):
        check_submodule(model, layer)
        super().__init__(model, normalization)
        self.layer = layer

    @log_usage()
    def attribute(
        self,
        inputs: Inputs,
        channels: int | Sequence[int] | Tensor,
        keep: str = "strongest",
        additional_forward_args: Any = None,
        positions: Tensor | Sequence[Sequence[int]] | None = None,
    ) -> Inputs:
        """Projection of feature map ``channels[i]`` of example ``i``.

        Args:
            inputs: a batch, or a tuple of batches the model takes together.
            channels: one channel for every example, or one per example (a batch
                ``k`` times longer, as ``NoiseTunnel`` makes it, takes each ``k``
                times in a row).
            keep: ``"strongest"`` keeps the map's largest activation alone (the
                paper's figures), ``"map"`` the whole map.
            additional_forward_args: further arguments of the model, not attributed.
            positions: ``(N, 2)``: the ``(row, col)`` of the one activation to keep in
                each example's map instead of its strongest (a top-k entry found
                across a dataset), or ``(1, 2)`` for all, following the batch as
                ``channels`` does; only with ``keep="strongest"`` and 2-D maps.

        Raises:
            TypeError: ``channels`` or ``positions`` that are not ints.
            ValueError: another ``keep``, ``channels`` or ``positions`` out of
                range or of another count, a layer that does not run, or one that
                no input reaches through autograd.
        """
        if keep not in ("strongest", "map"):
            raise ValueError(f"keep must be 'strongest' or 'map', got {keep!r}")
        if positions is not None and keep != "strongest":
            raise ValueError("positions picks single activations: use keep='strongest'")

        def seed(model: nn.Module, args: tuple) -> tuple[Tensor, Tensor]:
            activation = layer_activation(model, self.layer, args, False)
            return activation, feature_map_seed(activation, channels, keep, positions)

        return self._project(inputs, additional_forward_args, seed)
