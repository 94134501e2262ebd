"""Zeiler & Fergus (2014) as Captum attributions: switch-based deconvnet, occlusion."""

__version__ = "0.1.0"
