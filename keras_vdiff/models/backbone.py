"""``VideoBackbone``: the base class of every keras_vdiff backbone.

A keras-hub ``Backbone`` (a functional model whose ``get_config`` holds the
constructor arguments), so ``save_to_preset(dir)`` / ``from_preset(dir)`` use
keras-hub's preset format, plus the project's registered preset names.

Contract (see DESIGN.md): inputs are a dict with ``latents``, ``timesteps`` and
the condition (``class_labels`` or ``text_embeddings``/``text_mask``/``pooled_text``);
attributes ``latent_shape``, ``is_video``, ``in_channels``, ``out_channels``,
``learn_sigma``, ``conditioning``, ``num_classes``, ``text_dim``,
``self_conditioning`` and ``num_extra_input_channels`` tell the task model how to drive it.
"""

import keras
import keras_hub

from keras_vdiff.presets import registry


class VideoBackbone(keras_hub.models.Backbone):
    """Base class: preset loading by registered name or local directory."""

    is_video = True
    conditioning = None
    num_classes = None
    text_dim = None
    self_conditioning = False
    num_extra_input_channels = 0

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Build from a registered preset name or a local preset directory.

        Args:
            preset: a name from ``keras_vdiff.presets.list()`` or a directory
                written by ``save_to_preset``.
            load_weights: load shipped / saved weights (random init otherwise;
                registered presets without shipped weights are always random).
            **kwargs: config overrides, e.g. ``num_frames=16``.

        Example:
            >>> backbone = DiT.from_preset("dit_tiny")
        """
        if registry.has_preset(preset):
            record = registry.get_preset(preset)
            if record["kind"] != "backbone":
                raise ValueError(f"Preset {preset!r} is a {record['kind']} preset; load it with VideoDiffusion.from_preset.")
            from keras_vdiff import models

            model_cls = getattr(models, record["class_name"])
            if not issubclass(model_cls, cls):
                raise ValueError(
                    f"Preset {preset!r} builds a {model_cls.__name__}, not a {cls.__name__}; "
                    f"call {model_cls.__name__}.from_preset instead."
                )
            config = dict(record["config"], **kwargs)
            model = model_cls(**config)
            path = registry.weights_path(record)
            if load_weights and path is not None:
                model.load_weights(path)
            return model
        return super().from_preset(preset, load_weights=load_weights, **kwargs)

    def describe(self):
        """One line: class, parameter count, latent shape and conditioning."""
        return (
            f"{type(self).__name__}: {self.count_params() / 1e6:.2f}M parameters, latents {self.latent_shape}, "
            f"conditioning={self.conditioning}, learn_sigma={self.learn_sigma}"
        )


def as_pair(value, name):
    """An int or a pair of ints as a (height, width) tuple, validated."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(f"`{name}` must be a positive int or a pair of positive ints, got {value!r}.")
    return value


def checked_int(value, name, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return value
