"""Preset registry: ``keras_vdiff.presets.list()`` names every registered preset.

The registry is the lowest floor (``docs/ARCHITECTURE.md``): this package imports
no model. The model families register their presets when ``keras_vdiff`` imports
them (``import keras_vdiff`` imports every family), and the trained pipelines
shipped under ``weights/`` register here.
"""

from keras_vdiff.presets.registry import (
    close_matches,
    get_preset,
    has_preset,
    list_presets,
    register_preset,
    register_presets,
)
import keras_vdiff.presets.pipelines  # noqa: E402,F401 - registers the shipped trained pipelines


def list(kind=None, class_name=None):  # noqa: A001 - public API name fixed by the design
    """All preset names (optionally only ``kind="backbone"|"autoencoder"|"pipeline"`` or one class)."""
    return list_presets(kind=kind, class_name=class_name)
