"""Zeiler & Fergus (2014) as Captum attributions: switch-based deconvnet, occlusion."""

from .deconvnet import DeconvNet, FeatureMapDeconvNet, NeuronDeconvNet
from .display import normalize_projection, save_grid

__version__ = "0.1.0"

__all__ = [
    "DeconvNet",
    "FeatureMapDeconvNet",
    "NeuronDeconvNet",
    "normalize_projection",
    "save_grid",
]
