"""``VideoDiffusion``: the task model that trains a backbone with ``fit`` and samples videos.

Training overrides ``compute_loss`` (the portable route: one code path for the
TensorFlow, JAX and PyTorch trainers). Per batch: videos to [-1, 1], encode to
latents if an autoencoder is set, draw timesteps and noise (optionally the
VideoFusion mixed prior), noise the latents, drop conditions with probability
``condition_dropout`` for classifier-free guidance, run the backbone (twice,
the first under stop-gradient, for self-conditioning backbones) and return
the process' loss.

Sampling (``generate``) is three steps a subclass can override one by one:
``prepare_generation`` (checked conditions with their null rows, the latent
shape, the seed), ``sample_latents`` (a sampler of ``keras_vdiff.diffusion.samplers``
in a compiled loop, ``keras_vdiff.tasks.sampling``; compiled loops are cached
per shape and options) and ``decode_latents`` (autoencoder, uint8). The
conditioning contract's task side is ``keras_vdiff.tasks.conditioning``; presets
are ``keras_vdiff.tasks.pipeline_presets``.

EMA: compile with an optimizer built with ``use_ema=True`` and train with
``keras.callbacks.SwapEMAWeights(swap_on_epoch=True)`` to evaluate with the
averaged weights; after training call
``model.optimizer.finalize_variable_values(model.trainable_variables)`` to keep
the EMA weights for sampling.
"""

import logging

import keras
import numpy as np
from keras import ops

from keras_vdiff.data.pipelines import fit_input
from keras_vdiff.diffusion.flow_matching import FlowMatching
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.diffusion.noise import mixed_video_noise
from keras_vdiff.tasks import conditioning as contract
from keras_vdiff.tasks.pipeline_presets import PipelinePresetMixin
from keras_vdiff.tasks.replicas import global_batch_draw, replica_uniform, scaled_for_replicas
from keras_vdiff.tasks.native_sizes import native_size_latents, prepared_buckets
from keras_vdiff.tasks.sampling import checked_default_sampler, run_sampler, sampling_latent_shape
from keras_vdiff.tasks.text_to_video_preprocessor import as_preprocessor
from keras_vdiff.validation import check_keywords

logger = logging.getLogger("keras_vdiff")

PROCESSES = {"GaussianDiffusion": GaussianDiffusion, "FlowMatching": FlowMatching}
# The parts of the state Keras' JAX trainer takes out of a model, in the order of `_get_jax_state`.
JAX_STATE_NAMES = ("trainable_variables", "non_trainable_variables", "optimizer_variables", "metrics_variables")


def record_jax_state(model, state, wanted):
    """Keep the state Keras' JAX trainer just took out of ``model`` where its ``jax_state_sync`` looks.

    The trainer takes the variables' values out of the model before the first step
    and puts them back from ``_jax_state``, which it sets only after a step
    succeeded: a first step that fails (a wrong input shape) left every weight
    empty. Recorded at once, the trainer's ``finally: jax_state_sync()`` always has
    it to put back.
    """
    names = [name for name, want in zip(JAX_STATE_NAMES, wanted) if want]
    model._jax_state = dict(zip(names, state))
    model._jax_state_synced = False


def as_process(process, backbone):
    """A process object from ``None`` (the default for ``backbone``), a serialized dict or a process."""
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


def check_task_arguments(task, condition_dropout, self_conditioning_prob, noise_shared_weight):
    """The checks of ``VideoDiffusion.__init__`` (its backbone and process are set): ranges and pairing."""
    for name, value, closed in (("condition_dropout", condition_dropout, False),
                                ("self_conditioning_prob", self_conditioning_prob, True),
                                ("noise_shared_weight", noise_shared_weight, True)):
        if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
            raise ValueError(f"`{name}` must lie in [0, 1{']' if closed else ')'}, got {value!r}.")
    backbone = task.backbone
    if bool(backbone.learn_sigma) != task.process.learn_sigma:
        raise ValueError(
            f"The backbone has learn_sigma={backbone.learn_sigma} but the process has "
            f"learn_sigma={task.process.learn_sigma}; they must agree (variance channels)."
        )
    if getattr(backbone, "num_extra_input_channels", 0) and not task.fills_extra_input_channels:
        raise ValueError(
            "The backbone takes extra input channels (masked-frame conditioning), which VideoDiffusion "
            "cannot fill: use keras_vdiff.FrameConditionedDiffusion."
        )


