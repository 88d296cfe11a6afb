"""The sampling step of a task: one denoiser call with guidance, as a pure function for the compiled loop.

``VideoDiffusion.generate`` runs ``sampler.step`` inside a ``SamplingLoop``
(``keras_vdiff.diffusion.compile``), which wants a pure function
``step(i, state, args, noise) -> state``. Everything a step reads that is not
the sampler state enters through ``args`` explicitly:

- ``args["conditions"]``: the backbone's condition inputs (the null rows already
  stacked after the conditional rows when guidance is on);
- ``args["guidance_scales"]``: the scale per step;
- ``args["task_inputs"]``: what a task subclass feeds its own input builder
  (``FrameConditionedDiffusion``: the known frames, the substitution gate, the
  projection kernel), never put into the backbone's dict.

The task's ``denoiser_inputs(latents, timesteps, args)`` builds the backbone's
input dict from these; subclasses override it, not the step.

Which sampler runs: ``resolve_sampler`` (the call's, else the task's default
sampler with its options, else ``"ddim"``); where it starts: drawn noise, or the
caller's ``initial_noise`` (``checked_initial_noise``).
"""

import json

import numpy as np
from keras import ops

from keras_vdiff.diffusion.compile import SamplingLoop, backend_seed
from keras_vdiff.diffusion.guidance import combine_guidance, guidance_scales
from keras_vdiff.diffusion.noise import mixed_video_noise
from keras_vdiff.diffusion.samplers import SAMPLERS, get_sampler
from keras_vdiff.tasks.native_sizes import native_sampling_shape
from keras_vdiff.tasks.replicas import batch_sharded

# What ``generate(sampler=None)`` runs for a task without a default sampler.
DEFAULT_SAMPLER = "ddim"


def checked_default_sampler(sampler, sampler_options, process):
    """A task's default sampler as ``(name or None, its options)``, checked by building it once.

    The options must be JSON values (they are saved in presets); returned as a fresh dict.
    """
    if sampler is None:
        if sampler_options:
            raise ValueError(f"`sampler_options`={sampler_options!r} were given without a `sampler`.")
        return None, {}
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"`sampler` must be None or one of {sorted(SAMPLERS)}, got {sampler!r}.")
    if sampler_options is not None and not isinstance(sampler_options, dict):
        raise ValueError(f"`sampler_options` must be a dict or None, got {type(sampler_options).__name__}.")
    try:
        text = json.dumps(dict(sampler_options or {}), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`sampler_options` must hold JSON values (numbers, strings, lists, dicts), got {sampler_options!r}: "
            f"{error}."
        ) from None
    options = json.loads(text)
    try:
        get_sampler(sampler, process, 2, **options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`sampler_options`={sampler_options!r} do not fit sampler {sampler!r}: {error}") from None
    return sampler, options


def resolve_sampler(task, sampler, thresholding, sampler_options):
    """``(name, thresholding, options)`` of a ``generate`` call.

    ``sampler=None`` runs the task's default sampler (``VideoDiffusion(sampler=...)``),
    else ``DEFAULT_SAMPLER``. The task's ``sampler_options`` apply whenever its default
    sampler runs, named or not; the call's options override them, and its
    ``thresholding`` overrides theirs unless None (``"none"`` turns it off).
    """
    default = getattr(task, "sampler", None)
    name = sampler if sampler is not None else (default or DEFAULT_SAMPLER)
    options = json.loads(json.dumps(task.sampler_options)) if default is not None and name == default else {}
    options.update(sampler_options)
    threshold = options.pop("thresholding", None)
    if thresholding is not None:
        threshold = None if thresholding == "none" else thresholding
    return name, threshold, options


def checked_initial_noise(initial_noise, shape):
    """``initial_noise`` (numpy or a tensor) as a float32 tensor, checked to have the sampled ``shape``."""
    value = ops.convert_to_tensor(initial_noise, dtype="float32")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"`initial_noise` has shape {tuple(value.shape)}, but this request samples latents of shape "
            f"{tuple(shape)} (the batch, then the latent shape of one video)."
        )
    if not np.all(np.isfinite(ops.convert_to_numpy(value))):
        raise ValueError("`initial_noise` holds non-finite values.")
    return value


def sampling_step_fn(task, sampler, use_guidance, batch):
    """The pure per-step function of ``task``'s sampling loop: ``(i, state, args, noise) -> state``."""
    prediction_channels = task.process.prediction_channels(task.backbone.out_channels)
    self_conditioning = bool(task.backbone.self_conditioning)
    rows = 2 * batch if use_guidance else batch

    def step(i, state, args, noise):
        scale = ops.take(args["guidance_scales"], i)

        def model_fn(x, t, carry):
            latents = ops.concatenate([x, x], axis=0) if use_guidance else x
            inputs = task.denoiser_inputs(latents, ops.ones((rows,), dtype="float32") * t, args)
            if self_conditioning:
                inputs["previous_latents"] = carry[0]
            output, new_latents = task._backbone_output(inputs, training=False)
            if self_conditioning:
                carry = (ops.cast(new_latents, "float32"),)
            if use_guidance:
                output = combine_guidance(output, scale, prediction_channels)
            return ops.cast(output, "float32"), carry

        return sampler.step(model_fn, i, state, noise)

    return step


