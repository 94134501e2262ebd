"""Zeiler & Fergus (2014) as Captum attributions: switch-based deconvnet, occlusion."""

from .atlas import (
    LayerAtlas,
    cut_patches,
    feature_atlas,
    project_top_activations,
    save_atlas,
)
from .correspondence import (
    box_part_masks,
    correspondence,
    mean_hamming_distance,
    occlude,
    plot_correspondence,
    random_masks_like,
)
from .deconvnet import DeconvNet, FeatureMapDeconvNet, NeuronDeconvNet
from .diagnosis import (
    filter_spectrum,
    firing_rates,
    high_frequency_fraction,
    radial_spectrum,
    shift_variation,
    shifted_activity,
)
from .display import normalize_projection, save_grid
from .filters import filter_images, save_filters
from .invariance import InvarianceCurves, invariance_curves, plot_invariance, transform
from .layers import layer_outputs
from .occlusion import OcclusionSensitivity, SensitivityMaps
from .occlusion_maps import occlusion_figure, save_overlay, upsample_grid
from .receptive_field import ReceptiveField, receptive_field
from .topk import TopEntries, TopKActivations, top_activations

__version__ = "0.1.0"

__all__ = [
    "DeconvNet",
    "FeatureMapDeconvNet",
    "NeuronDeconvNet",
    "OcclusionSensitivity",
    "SensitivityMaps",
    "occlusion_figure",
    "save_overlay",
    "upsample_grid",
    "normalize_projection",
    "save_grid",
    "ReceptiveField",
    "receptive_field",
    "TopKActivations",
    "TopEntries",
    "layer_outputs",
    "LayerAtlas",
    "cut_patches",
    "feature_atlas",
    "save_atlas",
    "filter_images",
    "save_filters",
    "InvarianceCurves",
    "invariance_curves",
    "plot_invariance",
    "transform",
    "box_part_masks",
    "correspondence",
    "mean_hamming_distance",
    "occlude",
    "plot_correspondence",
    "random_masks_like",
    "filter_spectrum",
    "firing_rates",
    "high_frequency_fraction",
    "radial_spectrum",
    "shift_variation",
    "shifted_activity",
    "top_activations",
    "project_top_activations",
]
