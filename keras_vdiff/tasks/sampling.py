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
"""

import numpy as np
from keras import ops

from keras_vdiff.diffusion.compile import SamplingLoop, backend_seed
from keras_vdiff.diffusion.guidance import combine_guidance, guidance_scales
from keras_vdiff.diffusion.noise import mixed_video_noise
from keras_vdiff.diffusion.samplers import get_sampler


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


def sampling_latent_shape(backbone, autoencoder, num_frames):
    """The per-video latent shape to sample for ``num_frames`` video frames (None: the backbone's)."""
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
                sampler_options):
    """Sample latents for a ``prepare_generation`` plan; returns them (float32) and the loop's mode."""
    sampler_instance = get_sampler(sampler, task.process, steps, thresholding=thresholding, **sampler_options)
    loop = cached_sampling_loop(cache, task, sampler_instance, plan, sampler, steps, thresholding, sampler_options,
                                progress)
    shape, seed = plan["shape"], plan["seed"]
    shared = task.noise_shared_weight if noise_shared_weight is None else noise_shared_weight
    x_T = mixed_video_noise(shape, shared_weight=shared, seed=seed)
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