def training_latents(videos, backbone, autoencoder=None):
    """[-1, 1] videos of a batch -> latents shaped like the backbone's input; also the frame repeat.

    An image backbone trains on the frames of videos (folded into the batch:
    the conditions repeat once per frame); an autoencoder encodes first.
    """
    repeats = 1
    if not backbone.is_video and len(videos.shape) == 5:
        frames = videos.shape[1]
        videos = ops.reshape(videos, (-1,) + tuple(videos.shape[2:]))
        repeats = frames
    if autoencoder is not None:
        videos = ops.cast(autoencoder.encode(videos), "float32")
    expected = tuple(backbone.latent_shape)
    if tuple(videos.shape[1:]) != expected and not native_size_latents(backbone, videos.shape[1:]):
        raise ValueError(
            f"Batch latents have shape {tuple(videos.shape[1:])} but the backbone expects {expected} "
            "(per example)."
        )
    return videos, repeats


@keras.saving.register_keras_serializable(package="keras_vdiff")
class VideoDiffusion(PipelinePresetMixin, keras.Model):
    """A backbone, a diffusion process and optional text encoder / autoencoder, trainable with ``fit``.

    Args:
        backbone: a ``VideoBackbone`` following the backbone contract (video or image).
        process: ``GaussianDiffusion`` or ``FlowMatching`` (default: cosine Gaussian
            diffusion, epsilon prediction, learned sigma iff the backbone has it).
        text_encoder: callable ``encoder(prompts or token ids) -> (embeddings, mask, pooled)``;
            needed for ``captions`` in batches and ``prompts`` in ``generate``.
        autoencoder: object with ``encode(videos) -> latents`` and ``decode(latents) -> videos`` (videos in
            [-1, 1]); training and sampling then happen in its latent space. It is frozen (``trainable = False``):
            train it first, e.g. with its own ``fit``.
        condition_dropout: probability of replacing the condition by the null
            condition during training (classifier-free guidance, Ho & Salimans 2022).
        self_conditioning_prob: for self-conditioning backbones, probability that
            the previous latents come from a first pass under stop-gradient
            (Chen et al. 2023: 0.9); zeros otherwise.
        noise_shared_weight: lambda of the VideoFusion mixed noise prior (training and sampling noise; 0: i.i.d.).
        seed: seed of the training randomness (timesteps, noise, dropout).
        preprocessor: a ``TextToVideoPreprocessor`` turning prompts into the text encoder's token ids (a
            converted pipeline's own tokenizer); default: the text encoder tokenizes strings itself.
        sampler, sampler_options: what ``generate(sampler=None)`` runs (``sampling.resolve_sampler``; JSON
            options, saved in presets); a converted pipeline's are its scheduler's (``kv.convert.schedulers``).
        negative_prompt, negative_prompt_mask: guided text sampling's null rows are this prompt encoded (diffusers'
            pipelines: ``""``) instead of all-zero rows (``None``); the mask: ``conditioning.with_negative_rows``.

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

    def __init__(self, backbone, process=None, text_encoder=None, autoencoder=None, condition_dropout=0.1,
                 self_conditioning_prob=0.9, noise_shared_weight=0.0, seed=None, preprocessor=None,
                 negative_prompt=None, negative_prompt_mask="own", sampler=None, sampler_options=None, **kwargs):
        super().__init__(**check_keywords(type(self), kwargs, keras.Model))
        self.backbone = backbone
        self.process = as_process(process, backbone)
        check_task_arguments(self, condition_dropout, self_conditioning_prob, noise_shared_weight)
        self.text_encoder = text_encoder
        if autoencoder is not None and getattr(autoencoder, "trainable", False):
            # encode() stops gradients; frozen, AdamW's weight decay cannot shrink its weights either.
            autoencoder.trainable = False
        self.autoencoder = autoencoder
        self.preprocessor = as_preprocessor(preprocessor)
        self.negative_prompt, self.negative_prompt_mask = contract.checked_negative_prompt(
            negative_prompt, negative_prompt_mask)
        self.condition_dropout = float(condition_dropout)
        self.self_conditioning_prob = float(self_conditioning_prob)
        self.noise_shared_weight = float(noise_shared_weight)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.sampler, self.sampler_options = checked_default_sampler(sampler, sampler_options, self.process)
        self._sampling_loops = {}
        self.sampling_mode = None
        self.built = True

    # --- the backbone contract ------------------------------------------------------------------
    @property
    def conditioning(self):
        return self.backbone.conditioning

    @property
    def is_video(self):
        return bool(self.backbone.is_video)

    @property
    def tokenizer(self):
        """The tokenizer of the prompts: the preprocessor's, else the text encoder's (None without text)."""
        return self.preprocessor.tokenizer if self.preprocessor else getattr(self.text_encoder, "tokenizer", None)

    def _previous_latents_shape(self):
        inputs = self.backbone.input
        if not isinstance(inputs, dict) or "previous_latents" not in inputs:
            raise ValueError("A self-conditioning backbone must take a `previous_latents` input.")
        return tuple(inputs["previous_latents"].shape[1:])

    def _backbone_output(self, inputs, training):
        """The backbone's prediction for an input dict, and its new latents when it self-conditions."""
        output = self.backbone(inputs, training=training)
        if self.backbone.self_conditioning:
            return output["output"], output["latents"]
        return output, None

    def denoiser_inputs(self, latents, timesteps, args):
        """The backbone's input dict at a sampling step (``args``: see ``keras_vdiff.tasks.sampling``)."""
        return dict({"latents": latents, "timesteps": timesteps}, **args["conditions"])

    # --- training -----------------------------------------------------------------------------
    def _training_conditions(self, x, batch_size, repeats):
        """The condition inputs of a batch, with condition dropout applied (``contract.training_conditions``)."""
        if self.conditioning is None:
            return {}
        drop = replica_uniform(batch_size, self.seed_generator) < self.condition_dropout
        return contract.training_conditions(x, self.backbone, drop, repeats, self.text_encoder, self.preprocessor)

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
        latents, repeats = training_latents(contract.videos_to_unit_range(x["videos"]), self.backbone,
                                            self.autoencoder)
        batch_size = ops.shape(latents)[0]
        t = global_batch_draw(lambda n: self.process.sample_timesteps(n, seed=self.seed_generator), batch_size)
        noise = global_batch_draw(lambda n: mixed_video_noise(
            (n,) + tuple(ops.shape(latents))[1:], shared_weight=self.noise_shared_weight, seed=self.seed_generator
        ), batch_size)
        x_t = self.process.add_noise(latents, noise, t)
        output = self._denoise_for_loss(x, latents, noise, x_t, t, repeats, training)
        per_example = self.process.compute_loss(output, latents, noise, x_t, t)
        loss = contract.batch_loss(per_example, sample_weight, self.losses)
        if self.conditioning == "class" and "labels" in x:
            labels = ops.cast(ops.reshape(x["labels"], (-1,)), "int32")
            valid = ops.all(contract.valid_labels(labels, self.backbone.num_classes))
            loss = ops.where(valid, loss, float("nan"))
        return scaled_for_replicas(loss)

    def fit(self, x=None, *args, **kwargs):
        """``keras.Model.fit``, after checking in-memory data (a dict of arrays or ``VideoBatches``) up front.

        Labels outside ``[0, num_classes)`` raise here, before any step runs,
        with the values named; streamed data (``tf.data``, generators) is
        checked inside the step, where a bad label makes the loss NaN (add
        ``kv.training.StopOnNonFiniteLoss`` to stop there). A ``fit`` that fails
        leaves the model usable: the compiled train step is dropped, so the next
        ``fit`` traces a fresh one (TensorFlow would otherwise refuse to create
        the optimizer's variables in a second trace of the same function).
        """
        data = getattr(x, "data", x)
        if isinstance(data, dict) and "labels" in data and self.conditioning == "class":
            contract.checked_labels(data["labels"], self.backbone.num_classes, name="labels")
        x = prepared_buckets(self, x, kwargs) if hasattr(x, "video_shapes") else fit_input(x, kwargs)
        try:
            return super().fit(x, *args, **kwargs)
        except Exception:
            self.train_function = None
            raise

    def _get_jax_state(self, trainable_variables=False, non_trainable_variables=False, optimizer_variables=False,
                       metrics_variables=False, purge_model_variables=False):
        wanted = (trainable_variables, non_trainable_variables, optimizer_variables, metrics_variables)
        state = super()._get_jax_state(*wanted, purge_model_variables)
        if purge_model_variables:
            record_jax_state(self, state, wanted)
        return state

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
            use = replica_uniform(batch_size, self.seed_generator) < self.self_conditioning_prob
            use = ops.reshape(ops.cast(use, "float32"), (-1,) + (1,) * (len(previous.shape) - 1))
            inputs["previous_latents"] = ops.stop_gradient(ops.cast(first_latents, "float32")) * use
        output, _ = self._backbone_output(inputs, training)
        return output

    # --- sampling -----------------------------------------------------------------------------
    def generate(self, labels=None, prompts=None, num_frames=None, steps=50, sampler=None, guidance_scale=4.0,
                 seed=0, thresholding=None, guidance_schedule="constant", batch_size=1, text_embeddings=None,
                 initial_noise=None, noise_shared_weight=None, compile="auto", progress=False, return_latents=False,
                 negative_prompts=None, frame_size=None, **sampler_options):
        """Sample videos.

        Args:
            labels: class labels (class-conditional backbones), one video per label.
            prompts: strings for the text encoder (text-conditional backbones).
            num_frames: video frames to generate; must match the backbone's frame count unless its input accepts
                any (image backbones give 1 frame); with a temporally compressing autoencoder, ``1 + k * m``.
            steps: number of sampler steps.
            sampler: a key of ``kv.diffusion.samplers.SAMPLERS`` (``"ddim"``, ``"unipc"``, ...); ``None``: the model's.
            guidance_scale: classifier-free guidance scale; 1 (or an unconditional backbone) runs without the null half.
            seed: integer seed of the initial and per-step noise, in ``[0, 2**31 - 2]``; ``None`` draws a fresh
                one. The same seed gives the same samples on one backend, compiled or eager (not across backends).
            thresholding: ``None`` (the model's sampler options'), ``"none"``, ``"static"``, ``"dynamic"`` or a dict.
            guidance_schedule: ``"constant"`` or ``"oscillating"`` (Imagen Video, alternating ``guidance_scale`` and 1).
            batch_size: number of videos of an unconditional backbone.
            text_embeddings: dict of precomputed ``text_embeddings``, ``text_mask``, ``pooled_text``.
            negative_prompts: the null rows' prompts (one, or one per prompt); default: ``negative_prompt``.
            noise_shared_weight: mixed-noise lambda of the initial noise (default: the model's).
            initial_noise: starting latents ``(B, F, h, w, c)`` instead of drawn noise (numpy or a tensor);
                a diffusers pipeline given them as ``latents`` samples the same (``init_noise_sigma`` included).
            compile: ``True`` runs the compiled loop, ``False`` the eager reference loop; ``"auto"`` (default)
                compiles on JAX and TensorFlow and runs eagerly on PyTorch, where ``torch.compile`` of the step
                costs one to a few minutes on a CPU before the first step, and the compiled step, broken into many
                graphs inside Keras, was no faster than eager in ``benchmarks/`` (not measured on a GPU).
            progress: show a progress bar where the loop runs step by step.
            return_latents: return the float32 latents instead of uint8 videos.
            frame_size: ``(height, width)`` of the videos (backbones with native sizes, ``at_shape``; None: trained).
            **sampler_options: ``eta`` (ddim), ``variance`` (ddpm), ``timestep_spacing``, ... (over the model's).

        Returns: numpy uint8 ``(B, F, H, W, C)`` (F = 1 for image backbones).
        """
        plan = self.prepare_generation(labels=labels, prompts=prompts, text_embeddings=text_embeddings,
                                       negative_prompts=negative_prompts, batch_size=batch_size, num_frames=num_frames,
                                       guidance_scale=guidance_scale, seed=seed, compile=compile, frame_size=frame_size)
        latents = self.sample_latents(plan, steps=steps, sampler=sampler, thresholding=thresholding,
                                      guidance_schedule=guidance_schedule, noise_shared_weight=noise_shared_weight,
                                      progress=progress, initial_noise=initial_noise, **sampler_options)
        if return_latents:
            return np.asarray(ops.convert_to_numpy(latents))
        return self.decode_latents(latents)

    def prepare_generation(self, labels=None, prompts=None, text_embeddings=None, batch_size=1, num_frames=None,
                           guidance_scale=4.0, seed=0, compile="auto", negative_prompts=None, frame_size=None):
        """Step 1 of ``generate``: the checked request as a plan dict.

        Returns ``{"conditions", "batch", "shape", "use_guidance", "guidance_scale",
        "seed", "compile", "task_inputs"}``: the backbone's condition inputs (the
        null rows stacked after the conditional ones when guidance is on), the
        number of videos, the initial noise shape, and the tensors a subclass
        adds for its own ``denoiser_inputs`` (empty here).
        """
        compile, seed = contract.checked_sampling_request(compile, guidance_scale, seed)
        use_guidance = self.conditioning is not None and guidance_scale != 1.0
        conditions, batch = contract.sampling_conditions(
            self.backbone, labels=labels, prompts=prompts, text_embeddings=text_embeddings, batch_size=batch_size,
            use_guidance=use_guidance, text_encoder=self.text_encoder, preprocessor=self.preprocessor,
            negative_prompts=self.negative_prompt if negative_prompts is None else negative_prompts,
            negative_prompt_mask=self.negative_prompt_mask)
        shape = (batch,) + sampling_latent_shape(self.backbone, self.autoencoder, num_frames, frame_size)
        return dict(conditions=conditions, batch=batch, shape=shape, use_guidance=use_guidance,
                    guidance_scale=guidance_scale, seed=seed, compile=compile, task_inputs={})

    def sample_latents(self, plan, steps=50, sampler=None, thresholding=None, guidance_schedule="constant",
                       noise_shared_weight=None, progress=False, initial_noise=None, **sampler_options):
        """Step 2 of ``generate``: run the sampler over the plan of ``prepare_generation``; float32 latents."""
        latents, mode = run_sampler(self, self._sampling_loops, plan, steps, sampler, thresholding,
                                    guidance_schedule, noise_shared_weight, progress, sampler_options, initial_noise)
        if self.sampling_mode != mode:
            logger.info("VideoDiffusion.generate: sampling loop runs as %s.", mode)
        self.sampling_mode = mode
        return latents

    def decode_latents(self, latents):
        """Step 3 of ``generate``: latents -> numpy uint8 videos ``(B, F, H, W, C)`` (autoencoder, pixel range)."""
        videos = latents if self.autoencoder is None else self.autoencoder.decode(ops.convert_to_tensor(latents))
        videos = np.asarray(ops.convert_to_numpy(ops.cast(videos, "float32")))
        if not self.is_video:
            videos = videos[:, None]
        return contract.unit_range_to_uint8(videos)

    # --- serialization ------------------------------------------------------------------------
    def get_config(self):
        def serialized(obj):
            return None if obj is None else keras.saving.serialize_keras_object(obj)

        config = super().get_config()
        config.update(
            backbone=serialized(self.backbone), text_encoder=serialized(self.text_encoder),
            process={"class_name": type(self.process).__name__, "config": self.process.get_config()},
            autoencoder=serialized(self.autoencoder), condition_dropout=self.condition_dropout,
            self_conditioning_prob=self.self_conditioning_prob, noise_shared_weight=self.noise_shared_weight,
            seed=self.seed, negative_prompt=self.negative_prompt, negative_prompt_mask=self.negative_prompt_mask,
            sampler=self.sampler, sampler_options=dict(self.sampler_options) or None,
        )
        if self.preprocessor is not None:
            config["preprocessor"] = serialized(self.preprocessor)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "text_encoder", "autoencoder"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
