"""Preset registry: ``keras_vdiff.presets.list()`` names every registered preset."""

from keras_vdiff.presets.registry import get_preset, has_preset, list_presets, register_preset

# Importing the models registers their presets; the trained pipelines register when shipped.
import keras_vdiff.models  # noqa: E402,F401
import keras_vdiff.presets.pipelines  # noqa: E402,F401


def list(kind=None, class_name=None):  # noqa: A001 - public API name fixed by the design
    """All preset names (optionally only ``kind="backbone"|"pipeline"`` or one class)."""
    return list_presets(kind=kind, class_name=class_name)
