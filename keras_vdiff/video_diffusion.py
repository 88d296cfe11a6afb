"""``VideoDiffusion``: the task model that trains a backbone with ``fit`` and samples videos.

Training overrides ``compute_loss`` (the portable route: one code path for the
TensorFlow, JAX and PyTorch trainers). Per batch: videos to [-1, 1], encode to
latents if an autoencoder is set, draw timesteps and noise (optionally the
VideoFusion mixed prior), noise the latents, drop conditions with probability
``condition_dropout`` for classifier-free guidance, run the backbone (twice,
the first under stop-gradient, for self-conditioning backbones) and return
the process' loss.

Sampling (``generate``) runs a sampler from ``keras_vdiff.diffusion.samplers``
in a compiled loop (``keras_vdiff.diffusion.compile``), with classifier-free
guidance over one stacked conditional + null batch. Compiled loops are cached
per (shape, sampler, steps, options) and reused.

EMA: compile with an optimizer built with ``use_ema=True`` and train with
``keras.callbacks.SwapEMAWeights(swap_on_epoch=True)`` to evaluate with the
averaged weights; after training call
``model.optimizer.finalize_variable_values(model.trainable_variables)`` to keep
the EMA weights for sampling.
"""

import json
import logging
import os

import keras
import numpy as np
from keras import ops

from keras_vdiff.diffusion.compile import SamplingLoop, backend_seed
from keras_vdiff.diffusion.flow_matching import FlowMatching
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.diffusion.guidance import combine_guidance, guidance_scales
from keras_vdiff.diffusion.noise import mixed_video_noise
from keras_vdiff.diffusion.samplers import get_sampler
from keras_vdiff.presets import registry
from keras_vdiff.atomic_files import staged_directory
# The pixel convention and the batch loss live one floor down (the autoencoders use them too).
from keras_vdiff.conventions import batch_loss, unit_range_to_uint8, videos_to_unit_range  # noqa: F401

CONFIG_FILE = "pipeline.json"
WEIGHTS_FILE = "model.weights.h5"

logger = logging.getLogger("keras_vdiff")

PROCESSES = {"GaussianDiffusion": GaussianDiffusion, "FlowMatching": FlowMatching}
TEXT_KEYS = ("text_embeddings", "text_mask", "pooled_text")


def _as_process(process, backbone):
    if process is None:
        return GaussianDiffusion("cosine", prediction="epsilon", learn_sigma=bool(backbone.learn_sigma))
    if isinstance(process, dict):
        name = process.get("class_name")
        if name not in PROCESSES:
            raise ValueError(f"`process` config names {name!r}; valid: {sorted(PROCESSES)}.")
        return PROCESSES[name](**process["config"])
    if not isinstance(process, (GaussianDiffusion, FlowMatching)):
        raise TypeError(f"`process` must be a GaussianDiffusion or FlowMatching, got {type(process).__name__}.")
    return process


