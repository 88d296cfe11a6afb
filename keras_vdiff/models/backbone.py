"""``VideoBackbone``: the base class of every keras_vdiff backbone.

A keras-hub ``Backbone`` (a functional model whose ``get_config`` holds the
constructor arguments), so ``save_to_preset(dir)`` / ``from_preset(dir)`` use
keras-hub's preset format, plus the project's registered preset names.

Contract (see docs/ARCHITECTURE.md and ``keras_vdiff.layers.conditioning``): inputs are a dict with
``latents``, ``timesteps`` and the condition (``class_labels`` or
``text_embeddings``/``text_mask``/``pooled_text``); attributes ``latent_shape``,
``is_video``, ``in_channels``, ``out_channels``, ``learn_sigma``, ``conditioning``,
``num_classes``, ``text_dim``, ``self_conditioning`` and ``num_extra_input_channels``
tell the task model how to drive it.
"""

import os

import keras
import numpy as np
import keras_hub

from keras_vdiff.atomic_files import staged_directory
from keras_vdiff.layers.conditioning import backbone_inputs
from keras_vdiff.models import lora, native_sizes
from keras_vdiff.models.remat import remat_blocks
from keras_vdiff.presets import pipeline_format, registry
from keras_vdiff.presets.loading import weights_to_load
# Moved to keras_vdiff.validation; kept importable here under their old names.
from keras_vdiff.validation import check_int as checked_int  # noqa: F401
from keras_vdiff.validation import check_keywords, constructor_arguments
from keras_vdiff.validation import check_pair as as_pair  # noqa: F401


