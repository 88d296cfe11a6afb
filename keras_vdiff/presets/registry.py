"""The preset registry: named, documented configurations of backbones and pipelines.

A preset is a name bound to a class, a config and (optionally) weights shipped
in ``keras_vdiff/presets/weights/``. Backbone families register their paper
sizes when their module is imported; ``keras_vdiff.presets.list()`` shows all.
"""

import copy
import os

_PRESETS = {}

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")


def register_preset(name, class_name, config, description, weights=None, kind="backbone", metadata=None):
    """Register a preset.

    Args:
        name: unique preset name, e.g. ``"dit_small_patch2"``.
        class_name: name of the class in ``keras_vdiff.models`` (or ``"VideoDiffusion"``).
        config: constructor keyword arguments.
        description: one line shown by ``keras-vdiff presets``.
        weights: file name under ``keras_vdiff/presets/weights/`` or None (random init).
        kind: ``"backbone"`` or ``"pipeline"``.
        metadata: free-form dict (paper, parameter count, training command, measured metrics).
    """
    if name in _PRESETS and _PRESETS[name]["config"] != config:
        raise ValueError(f"Preset {name!r} is already registered with a different config.")
    _PRESETS[name] = dict(
        name=name,
        class_name=class_name,
        config=dict(config),
        description=description,
        weights=weights,
        kind=kind,
        metadata=dict(metadata or {}),
    )


def has_preset(name):
    return isinstance(name, str) and name in _PRESETS


def get_preset(name):
    """A copy of the preset's record; a clear error listing valid names otherwise."""
    if not has_preset(name):
        raise ValueError(
            f"Unknown preset {name!r}. Valid presets: {', '.join(sorted(_PRESETS)) or '(none)'}; "
            "or pass a local preset directory written by `save_to_preset`."
        )
    return copy.deepcopy(_PRESETS[name])


def list_presets(kind=None, class_name=None):
    """Sorted preset names, optionally filtered by kind or class name."""
    return sorted(
        name
        for name, p in _PRESETS.items()
        if (kind is None or p["kind"] == kind) and (class_name is None or p["class_name"] == class_name)
    )


def weights_path(record):
    """Absolute path of a preset's shipped weights, or None."""
    if not record.get("weights"):
        return None
    return os.path.join(WEIGHTS_DIR, record["weights"])
