"""``save_to_preset`` / ``from_preset`` of the tasks: pipeline presets as keras-hub preset folders.

The folder layout is described in ``keras_vdiff.presets.pipeline_format``; in
short, the backbone's ``config.json`` + ``model.weights.h5`` as keras-hub writes
them (so ``kv.models.Latte.from_preset(folder)`` takes the backbone out of a
pipeline), ``task.json`` + ``task.weights.h5`` for the rest, and the text
preprocessor's files. Folders of the older single-file layout (``pipeline.json``)
keep loading.

Resolution order of ``from_preset(preset)``: a local directory always wins over
a shipped name; then a registered pipeline name; anything else is an error
listing close matches.
"""

import inspect
import os

import keras
import keras_hub

from keras_vdiff.atomic_files import staged_directory
from keras_vdiff.presets import pipeline_format, registry
from keras_vdiff.presets.loading import weights_to_load


def task_arguments(task_cls):
    """The keyword arguments ``task_cls.from_preset`` may override: the constructor's, along the MRO."""
    names = []
    for klass in task_cls.__mro__:
        if klass is keras.Model:
            break
        if "__init__" not in vars(klass):
            continue
        for name, parameter in inspect.signature(klass.__init__).parameters.items():
            if name not in ("self", "backbone") and name not in names and parameter.kind not in (
                parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD
            ):
                names.append(name)
    return names + [name for name in ("name", "dtype") if name not in names]


def check_overrides(task_cls, overrides):
    """Raise a ``TypeError`` naming unknown ``from_preset`` keyword arguments and the valid ones."""
    valid = task_arguments(task_cls)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise TypeError(
            f"{task_cls.__name__}.from_preset got unexpected keyword argument(s) "
            f"{', '.join(map(repr, unknown))}. Valid arguments: {', '.join(valid)}."
        )


class PipelinePresetMixin:
    """``save_to_preset`` and ``from_preset`` for a task holding ``backbone`` (and a text preprocessor)."""

    def save_to_preset(self, preset_dir, include_optimizer=True):
        """Write the whole pipeline to ``preset_dir`` (a keras-hub preset folder), atomically.

        The folder is written under a temporary name next to it and renamed
        (``keras_vdiff.atomic_files.staged_directory``), so an interrupted save
        never leaves a half-written preset; an existing preset there is replaced.

        Args:
            preset_dir: the directory to write.
            include_optimizer: keep the compile config and the optimizer state
                (AdamW moments, EMA, in ``task.weights.h5``) so ``from_preset``
                resumes training exactly; ``False`` writes only the model (a
                preset to ship, ~4x smaller).
        """
        if not include_optimizer and getattr(self, "optimizer", None) is not None:
            bare = type(self).from_config(self.get_config())
            bare.set_weights(self.get_weights())
            return bare.save_to_preset(preset_dir)
        with staged_directory(preset_dir) as staging:
            # keras-hub's own writer: config.json, metadata.json, model.weights.h5 of the backbone
            keras_hub.models.Backbone.save_to_preset(self.backbone, staging)
            pipeline_format.write_task_files(self, staging)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """A whole pipeline from a preset directory or a registered pipeline preset name.

        Args:
            preset: a directory written by ``save_to_preset`` (either layout; a
                local directory wins over a shipped name), or a name from
                ``keras_vdiff.presets.list(kind="pipeline")``.
            load_weights: load the preset's weights (random init otherwise).
            **kwargs: overrides of the task's constructor arguments, e.g.
                ``condition_dropout=0.0``; unknown names raise a ``TypeError``.

        Example:
            >>> model = VideoDiffusion.from_preset("latte_tiny_moving_mnist")
            >>> videos = model.generate(prompts=["The digit 3 is moving up and down"], steps=50)
        """
        if isinstance(preset, (str, os.PathLike)) and os.path.isdir(preset):
            return cls._from_directory(os.fspath(preset), load_weights, kwargs)
        if not registry.has_preset(preset):
            raise ValueError(registry.unknown_preset_message(preset, kind="pipeline"))
        record = registry.get_preset(preset)
        if record["kind"] != "pipeline":
            raise ValueError(
                f"Preset {preset!r} is a {record['kind']} preset; build it with "
                f"keras_vdiff.models.{record['class_name']}.from_preset and wrap it in {cls.__name__}."
            )
        shipped = registry.weights_path(record)
        if shipped is not None and os.path.isdir(shipped):
            # A trained preset ships as the directory its training run saved.
            return cls._from_directory(shipped, load_weights, kwargs)
        check_overrides(cls, kwargs)
        model = cls.from_config(dict(resolve_pipeline_config(record["config"]), **kwargs))
        if load_weights and shipped is not None:
            if not os.path.exists(shipped):
                raise ValueError(f"The weights of preset {preset!r} are missing: {shipped}.")
            with pipeline_format.naming_weights_file(shipped):
                model.load_weights(shipped)
        return model

    @classmethod
    def _from_directory(cls, directory, load_weights, overrides):
        if not load_weights:
            return cls._build_from_directory(directory, load_weights, overrides)
        with weights_to_load():  # every weight comes from the files: skip the random initial values
            return cls._build_from_directory(directory, load_weights, overrides)

    @classmethod
    def _build_from_directory(cls, directory, load_weights, overrides):
        task_config, path = pipeline_format.read_task_config(directory)
        check_overrides(pipeline_format.registered_class(task_config, path), overrides)
        task_config = dict(task_config, config=dict(task_config["config"], **overrides))
        if pipeline_format.preset_layout(directory) == "legacy_pipeline":
            model = keras.saving.deserialize_keras_object(task_config)
            weights = os.path.join(directory, pipeline_format.LEGACY_WEIGHTS_FILE)
            if load_weights:
                if not os.path.isfile(weights):
                    raise ValueError(f"The weights of preset {directory!r} are missing: {weights}.")
                with pipeline_format.naming_weights_file(weights):
                    model.load_weights(weights)
            return model
        with pipeline_format.naming_weights_file(os.path.join(directory, pipeline_format.BACKBONE_WEIGHTS_FILE)):
            backbone = keras_hub.models.Backbone.from_preset(directory, load_weights=load_weights)
        task_config["config"]["backbone"] = backbone
        model = keras.saving.deserialize_keras_object(task_config)
        preprocessor = getattr(model, "preprocessor", None)
        if preprocessor is not None and hasattr(preprocessor, "load_preset_assets"):
            preprocessor.load_preset_assets(directory)
        if load_weights:
            pipeline_format.load_task_weights(model, directory)
        return model


def resolve_pipeline_config(config):
    """A registered pipeline config -> a task ``from_config`` config.

    ``backbone`` (and ``text_encoder``) may be a backbone preset name or
    ``{"class_name": ..., "config": ...}`` naming a class of ``keras_vdiff``.
    """
    from keras_vdiff import models, text

    config = dict(config)
    backbone = config["backbone"]
    if isinstance(backbone, str):
        record = registry.get_preset(backbone)
        backbone = {"class_name": record["class_name"], "config": record["config"]}
    config["backbone"] = getattr(models, backbone["class_name"])(**backbone["config"])
    encoder = config.get("text_encoder")
    if isinstance(encoder, dict) and "module" not in encoder:
        config["text_encoder"] = getattr(text, encoder["class_name"])(**encoder["config"])
    return config