class VideoBackbone(keras_hub.models.Backbone):
    """Base class: preset loading by registered name or local directory."""

    is_video = True
    conditioning = None
    num_classes = None
    text_dim = None
    self_conditioning = False
    num_extra_input_channels = 0

    def __new__(cls, *args, **kwargs):
        # Checked before the family's __init__ runs: Keras' functional model ignores unknown keywords,
        # so `Latte(hidden_dimm=64)` would silently build the default width. Name the typo instead.
        check_keywords(cls, kwargs, VideoBackbone, allowed=("inputs", "outputs", "remat"))
        return super().__new__(cls, *args, **kwargs)

    def __init__(self, *args, remat=False, **kwargs):
        """``remat=True`` checkpoints every block (``keras.RematScope``; ``models/remat.remat_blocks``)."""
        super().__init__(*args, **kwargs)
        self.remat = bool(remat)
        if self.remat:
            remat_blocks(self)

    @classmethod
    def constructor_arguments(cls):
        """The keyword arguments ``cls(...)`` accepts: its parameters (and those its ``**kwargs`` forward to
        its parent families') plus ``name``, ``trainable``, ``dtype`` and ``remat``."""
        return constructor_arguments(cls, VideoBackbone) + ["remat"]

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, dict):
            graph = native_sizes.graph_for(self, inputs)
            if graph is native_sizes.UNKNOWN_SIZE:  # a TensorFlow graph without static sizes: branch on them
                return native_sizes.call_by_runtime_shape(
                    self, inputs, lambda fixed: super(VideoBackbone, self).__call__(fixed, *args, **kwargs),
                    args, kwargs)
            self._check_inputs(inputs, graph.input)
            if graph is not self:
                return graph(inputs, *args, **kwargs)
        return super().__call__(inputs, *args, **kwargs)

    # === Native sizes (models/native_sizes.py) ===
    # A family whose positions are computed for the shape sets `native_sizes = True` and builds its graph in
    # `_forward(inputs, latent_shape)`; `at_shape` then gives it at any other shape with the same weights.
    native_sizes = False

    def _forward(self, inputs, latent_shape):
        """The family's forward pass on ``inputs`` (``keras.Input`` s) at ``latent_shape``: its outputs."""
        raise NotImplementedError(f"{type(self).__name__} has no native-size forward pass.")

    def _build_native_graph(self, values, latent_shape, dtype=None, **kwargs):
        """A native-size family's functional model at its training shape: keeps the config (``values``, the
        family's ``locals()``, which ``_forward`` reads), then ``_forward`` on the contract's inputs."""
        self.store_config(values)
        inputs = backbone_inputs(latent_shape, values["conditioning"], values.get("text_dim"))
        VideoBackbone.__init__(self, inputs=inputs, outputs=self._forward(inputs, latent_shape), dtype=dtype, **kwargs)

    def _token_grid(self, latent_shape):
        """``(token frames, (rows, cols))`` of the patches of video latents ``(F, H, W, C)``."""
        frames, height, width, _ = latent_shape
        return frames // getattr(self, "tubelet_size", 1), (height // self.patch_size, width // self.patch_size)

    def at_shape(self, latent_shape):
        """This backbone at another latent shape, sharing every weight (Sora's native sizes).

        A family with ``native_sizes`` (Latte, VideoDiT, GenTron, DiT) takes any frame
        count divisible by its ``tubelet_size`` and any height / width divisible by
        its ``patch_size``; its positions are computed for the shape (sin-cos tables,
        RoPE angles). Calling the backbone on latents of another shape uses this
        graph (built once per shape); at the training shape it is the backbone itself.

        Args:
            latent_shape: ``(frames, height, width[, channels])`` (``(height, width[, channels])``
                for an image backbone).

        Returns: a ``keras.Model`` with the backbone's inputs and layers at that shape.

        Example:
            >>> wide = latte.at_shape((10, 16, 24))          # trained on (10, 16, 16, 1)
            >>> wide({"latents": noisy, "timesteps": t, "class_labels": y}).shape
            (2, 10, 16, 24, 1)
        """
        return native_sizes.graph_at(self, latent_shape)

    def _check_inputs(self, inputs, spec=None):
        """Shape and range checks of a call's input dict, each error naming the input (cheap: static shapes only).

        Without them a wrong channel count surfaces as a Dense layer's matmul
        error, and a label out of range as NaN (JAX gathers out of bounds
        without raising) or, for -1, silently as the last table row.
        """
        spec = self.input if spec is None else spec
        if not isinstance(spec, dict):
            return
        unknown = sorted(set(inputs) - set(spec))
        if unknown:
            raise ValueError(f"{type(self).__name__} got unknown input(s) {unknown}; its inputs are {sorted(spec)}.")
        batch = {}
        for key, value in inputs.items():
            shape = getattr(value, "shape", None)
            if shape is None:
                continue
            shape, expected = tuple(shape), tuple(spec[key].shape)
            if len(shape) != len(expected) or any(
                e is not None and s is not None and int(s) != e for s, e in zip(shape[1:], expected[1:])
            ):
                raise ValueError(
                    f"Input `{key}` of {type(self).__name__} has shape {shape}; expected (batch,) + "
                    f"{expected[1:]} (None: any size)."
                )
            if shape and shape[0] is not None:
                batch[key] = int(shape[0])
        if len(set(batch.values())) > 1:
            raise ValueError(f"The inputs of {type(self).__name__} disagree on the batch size: {batch}.")
        if "text_mask" in inputs and "text_embeddings" in inputs:
            mask, embeddings = tuple(inputs["text_mask"].shape), tuple(inputs["text_embeddings"].shape)
            if None not in mask[:2] + embeddings[:2] and mask[:2] != embeddings[:2]:
                raise ValueError(
                    f"`text_mask` has shape {mask} but `text_embeddings` has {embeddings}: the mask must be "
                    "(batch, text_length) of the embeddings."
                )
        labels = inputs.get("class_labels")
        if isinstance(labels, (list, tuple, np.ndarray)) and self.num_classes is not None and np.size(labels):
            labels = np.asarray(labels)
            if labels.min() < 0 or labels.max() > self.num_classes:
                raise ValueError(
                    f"`class_labels` must lie in [0, {self.num_classes}] ({self.num_classes} is the null class "
                    f"of guidance), got values from {labels.min()} to {labels.max()}."
                )

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
            with pipeline_format.naming_weights_file(path):
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
        with pipeline_format.naming_weights_file(os.path.join(directory, pipeline_format.BACKBONE_WEIGHTS_FILE)):
            if not load_weights:
                return super(VideoBackbone, cls).from_preset(directory, load_weights=False, **kwargs)
            with weights_to_load():  # every weight comes from the file: skip the random initial values
                return super(VideoBackbone, cls).from_preset(directory, load_weights=True, **kwargs)

    def save_to_preset(self, preset_dir, max_shard_size=10):
        """keras-hub's preset folder (``config.json``, weights, ``metadata.json``), written atomically.

        The folder is staged and swapped in whole (``keras_vdiff.atomic_files.staged_directory``): an
        existing folder is replaced only if keras_vdiff wrote everything in it, so a user's own files
        are never deleted, and a killed save leaves the previous preset loadable.
        """
        with staged_directory(preset_dir) as staging:
            super().save_to_preset(staging, max_shard_size=max_shard_size)

    # === LoRA (keras-hub's enable_lora / save_lora_weights / load_lora_weights; models/lora.py) ===
    def default_lora_layer_names(self):
        """The Dense layers ``enable_lora`` adapts: attention projections and MLP layers (``lora.LORA_LAYER_NAMES``)."""
        return list(lora.LORA_LAYER_NAMES)

    def enable_lora(self, rank, target_layer_names=None):
        """Freeze every weight and add trainable rank-``rank`` LoRA pairs to the attention and MLP Dense layers.

        Args:
            rank: the rank of the low-rank update (a positive integer).
            target_layer_names: names of the Dense layers to adapt (default ``default_lora_layer_names()``).

        Example:
            >>> backbone.enable_lora(4)             # then compile and fit the task: only the LoRA pairs train
            >>> backbone.save_lora_weights("adapter.lora.h5")
        """
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"`rank` must be a positive integer, got {rank!r}.")
        super().enable_lora(rank, target_layer_names)
        if not lora.lora_variables(self):
            raise ValueError(f"`target_layer_names` {target_layer_names!r} names no Dense layer of this backbone.")
        lora.freeze_lora_biases(self)

    def save_lora_weights(self, filepath):
        """Write the LoRA pairs alone to ``filepath`` (``*.lora.h5``), atomically; an existing file is replaced
        only if keras_vdiff's ``save_lora_weights`` wrote it."""
        lora.save_lora_weights(self, filepath, super().save_lora_weights)

    def load_lora_weights(self, filepath):
        """Load LoRA pairs saved by ``save_lora_weights`` (enables LoRA at the file's rank when not enabled)."""
        super().load_lora_weights(filepath)
        lora.freeze_lora_biases(self)

    def describe(self):
        """One line: class, parameter count, latent shape and conditioning."""
        return (
            f"{type(self).__name__}: {self.count_params() / 1e6:.2f}M parameters, latents {self.latent_shape}, "
            f"conditioning={self.conditioning}, learn_sigma={self.learn_sigma}"
        )

    # === Config ===
    # A family lists its constructor arguments in CONFIG_KEYS, keeps them with `store_config(locals())`
    # at the end of its __init__ and inherits get_config; `input_shape` is written from `latent_shape`.
    CONFIG_KEYS = ()

    def store_config(self, values, **attributes):
        """Keep every ``CONFIG_KEYS`` entry of ``values`` (a family's ``locals()``) as an attribute of that name,
        then set the derived ``attributes`` (e.g. ``latent_shape``, ``out_channels``)."""
        for key in self.CONFIG_KEYS:
            if key != "input_shape" and key in values:
                setattr(self, key, values[key])
        for key, value in attributes.items():
            setattr(self, key, value)

    def get_config(self):
        config = super().get_config()
        for key in self.CONFIG_KEYS:
            config[key] = tuple(self.latent_shape) if key == "input_shape" else getattr(self, key)
        if getattr(self, "remat", False):
            config["remat"] = True
        return config


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
