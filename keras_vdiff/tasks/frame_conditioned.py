"""``FrameConditionedDiffusion``: image-to-video, frame interpolation and prediction with one denoiser.

The task of masked-frame conditioning (the masks and the ``[m * z_0 | m]`` input
are ``keras_vdiff.diffusion.frame_masks``). How ``[m * z_0 | m]`` reaches the backbone
(``keras_vdiff.tasks.channel_conditioning``, shared with ``SuperResolutionDiffusion``):

- backbones built with ``num_extra_input_channels == in_channels + 1``
  (``VDMUNet``, ``MakeAVideoUNet``, ``inflate_unet(..., num_extra_input_channels=C + 1)``)
  receive ``[z_t | m * z_0 | m]`` concatenated on the channel axis;
- every other video backbone (DiT-family transformers, ...) receives
  ``z_t + P [m * z_0 | m]`` with ``P`` a zero-initialised per-pixel linear map
  owned by the task model (a patch embedding is linear, so this is a
  restricted form of widening its input).

With ``substitute_known_frames`` (ConsistI2V) the noisy latents of the known
frames are replaced by their clean latents in the backbone input at every
training and sampling step; the loss then covers only the unknown frames, and
the sampled video keeps the given frames exactly.

Training draws a mask per example and builds these inputs in ``_denoise_for_loss``;
``generate`` takes the known frames and passes them to the sampling loop as
explicit ``task_inputs`` (``keras_vdiff.tasks.sampling``), which
``denoiser_inputs`` turns into the backbone's ``latents`` input at each step.
It also forwards the optional backbone inputs ``temporal_mask`` (image-video
joint training) and ``fps`` from training batches.
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.conventions import videos_to_unit_range
from keras_vdiff.diffusion.frame_masks import (
    MASK_MODES,
    first_frame_mask,
    frame_condition,
    frame_condition_channels,
    mask_known_frames,
    substitute_frames,
    training_masks,
)
from keras_vdiff.tasks.channel_conditioning import (
    concatenates_condition,
    condition_projection,
    projection_task_inputs,
    with_condition,
)
from keras_vdiff.tasks.long_videos import extend_video
from keras_vdiff.tasks.video_diffusion import VideoDiffusion

# Optional backbone inputs a training batch may carry, passed on to backbones that take them.
PASSTHROUGH_INPUTS = ("temporal_mask", "fps")
# The arguments of ``generate`` that belong to ``prepare_generation``; the rest go to ``sample_latents``.
PREPARE_ARGUMENTS = ("prompts", "text_embeddings", "num_frames", "guidance_scale", "seed", "compile")


@keras.saving.register_keras_serializable(package="keras_vdiff")
class FrameConditionedDiffusion(VideoDiffusion):
    """``VideoDiffusion`` with masked-frame conditioning (image-to-video, interpolation, prediction).

    Training draws per example one of the masks of ``mask_modes`` (uniformly)
    and feeds the backbone the known frames (module docstring). Batches may
    carry ``temporal_mask`` (B,) and ``fps`` (B,); they are passed to backbones
    that take them.

    Args:
        backbone: a video backbone; with ``num_extra_input_channels == in_channels + 1``
            the condition is concatenated to its input channels, with 0 it is
            added through a zero-initialised projection (any video backbone).
        process, **kwargs: as in ``VideoDiffusion`` (self-conditioning backbones are not supported).
        mask_modes: training mask modes, from ``("first_frame", "interpolation",
            "prediction", "random", "none")``.
        interpolation_stride: key-frame spacing of the ``"interpolation"`` mode.
        num_context_frames: known frames of the ``"prediction"`` mode.
        substitute_known_frames: ConsistI2V substitution in training and (by
            default) in sampling.

    Example:
        >>> backbone = inflate_unet(unet_2d, num_frames=8, num_extra_input_channels=4)
        >>> model = FrameConditionedDiffusion(backbone, GaussianDiffusion("cosine"), mask_modes=("first_frame",))
        >>> model.compile(optimizer="adamw"); model.fit({"videos": videos}, epochs=10)
        >>> videos = model.generate(known_frames=first_frames)          # images: image-to-video
    """

    fills_extra_input_channels = True

    def __init__(self, backbone, process=None, mask_modes=("first_frame",), interpolation_stride=2,
                 num_context_frames=2, substitute_known_frames=False, **kwargs):
        if not getattr(backbone, "is_video", False):
            raise ValueError("Masked-frame conditioning needs a video backbone (is_video=True).")
        channels = int(backbone.in_channels)
        concatenate = concatenates_condition(backbone, frame_condition_channels(channels),
                                             "masked-frame conditioning (in_channels + 1)")
        if backbone.self_conditioning:
            raise ValueError("Masked-frame conditioning does not support self-conditioning backbones.")
        if not mask_modes:
            raise ValueError(f"`mask_modes` must name at least one of {MASK_MODES}.")
        super().__init__(backbone, process, **kwargs)
        self.concatenate_condition = concatenate
        self.mask_modes = tuple(mask_modes)
        self.interpolation_stride = interpolation_stride
        self.num_context_frames = num_context_frames
        self.substitute_known_frames = bool(substitute_known_frames)
        self.training_masks = training_masks(
            backbone.latent_shape[0], self.mask_modes, interpolation_stride, num_context_frames
        )
        self.condition_projection = None
        if not self.concatenate_condition:
            self.condition_projection = condition_projection(channels, frame_condition_channels(channels))

    # --- the backbone input ---------------------------------------------------------------------
    def backbone_latents(self, noisy_latents, condition, substitute=None, projection_kernel=None):
        """The backbone's ``latents`` input from the noisy latents and ``[m * z_0 | m]``.

        Args:
            noisy_latents: ``(B, F, H, W, C)``.
            condition: ``(B, F, H, W, C + 1)`` from ``frame_condition``.
            substitute: None, or a float ``(B,)`` / scalar: 1 applies the
                ConsistI2V substitution to that sample.
            projection_kernel: the kernel of ``P`` as a tensor (the compiled
                sampling loop passes it explicitly so that it is never a stale
                constant); default: the layer's current kernel.

        Returns: ``[z | m * z_0 | m]`` ``(B, F, H, W, 2C + 1)`` for concatenating
        backbones, ``z + P [m * z_0 | m]`` ``(B, F, H, W, C)`` otherwise, where
        ``z`` is ``z_t`` with the known frames substituted where asked.
        """
        x = ops.cast(noisy_latents, "float32")
        condition = ops.cast(condition, "float32")
        if substitute is not None:
            gate = ops.reshape(ops.cast(substitute, "float32"), (-1, 1, 1, 1, 1))
            channels = x.shape[-1]
            x = x * (1.0 - gate * condition[..., channels:]) + gate * condition[..., :channels]
        if not self.concatenate_condition and projection_kernel is None:
            projection_kernel = self.condition_projection.kernel
        return with_condition(x, condition, None if self.concatenate_condition else projection_kernel)

    def _draw_training_mask(self, batch_size):
        choice = keras.random.randint((batch_size,), 0, len(self.training_masks), seed=self.seed_generator)
        return ops.take(ops.convert_to_tensor(self.training_masks), choice, axis=0)

    # --- training -----------------------------------------------------------------------------
    def _training_conditions(self, x, batch_size, repeats):
        conditions = super()._training_conditions(x, batch_size, repeats)
        backbone_inputs = self.backbone.input if isinstance(self.backbone.input, dict) else {}
        for key in PASSTHROUGH_INPUTS:
            if key in x and key in backbone_inputs:
                conditions[key] = ops.cast(ops.reshape(x[key], (-1,)), "float32")
        return conditions

    def _denoise_for_loss(self, x, latents, noise, x_t, t, repeats, training):
        """The prediction for ``x_t`` given a random known-frame mask per example.

        With ``substitute_known_frames`` the prediction at the known frames is
        replaced by its target (under stop-gradient), so only unknown frames
        contribute to the regression loss.
        """
        batch_size = ops.shape(latents)[0]
        mask = self._draw_training_mask(batch_size)
        condition = frame_condition(latents, mask)
        substitute = 1.0 if self.substitute_known_frames else None
        inputs = {
            "latents": self.backbone_latents(x_t, condition, substitute),
            "timesteps": self.process.model_timesteps(t),
        }
        inputs.update(self._training_conditions(x, batch_size, repeats))
        output = ops.cast(self.backbone(inputs, training=training), "float32")
        if self.substitute_known_frames:
            output = mask_known_frames(self.process, output, latents, noise, t, mask)
        return output

    # --- sampling -----------------------------------------------------------------------------
    def denoiser_inputs(self, latents, timesteps, args):
        """The backbone's inputs at a sampling step: its ``latents`` input built with the known frames.

        The known frames, the substitution gate and the projection kernel come in
        ``args["task_inputs"]`` (``_with_known_frames``), never in the backbone's dict.
        """
        task_inputs = args["task_inputs"]
        latents = self.backbone_latents(latents, task_inputs["frame_condition"], task_inputs["substitute_known_frames"],
                                        task_inputs.get("condition_projection_kernel"))
        return super().denoiser_inputs(latents, timesteps, args)

    def _with_known_frames(self, plan, condition, substitute, fps):
        """A ``prepare_generation`` plan with the known frames as task inputs (and ``fps`` as a backbone input)."""
        batch = plan["batch"]
        if int(ops.shape(condition)[0]) != batch:
            raise ValueError(
                f"`known_frames` holds {int(ops.shape(condition)[0])} videos but the conditions give {batch}."
            )

        def both_halves(value):  # the null half keeps the known frames: guidance drops only the label / text
            return ops.concatenate([value, value], axis=0) if plan["use_guidance"] else value

        gate = ops.full((batch,), 1.0 if substitute else 0.0, dtype="float32")
        task_inputs = {"frame_condition": both_halves(condition), "substitute_known_frames": both_halves(gate),
                       **projection_task_inputs(self.condition_projection)}
        conditions = dict(plan["conditions"])
        if fps is not None:
            conditions["fps"] = both_halves(fps)
        return dict(plan, conditions=conditions, task_inputs=task_inputs)

    def _known_latents(self, known_frames):
        frames = videos_to_unit_range(ops.convert_to_tensor(known_frames))
        if len(frames.shape) == 4:  # images: the first frame of each video
            num_frames = self.backbone.latent_shape[0]
            rest = ops.zeros((ops.shape(frames)[0], num_frames - 1) + tuple(frames.shape[1:]), dtype="float32")
            frames = ops.concatenate([frames[:, None], rest], axis=1)
        if self.autoencoder is not None:
            frames = self.autoencoder.encode(frames)
        latents = ops.cast(frames, "float32")
        expected = tuple(self.backbone.latent_shape)
        if tuple(latents.shape[1:]) != expected:
            raise ValueError(f"`known_frames` give latents of shape {tuple(latents.shape[1:])}, expected {expected}.")
        return latents

    def generate(self, known_frames=None, frame_mask=None, labels=None, batch_size=1, fps=None,
                 substitute_known_frames=None, return_latents=False, **kwargs):
        """Sample videos that agree with the known frames.

        Args:
            known_frames: uint8 / [-1, 1] videos ``(B, F, H, W, C)``, or images
                ``(B, H, W, C)`` taken as first frames (image-to-video); None
                generates without known frames.
            frame_mask: ``(B, F)`` or ``(F,)`` over latent frames, 1 for the frames
                of ``known_frames`` to keep (default: the first frame when images
                are given; required with videos).
            labels, batch_size: as in ``VideoDiffusion.generate`` (the batch is the
                number of known videos when they are given).
            fps: frame rate for backbones with fps conditioning (scalar or ``(B,)``).
            substitute_known_frames: ConsistI2V substitution while sampling
                (default: the model's training setting); the returned known
                frames are then exactly the given ones.
            return_latents: return float32 latents instead of uint8 videos.
            **kwargs: ``steps``, ``sampler`` (default: the model's), ``guidance_scale``, ``seed``,
                ``initial_noise``, ... of ``VideoDiffusion.generate``.

        Returns: numpy uint8 ``(B, F, H, W, C)``. Without substitution the known
        frames are the model's own output (a measure of how well it follows them).
        """
        if substitute_known_frames is None:
            substitute_known_frames = self.substitute_known_frames
        latents, mask = self._known_frames_and_mask(known_frames, frame_mask, labels, batch_size)
        batch = int(ops.shape(latents)[0])
        condition = frame_condition(latents, mask)
        prepare = {key: kwargs.pop(key) for key in PREPARE_ARGUMENTS if key in kwargs}
        plan = self.prepare_generation(labels=labels, batch_size=batch, **prepare)
        plan = self._with_known_frames(plan, condition, substitute_known_frames, self._fps_input(fps, batch))
        result = np.asarray(ops.convert_to_numpy(self.sample_latents(plan, **kwargs)))
        if substitute_known_frames:
            result = np.asarray(ops.convert_to_numpy(substitute_frames(result, condition)))
        return result if return_latents else self.decode_latents(result)

    def extend(self, video, num_new_frames, context_frames=None, seed=0, **generate_kwargs):
        """Extend videos autoregressively by ``num_new_frames`` frames (Video-LDM's prediction model).

        Each round the last ``context_frames`` frames (default ``num_context_frames``) are the known
        frames of a window; the frames generated after them are appended (``tasks/long_videos.py``).

        Args:
            video: uint8 / [-1, 1] videos ``(B, F0, H, W, C)`` with at least ``context_frames`` frames.
            num_new_frames: frames to add.
            context_frames: known frames per round, from 1 to the window length minus 1.
            seed: seed of the first round (round ``r``: ``seed + r``).
            **generate_kwargs: ``labels``, ``prompts``, ``steps``, ``sampler``, ... of ``generate``.

        Returns: numpy uint8 ``(B, F0 + num_new_frames, H, W, C)`` beginning with ``video``.

        Example:
            >>> model = FrameConditionedDiffusion(backbone, mask_modes=("prediction",), num_context_frames=2)
            >>> longer = model.extend(videos, num_new_frames=24, labels=[3], steps=50)
        """
        return extend_video(self, video, num_new_frames, context_frames, seed, **generate_kwargs)

    def _known_frames_and_mask(self, known_frames, frame_mask, labels, batch_size):
        """The latents of the known frames ``(B, F, h, w, c)`` and the checked frame mask ``(B, F)``."""
        num_frames = self.backbone.latent_shape[0]
        if known_frames is None:
            batch = len(np.asarray(labels).reshape(-1)) if labels is not None else int(batch_size)
            latents = ops.zeros((batch,) + tuple(self.backbone.latent_shape), dtype="float32")
            return latents, np.zeros((batch, num_frames), "float32")
        is_image = len(np.shape(known_frames)) == 4
        latents = self._known_latents(known_frames)
        batch = int(ops.shape(latents)[0])
        if frame_mask is None:
            if not is_image:
                raise ValueError("Pass `frame_mask` to say which frames of the `known_frames` videos are given.")
            frame_mask = first_frame_mask(num_frames, batch)
        mask = np.asarray(frame_mask, dtype="float32")
        if mask.ndim == 1:
            mask = np.tile(mask[None], (batch, 1))
        if mask.shape != (batch, num_frames):
            raise ValueError(f"`frame_mask` must be ({batch}, {num_frames}) or ({num_frames},), got {mask.shape}.")
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError("`frame_mask` must hold only 0 and 1.")
        return latents, mask

    def _fps_input(self, fps, batch):
        """``fps`` as a ``(batch,)`` float32 tensor, or None; an error if the backbone has no fps input."""
        if fps is None:
            return None
        backbone_inputs = self.backbone.input if isinstance(self.backbone.input, dict) else {}
        if "fps" not in backbone_inputs:
            raise ValueError("`fps` was given but the backbone has no fps conditioning.")
        fps = np.broadcast_to(np.asarray(fps, "float32").reshape(-1), (batch,))
        return ops.convert_to_tensor(np.array(fps))

    def get_config(self):
        config = super().get_config()
        config.update(
            mask_modes=list(self.mask_modes),
            interpolation_stride=self.interpolation_stride,
            num_context_frames=self.num_context_frames,
            substitute_known_frames=self.substitute_known_frames,
        )
        return config