@keras.saving.register_keras_serializable(package="keras_vdiff")
class VideoDiffusion(keras.Model):
    """A backbone, a diffusion process and optional text encoder / autoencoder, trainable with ``fit``.

    Args:
        backbone: a ``VideoBackbone`` following the backbone contract (video or image).
        process: ``GaussianDiffusion`` or ``FlowMatching`` (default: cosine Gaussian
            diffusion, epsilon prediction, learned sigma iff the backbone has it).
        text_encoder: callable ``encoder(prompts or token ids) -> (embeddings, mask, pooled)``;
            needed for ``captions`` in batches and ``prompts`` in ``generate``.
        autoencoder: object with ``encode(videos) -> latents`` and
            ``decode(latents) -> videos`` (videos in [-1, 1]); training and
            sampling then happen in its latent space. It is frozen
            (``trainable = False``): train it first, e.g. with its own ``fit``.
        condition_dropout: probability of replacing the condition by the null
            condition during training (classifier-free guidance, Ho & Salimans 2022).
        self_conditioning_prob: for self-conditioning backbones, probability that
            the previous latents come from a first pass under stop-gradient
            (Chen et al. 2023: 0.9); zeros otherwise.
        noise_shared_weight: lambda of the VideoFusion mixed noise prior for the
            training noise and the default initial sampling noise (0: i.i.d.).
        seed: seed of the training randomness (timesteps, noise, dropout).

    Batches (``fit``): dicts with ``videos`` (uint8 in [0, 255] or float in [-1, 1];
    ``(B, F, H, W, C)``, or ``(B, H, W, C)`` for image backbones, whose frames are
    otherwise folded into the batch) and ``labels`` (int, class backbones), or
    ``captions`` (token ids for the text encoder) or precomputed
    ``text_embeddings`` / ``text_mask`` / ``pooled_text`` (text backbones).

    Example:
        >>> backbone = kv.models.DiT.from_preset("dit_tiny")
        >>> model = VideoDiffusion(backbone, GaussianDiffusion("cosine"))
        >>> model.compile(optimizer=keras.optimizers.AdamW(1e-3, use_ema=True))
        >>> model.fit(dataset, epochs=5, callbacks=[keras.callbacks.SwapEMAWeights(swap_on_epoch=True)])
        >>> videos = model.generate(labels=[0, 1, 2, 3], steps=25, sampler="ddim", guidance_scale=4.0)
    """

    # Whether this task fills a backbone's extra input channels (masked-frame conditioning does).
    fills_extra_input_channels = False

    def __init__(
        self,
        backbone,
        process=None,
        text_encoder=None,
        autoencoder=None,
        condition_dropout=0.1,
        self_conditioning_prob=0.9,
        noise_shared_weight=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= condition_dropout < 1.0:
            raise ValueError(f"`condition_dropout` must lie in [0, 1), got {condition_dropout!r}.")
        if not 0.0 <= self_conditioning_prob <= 1.0:
            raise ValueError(f"`self_conditioning_prob` must lie in [0, 1], got {self_conditioning_prob!r}.")
        if not 0.0 <= noise_shared_weight <= 1.0:
            raise ValueError(f"`noise_shared_weight` must lie in [0, 1], got {noise_shared_weight!r}.")
        self.backbone = backbone
        self.process = _as_process(process, backbone)
        if bool(backbone.learn_sigma) != self.process.learn_sigma:
            raise ValueError(
                f"The backbone has learn_sigma={backbone.learn_sigma} but the process has "
                f"learn_sigma={self.process.learn_sigma}; they must agree (variance channels)."
            )
        if getattr(backbone, "num_extra_input_channels", 0) and not self.fills_extra_input_channels:
            raise ValueError(
                "The backbone takes extra input channels (masked-frame conditioning), which VideoDiffusion "
                "cannot fill: use keras_vdiff.diffusion.FrameConditionedDiffusion."
            )
        self.text_encoder = text_encoder
        if autoencoder is not None and getattr(autoencoder, "trainable", False):
            # encode() stops gradients; frozen, AdamW's weight decay cannot shrink its weights either.
            autoencoder.trainable = False
        self.autoencoder = autoencoder
        self.condition_dropout = float(condition_dropout)
        self.self_conditioning_prob = float(self_conditioning_prob)
        self.noise_shared_weight = float(noise_shared_weight)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._sampling_loops = {}
        self.sampling_mode = None
        self.built = True

    # --- helpers ------------------------------------------------------------------------------
    @property
    def conditioning(self):
        return self.backbone.conditioning

    @property
    def is_video(self):
        return bool(self.backbone.is_video)

    def _previous_latents_shape(self):
        inputs = self.backbone.input
        if not isinstance(inputs, dict) or "previous_latents" not in inputs:
            raise ValueError("A self-conditioning backbone must take a `previous_latents` input.")
        return tuple(inputs["previous_latents"].shape[1:])

    def _backbone_output(self, inputs, training):
        output = self.backbone(inputs, training=training)
        if self.backbone.self_conditioning:
            return output["output"], output["latents"]
        return output, None

    def _encode_text(self, captions):
        if self.text_encoder is None:
            raise ValueError("Batches with `captions` (or `prompts`) need a `text_encoder`.")
        embeddings, mask, pooled = self.text_encoder(captions)
        return {
            "text_embeddings": ops.cast(embeddings, "float32"),
            "text_mask": ops.cast(mask, "float32"),
            "pooled_text": ops.cast(pooled, "float32"),
        }

    def _training_conditions(self, x, batch_size, repeats):
        """The condition inputs of a batch, with condition dropout applied."""
        conditioning = self.conditioning
        if conditioning is None:
            return {}
        drop = keras.random.uniform((batch_size,), seed=self.seed_generator) < self.condition_dropout
        if conditioning == "class":
            if "labels" not in x:
                raise ValueError("A class-conditional backbone needs `labels` in every batch.")
            labels = ops.cast(ops.reshape(x["labels"], (-1,)), "int32")
            if repeats > 1:
                labels = ops.repeat(labels, repeats, axis=0)
            null = ops.full((batch_size,), self.backbone.num_classes, dtype="int32")
            return {"class_labels": ops.where(drop, null, labels)}
        if all(key in x for key in TEXT_KEYS):
            text = {key: ops.cast(x[key], "float32") for key in TEXT_KEYS}
        elif "captions" in x:
            text = self._encode_text(x["captions"])
        else:
            raise ValueError(
                "A text-conditional backbone needs `captions` (with a text encoder) or "
                f"precomputed {TEXT_KEYS} in every batch."
            )
        if repeats > 1:
            text = {key: ops.repeat(value, repeats, axis=0) for key, value in text.items()}
        keep = 1.0 - ops.cast(drop, "float32")
        return {
            "text_embeddings": text["text_embeddings"] * keep[:, None, None],
            "text_mask": text["text_mask"] * keep[:, None],
            "pooled_text": text["pooled_text"] * keep[:, None],
        }

    def _training_latents(self, videos):
        """[-1, 1] videos of a batch -> latents shaped like the backbone's input; also the frame repeat."""
        repeats = 1
        if not self.is_video and len(videos.shape) == 5:
            frames = videos.shape[1]
            videos = ops.reshape(videos, (-1,) + tuple(videos.shape[2:]))
            repeats = frames
        if self.autoencoder is not None:
            videos = ops.cast(self.autoencoder.encode(videos), "float32")
        expected = tuple(self.backbone.latent_shape)
        if tuple(videos.shape[1:]) != expected:
            raise ValueError(
                f"Batch latents have shape {tuple(videos.shape[1:])} but the backbone expects {expected} "
                "(per example)."
            )
        return videos, repeats

    # --- training -----------------------------------------------------------------------------
    def call(self, inputs, training=False):
        """The denoiser when given backbone inputs (``latents``, ``timesteps``, ...), else a placeholder.

        ``fit`` calls the model on each batch before ``compute_loss``; the loss
        itself (noising, dropout, forward) is computed in ``compute_loss``, so on
        a training batch this returns zeros of shape (batch,).
        """
        if isinstance(inputs, dict) and "latents" in inputs and "timesteps" in inputs:
            return self.backbone(inputs, training=training)
        first = inputs["videos"] if isinstance(inputs, dict) else inputs
        return ops.zeros((ops.shape(first)[0],), dtype="float32")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean diffusion loss of a batch dict ``x`` (see the class docstring)."""
        if not isinstance(x, dict) or "videos" not in x:
            raise ValueError("VideoDiffusion batches must be dicts with a `videos` entry.")
        latents, repeats = self._training_latents(videos_to_unit_range(x["videos"]))
        batch_size = ops.shape(latents)[0]
        t = self.process.sample_timesteps(batch_size, seed=self.seed_generator)
        noise = mixed_video_noise(
            tuple(ops.shape(latents)), shared_weight=self.noise_shared_weight, seed=self.seed_generator
        )
        x_t = self.process.add_noise(latents, noise, t)
        output = self._denoise_for_loss(x, latents, noise, x_t, t, repeats, training)
        per_example = self.process.compute_loss(output, latents, noise, x_t, t)
        return batch_loss(per_example, sample_weight, self.losses)

    def _denoise_for_loss(self, x, latents, noise, x_t, t, repeats, training):
        """The backbone's prediction for the noisy training latents ``x_t`` (the loss compares it to its target).

        Builds the backbone inputs (timesteps, conditions with dropout) and runs
        the self-conditioning first pass where the backbone has one. Subclasses
        that feed the backbone more (e.g. known frames) override this hook only;
        noising and the loss stay in ``compute_loss``.
        """
        batch_size = ops.shape(latents)[0]
        inputs = {"latents": x_t, "timesteps": self.process.model_timesteps(t)}
        inputs.update(self._training_conditions(x, batch_size, repeats))
        if self.backbone.self_conditioning:
            previous = ops.zeros((batch_size,) + self._previous_latents_shape(), dtype="float32")
            _, first_latents = self._backbone_output(dict(inputs, previous_latents=previous), training)
            use = keras.random.uniform((batch_size,), seed=self.seed_generator) < self.self_conditioning_prob
            use = ops.reshape(ops.cast(use, "float32"), (-1,) + (1,) * (len(previous.shape) - 1))
            inputs["previous_latents"] = ops.stop_gradient(ops.cast(first_latents, "float32")) * use
        output, _ = self._backbone_output(inputs, training)
        return output

    # --- sampling -----------------------------------------------------------------------------
    def _sampling_conditions(self, labels, prompts, text_embeddings, batch_size, use_guidance):
        conditioning = self.conditioning
        if conditioning is None:
            return {}, batch_size
        if conditioning == "class":
            if labels is None:
                raise ValueError("A class-conditional model needs `labels` to generate.")
            labels = np.asarray(labels, dtype=np.int32).reshape(-1)
            num_classes = self.backbone.num_classes
            if labels.min() < 0 or labels.max() > num_classes:
                raise ValueError(f"`labels` must lie in [0, {num_classes}] ({num_classes} = null), got {labels}.")
            batch = len(labels)
            if use_guidance:
                labels = np.concatenate([labels, np.full((batch,), num_classes, np.int32)])
            return {"class_labels": ops.convert_to_tensor(labels, "int32")}, batch
        if text_embeddings is not None:
            text = {key: ops.cast(ops.convert_to_tensor(text_embeddings[key]), "float32") for key in TEXT_KEYS}
        elif prompts is not None:
            text = self._encode_text(list(prompts) if not isinstance(prompts, str) else [prompts])
        else:
            raise ValueError("A text-conditional model needs `prompts` (with a text encoder) or `text_embeddings`.")
        batch = int(ops.shape(text["text_embeddings"])[0])
        if use_guidance:
            text = {key: ops.concatenate([value, ops.zeros_like(value)], axis=0) for key, value in text.items()}
        return text, batch

    def _sampling_step_fn(self, sampler, use_guidance, batch):
        """The pure per-step function of the loop: ``(i, state, args, noise) -> state``."""
        prediction_channels = self.process.prediction_channels(self.backbone.out_channels)
        self_conditioning = bool(self.backbone.self_conditioning)
        rows = 2 * batch if use_guidance else batch

        def step(i, state, args, noise):
            scale = ops.take(args["guidance_scales"], i)

            def model_fn(x, t, carry):
                latents = ops.concatenate([x, x], axis=0) if use_guidance else x
                inputs = {"latents": latents, "timesteps": ops.ones((rows,), dtype="float32") * t}
                inputs.update(args["conditions"])
                if self_conditioning:
                    inputs["previous_latents"] = carry[0]
                output, new_latents = self._backbone_output(inputs, training=False)
                if self_conditioning:
                    carry = (ops.cast(new_latents, "float32"),)
                if use_guidance:
                    output = combine_guidance(output, scale, prediction_channels)
                return ops.cast(output, "float32"), carry

            return sampler.step(model_fn, i, state, noise)

        return step

    def generate(
        self,
        labels=None,
        prompts=None,
        num_frames=None,
        steps=50,
        sampler="ddim",
        guidance_scale=4.0,
        seed=0,
        thresholding=None,
        guidance_schedule="constant",
        batch_size=1,
        text_embeddings=None,
        noise_shared_weight=None,
        compile="auto",
        progress=False,
        return_latents=False,
        **sampler_options,
    ):
        """Sample videos.

        Args:
            labels: class labels (class-conditional backbones), one video per label.
            prompts: strings for the text encoder (text-conditional backbones).
            num_frames: video frames to generate; must match the backbone's frame count
                unless its input accepts any (image backbones give 1 frame); with a
                temporally compressing autoencoder, ``1 + k * m`` video frames.
            steps: number of sampler steps.
            sampler: ``"ddpm"``, ``"ddim"``, ``"euler"``, ``"heun"`` or ``"dpmpp_2m"``.
            guidance_scale: classifier-free guidance scale; 1 (or an unconditional
                backbone) runs without the null half.
            seed: integer seed of the initial and per-step noise.
            thresholding: ``None``, ``"static"``, ``"dynamic"`` or a dict (x0 thresholding).
            guidance_schedule: ``"constant"`` or ``"oscillating"`` (Imagen Video,
                alternating ``guidance_scale`` and 1).
            batch_size: number of videos of an unconditional backbone.
            text_embeddings: dict of precomputed ``text_embeddings``, ``text_mask``, ``pooled_text``.
            noise_shared_weight: mixed-noise lambda of the initial noise (default: the model's).
            compile: ``True`` runs the compiled loop, ``False`` the eager reference
                loop; ``"auto"`` (default) compiles on JAX and TensorFlow and runs
                eagerly on PyTorch, where ``torch.compile`` of the step costs one to
                a few minutes on a CPU before the first step, and the compiled step,
                broken into many graphs inside Keras, was no faster than eager in
                ``benchmarks/`` (not measured on a GPU).
            progress: show a progress bar where the loop runs step by step.
            return_latents: return the float32 latents instead of uint8 videos.
            **sampler_options: ``eta`` (ddim), ``variance`` (ddpm), ``timestep_spacing``.

        Returns: numpy uint8 ``(B, F, H, W, C)`` (F = 1 for image backbones).
        """
        if compile == "auto":
            compile = keras.backend.backend() != "torch"
        elif not isinstance(compile, bool):
            raise ValueError(f"`compile` must be True, False or 'auto', got {compile!r}.")
        use_guidance = self.conditioning is not None and guidance_scale != 1.0
        conditions, batch = self._sampling_conditions(labels, prompts, text_embeddings, batch_size, use_guidance)
        latent_shape = tuple(self.backbone.latent_shape)
        if num_frames is not None and self.is_video and hasattr(self.autoencoder, "latent_num_frames"):
            num_frames = self.autoencoder.latent_num_frames(num_frames)  # e.g. 1 + 4m video frames -> 1 + m latents
        if num_frames is not None:
            if not self.is_video and num_frames != 1:
                raise ValueError(f"An image backbone generates 1 frame, got `num_frames`={num_frames}.")
            if self.is_video and num_frames != latent_shape[0]:
                frames_input = self.backbone.input["latents"].shape[1]
                if frames_input is not None:
                    raise ValueError(
                        f"This backbone was built for {latent_shape[0]} frames, got `num_frames`={num_frames}."
                    )
                latent_shape = (num_frames,) + latent_shape[1:]
        shape = (batch,) + latent_shape
        sampler_instance = get_sampler(sampler, self.process, steps, thresholding=thresholding, **sampler_options)
        key = (
            shape,
            sampler,
            steps,
            repr(sorted(sampler_options.items())),
            repr(thresholding),
            use_guidance,
            compile,
        )
        loop = self._sampling_loops.get(key)
        if loop is None:
            step_fn = self._sampling_step_fn(sampler_instance, use_guidance, batch)
            loop = SamplingLoop(
                step_fn,
                steps,
                sampler_instance.stochastic,
                shape,
                self.backbone.variables,
                compile=compile,
                progress=progress,
            )
            self._sampling_loops[key] = loop
        loop.progress = progress

        shared = self.noise_shared_weight if noise_shared_weight is None else noise_shared_weight
        x_T = mixed_video_noise(shape, shared_weight=shared, seed=int(seed))
        model_carry = ()
        if self.backbone.self_conditioning:
            rows = 2 * batch if use_guidance else batch
            model_carry = (ops.zeros((rows,) + self._previous_latents_shape(), dtype="float32"),)
        scales = guidance_scales(steps, guidance_scale, guidance_schedule)
        args = {"conditions": conditions, "guidance_scales": ops.convert_to_tensor(scales)}
        state = sampler_instance.initial_state(x_T, model_carry)
        state = loop(state, args, backend_seed(int(seed) + 1))
        if self.sampling_mode != loop.mode:
            logger.info("VideoDiffusion.generate: sampling loop runs as %s.", loop.mode)
        self.sampling_mode = loop.mode
        latents = sampler_instance.result(state)
        if return_latents:
            return np.asarray(ops.convert_to_numpy(latents))
        videos = latents if self.autoencoder is None else self.autoencoder.decode(latents)
        videos = np.asarray(ops.convert_to_numpy(ops.cast(videos, "float32")))
        if not self.is_video:
            videos = videos[:, None]
        return unit_range_to_uint8(videos)

    # --- serialization ------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            process={"class_name": type(self.process).__name__, "config": self.process.get_config()},
            text_encoder=None if self.text_encoder is None else keras.saving.serialize_keras_object(self.text_encoder),
            autoencoder=None if self.autoencoder is None else keras.saving.serialize_keras_object(self.autoencoder),
            condition_dropout=self.condition_dropout,
            self_conditioning_prob=self.self_conditioning_prob,
            noise_shared_weight=self.noise_shared_weight,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "text_encoder", "autoencoder"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    # --- presets ------------------------------------------------------------------------------
    def save_to_preset(self, preset_dir, include_optimizer=True):
        """Write the whole pipeline (config + weights) to ``preset_dir``, atomically.

        The directory is written under a temporary name next to it and renamed,
        so an interrupted save never leaves a half-written preset. An existing
        directory is replaced.

        Args:
            preset_dir: the directory to write.
            include_optimizer: keep the compile config and the optimizer state
                (AdamW moments, EMA) so ``from_preset`` resumes training exactly;
                ``False`` writes only the model (a preset to ship, ~4x smaller).
        """
        if not include_optimizer and getattr(self, "optimizer", None) is not None:
            bare = type(self).from_config(self.get_config())
            bare.set_weights(self.get_weights())
            return bare.save_to_preset(preset_dir)
        with staged_directory(preset_dir) as staging:
            with open(os.path.join(staging, CONFIG_FILE), "w") as file:
                json.dump(
                    {"class_name": "VideoDiffusion", "config": keras.saving.serialize_keras_object(self)},
                    file,
                    indent=2,
                )
            self.save_weights(os.path.join(staging, WEIGHTS_FILE))

    @classmethod
    def from_preset(cls, preset, load_weights=True):
        """A whole pipeline from a registered pipeline preset name or a ``save_to_preset`` directory.

        Args:
            preset: a name from ``keras_vdiff.presets.list(kind="pipeline")`` or a directory.
            load_weights: load the preset's weights (random init otherwise).

        Example:
            >>> model = VideoDiffusion.from_preset("latte_tiny_moving_mnist")
            >>> videos = model.generate(prompts=["The digit 3 is moving up and down"], steps=50)
        """
        if registry.has_preset(preset):
            record = registry.get_preset(preset)
            if record["kind"] != "pipeline":
                raise ValueError(
                    f"Preset {preset!r} is a backbone preset; build it with "
                    f"keras_vdiff.models.{record['class_name']}.from_preset and wrap it in VideoDiffusion."
                )
            shipped = registry.weights_path(record)
            if shipped is not None and os.path.isdir(shipped):
                # A trained preset ships as the directory its training run saved.
                return cls.from_preset(shipped, load_weights=load_weights)
            model = cls.from_config(_resolve_pipeline_config(record["config"]))
            weights = shipped
        elif isinstance(preset, str) and os.path.isdir(preset):
            config_path = os.path.join(preset, CONFIG_FILE)
            if not os.path.exists(config_path):
                raise ValueError(f"`preset` directory {preset!r} has no {CONFIG_FILE}; was it written by save_to_preset?")
            with open(config_path) as file:
                model = keras.saving.deserialize_keras_object(json.load(file)["config"])
            weights = os.path.join(preset, WEIGHTS_FILE)
        else:
            pipelines = registry.list_presets(kind="pipeline")
            raise ValueError(
                f"`preset` must be a pipeline preset name ({', '.join(pipelines) or 'none registered'}) "
                f"or a directory written by save_to_preset, got {preset!r}."
            )
        if load_weights and weights is not None:
            if not os.path.exists(weights):
                raise ValueError(f"The weights of preset {preset!r} are missing: {weights}.")
            model.load_weights(weights)
        return model


def _resolve_pipeline_config(config):
    """A registered pipeline config -> a ``VideoDiffusion.from_config`` config.

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
