"""The preset registry: named, documented configurations of backbones, autoencoders and pipelines.

A preset is a name bound to a class, a config and (optionally) weights shipped
in ``keras_vdiff/presets/weights/``. Backbone families register their paper
sizes when their package is imported; ``keras_vdiff.presets.list()`` shows all.

This module is on the lowest floor (``docs/ARCHITECTURE.md``): it imports
nothing of keras_vdiff, so every family can register into it without an import
cycle. It stores class *names*; the loaders (``VideoBackbone.from_preset``,
``VideoDiffusion.from_preset``) turn them into classes.
"""

import copy
import difflib
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


def register_presets(presets, kind="backbone"):
    """Register a family's preset dict: ``{name: {"class_name", "config", "description", ...}}``.

    The form a family package keeps its presets in (keras-hub's ``*_presets.py``):
    plain data, registered once by the package's ``__init__``. Each entry takes the
    keyword arguments of :func:`register_preset` (``kind`` defaults to this call's).

    Example:
        >>> register_presets({"dit_tiny": {"class_name": "DiT", "config": {...}, "description": "..."}})
    """
    for name, entry in presets.items():
        register_preset(name, **dict({"kind": kind}, **entry))


def has_preset(name):
    return isinstance(name, str) and name in _PRESETS


def close_matches(name, kind=None):
    """Registered names close to ``name`` (``difflib``), best first: the "did you mean" of a typo."""
    return difflib.get_close_matches(str(name), list_presets(kind=kind), n=5, cutoff=0.6)


def unknown_preset_message(name, kind=None):
    """The error text for a preset name that is neither registered nor a local directory."""
    names = list_presets(kind=kind)
    matches = close_matches(name, kind)
    what = f"{kind} preset" if kind else "preset"
    hint = f" Close matches: {', '.join(matches)}." if matches else ""
    return (
        f"Unknown {what} {name!r} (and no such local directory).{hint} "
        f"Valid names: {', '.join(names) or '(none registered)'}; or pass a directory written by `save_to_preset`."
    )


def get_preset(name):
    """A copy of the preset's record; an error listing close matches and all valid names otherwise."""
    if not has_preset(name):
        raise ValueError(unknown_preset_message(name))
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
