"""``VideoBackbone``: the base class of every keras_vdiff backbone.

A keras-hub ``Backbone`` (a functional model whose ``get_config`` holds the
constructor arguments), so ``save_to_preset(dir)`` / ``from_preset(dir)`` use
keras-hub's preset format, plus the project's registered preset names.

Contract (see docs/ARCHITECTURE.md): inputs are a dict with ``latents``, ``timesteps`` and
the condition (``class_labels`` or ``text_embeddings``/``text_mask``/``pooled_text``);
attributes ``latent_shape``, ``is_video``, ``in_channels``, ``out_channels``,
``learn_sigma``, ``conditioning``, ``num_classes``, ``text_dim``,
``self_conditioning`` and ``num_extra_input_channels`` tell the task model how to drive it.
"""

import os

import keras
import keras_hub

from keras_vdiff.presets import pipeline_format, registry


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
        """Build from a local preset directory or a registered preset name.

        Args:
            preset: a directory written by ``save_to_preset``: a backbone preset, or a
                pipeline preset of ``VideoDiffusion.save_to_preset`` (its backbone is
                taken out); or a name from ``keras_vdiff.presets.list()``. A local
                directory always wins over a registered name.
            load_weights: load shipped / saved weights (random init otherwise;
                registered presets without shipped weights are always random).
            **kwargs: config overrides, e.g. ``num_frames=16``; an unknown name raises a
                ``TypeError`` listing the class's constructor arguments.

        Example:
            >>> backbone = DiT.from_preset("dit_tiny")
            >>> backbone = Latte.from_preset("runs/mm/pipeline")          # the backbone of a pipeline
        """
        if isinstance(preset, (str, os.PathLike)) and os.path.isdir(preset):
            return cls._from_directory(os.fspath(preset), load_weights, kwargs)
        if not registry.has_preset(preset):
            raise ValueError(registry.unknown_preset_message(preset, kind="backbone"))
        record = registry.get_preset(preset)
        if record["kind"] != "backbone":
            raise ValueError(f"Preset {preset!r} is a {record['kind']} preset; load it with VideoDiffusion.from_preset.")
        model_cls = keras.saving.get_registered_object(f"keras_vdiff>{record['class_name']}")
        if model_cls is None or not issubclass(model_cls, cls):
            raise ValueError(
                f"Preset {preset!r} builds a {record['class_name']}, not a {cls.__name__}; "
                f"call {record['class_name']}.from_preset instead."
            )
        check_preset_kwargs(model_cls, kwargs)
        model = model_cls(**dict(record["config"], **kwargs))
        path = registry.weights_path(record)
        if load_weights and path is not None:
            model.load_weights(path)
        return model

    @classmethod
    def _from_directory(cls, directory, load_weights, kwargs):
        """A backbone from a keras-hub preset folder (a backbone preset or a pipeline preset)."""
        config_path = os.path.join(directory, pipeline_format.BACKBONE_CONFIG_FILE)
        if not os.path.isfile(config_path):
            if pipeline_format.preset_layout(directory) == "legacy_pipeline":
                raise ValueError(
                    f"{directory!r} is a pipeline preset in the older single-file layout "
                    f"({pipeline_format.LEGACY_CONFIG_FILE}), whose weights are stored for the whole pipeline: "
                    "load it with kv.VideoDiffusion.from_preset(directory).backbone, or save it again with "
                    "save_to_preset to get the keras-hub layout."
                )
            raise ValueError(
                f"`preset` directory {directory!r} has no {pipeline_format.BACKBONE_CONFIG_FILE}; "
                "was it written by save_to_preset?"
            )
        model_cls = pipeline_format.registered_class(pipeline_format.read_json(directory, "config.json"), config_path)
        if issubclass(model_cls, VideoBackbone):
            check_preset_kwargs(model_cls, kwargs)
        return super(VideoBackbone, cls).from_preset(directory, load_weights=load_weights, **kwargs)

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


def check_preset_kwargs(model_cls, kwargs):
    """Raise a ``TypeError`` naming unknown ``from_preset`` overrides and ``model_cls``'s constructor arguments."""
    if hasattr(model_cls, "constructor_arguments"):
        valid = model_cls.constructor_arguments()
    else:
        import inspect

        valid = [p.name for p in inspect.signature(model_cls.__init__).parameters.values()
                 if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(
            f"{model_cls.__name__}.from_preset got unexpected keyword argument(s) "
            f"{', '.join(map(repr, unknown))}. Valid arguments: {', '.join(valid)}."
        )