def cached_sampling_loop(cache, task, sampler_instance, plan, sampler, steps, thresholding, sampler_options,
                         progress):
    """The task's compiled loop for this shape and these options, built once and kept in ``cache`` (a dict)."""
    key = (
        plan["shape"],
        sampler,
        steps,
        repr(sorted(sampler_options.items())),
        repr(thresholding),
        plan["use_guidance"],
        plan["compile"],
    )
    loop = cache.get(key)
    if loop is None:
        step_fn = sampling_step_fn(task, sampler_instance, plan["use_guidance"], plan["batch"])
        loop = SamplingLoop(
            step_fn,
            steps,
            sampler_instance.stochastic,
            plan["shape"],
            task.backbone.variables,
            compile=plan["compile"],
            progress=progress,
        )
        cache[key] = loop
    loop.progress = progress
    return loop


def sampling_latent_shape(backbone, autoencoder, num_frames, frame_size=None):
    """The per-video latent shape to sample for ``num_frames`` video frames of ``frame_size`` (None: the backbone's)."""
    if frame_size is not None:
        return native_sampling_shape(backbone, autoencoder, num_frames, frame_size)
    latent_shape = tuple(backbone.latent_shape)
    is_video = bool(backbone.is_video)
    if num_frames is not None and is_video and hasattr(autoencoder, "latent_num_frames"):
        num_frames = autoencoder.latent_num_frames(num_frames)  # e.g. 1 + 4m video frames -> 1 + m latents
    if num_frames is not None:
        if not is_video and num_frames != 1:
            raise ValueError(f"An image backbone generates 1 frame, got `num_frames`={num_frames}.")
        if is_video and num_frames != latent_shape[0]:
            frames_input = backbone.input["latents"].shape[1]
            if frames_input is not None:
                raise ValueError(
                    f"This backbone was built for {latent_shape[0]} frames, got `num_frames`={num_frames}."
                )
            latent_shape = (num_frames,) + latent_shape[1:]
    return latent_shape


def run_sampler(task, cache, plan, steps, sampler, thresholding, guidance_schedule, noise_shared_weight, progress,
                sampler_options, initial_noise=None):
    """Sample latents for a ``prepare_generation`` plan; returns them (float32) and the loop's mode.

    ``sampler=None`` runs the task's default (``resolve_sampler``). The run starts from
    ``initial_noise`` when given (``checked_initial_noise``), else from noise drawn with the
    plan's seed; the sampler scales it as its diffusers scheduler does.
    """
    sampler, thresholding, sampler_options = resolve_sampler(task, sampler, thresholding, sampler_options)
    sampler_instance = get_sampler(sampler, task.process, steps, thresholding=thresholding, **sampler_options)
    loop = cached_sampling_loop(cache, task, sampler_instance, plan, sampler, steps, thresholding, sampler_options,
                                progress)
    shape, seed = plan["shape"], plan["seed"]
    shared = task.noise_shared_weight if noise_shared_weight is None else noise_shared_weight
    if initial_noise is None:
        x_T = mixed_video_noise(shape, shared_weight=shared, seed=seed)
    else:
        x_T = checked_initial_noise(initial_noise, shape)
    x_T = batch_sharded(x_T)  # split over the batch axis of an active keras.distribution (JAX); else as is
    model_carry = ()
    if task.backbone.self_conditioning:
        rows = 2 * plan["batch"] if plan["use_guidance"] else plan["batch"]
        model_carry = (ops.zeros((rows,) + task._previous_latents_shape(), dtype="float32"),)
    scales = guidance_scales(steps, plan["guidance_scale"], guidance_schedule)
    args = {"conditions": plan["conditions"], "guidance_scales": ops.convert_to_tensor(scales),
            "task_inputs": plan["task_inputs"]}
    state = sampler_instance.initial_state(x_T, model_carry)
    state = loop(state, args, backend_seed(seed + 1))
    latents = sampler_instance.result(state)
    check_finite_samples(latents, task.backbone)
    return latents, loop.mode


def check_finite_samples(latents, backbone):
    """Raise on NaN / inf samples instead of letting them become black frames."""
    values = np.asarray(ops.convert_to_numpy(latents))
    bad = int(np.size(values) - np.isfinite(values).sum())
    if not bad:
        return
    weights = sum(int(np.size(w) - np.isfinite(w).sum()) for w in backbone.get_weights())
    cause = (f"{weights} backbone weights are non-finite: the checkpoint diverged in training" if weights
             else "the weights are finite: try a smaller `guidance_scale` or another sampler")
    raise FloatingPointError(f"generate produced {bad} non-finite values of {values.size} ({cause}).")
