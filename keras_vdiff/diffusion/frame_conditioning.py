"""Masked-frame conditioning: image-to-video, frame interpolation and prediction with one denoiser.

The denoiser sees the noisy latents ``z_t`` together with ``[m * z_0 | m]``:
the clean latents of the known frames (zero elsewhere) and a binary per-frame
mask ``m`` (1 = frame given). This is the "masked frame interpolation and
extrapolation" input of Make-A-Video (Singer et al. 2022, §3.3), SEINE and Wan
image-to-video. One model trained on a mixture of masks does image-to-video
(first frame known), interpolation (key frames known), prediction (first
frames known) and plain generation (nothing known).

How ``[m * z_0 | m]`` reaches the backbone:

- backbones built with ``num_extra_input_channels == in_channels + 1``
  (``VDMUNet``, ``MakeAVideoUNet``, ``inflate_unet(..., num_extra_input_channels=C + 1)``)
  receive ``[z_t | m * z_0 | m]`` concatenated on the channel axis;
- every other video backbone (DiT-family transformers, ...) receives
  ``z_t + P [m * z_0 | m]`` with ``P`` a zero-initialised per-pixel linear map
  owned by the task model (a patch embedding is linear, so this is a
  restricted form of widening its input).

ConsistI2V-style substitution (Ren et al. 2024; "directly substituting the
initial noise of the first frame by the given input frame both in training
and inference"), option ``substitute_known_frames``: the noisy latents of the
known frames are replaced by their clean latents in the backbone input at
every training step and every sampling step; the loss then covers only the
unknown frames, and the sampled video keeps the given frames exactly.

``FrameConditionedDiffusion`` is the ``VideoDiffusion`` that draws a mask per
training example, builds these inputs, and whose ``generate`` takes the known
frames. It also forwards the optional backbone inputs ``temporal_mask``
(image-video joint training) and ``fps`` from training batches.
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.video_diffusion import VideoDiffusion, unit_range_to_uint8, videos_to_unit_range

MASK_MODES = ("first_frame", "interpolation", "prediction", "random", "none")
PASSTHROUGH_INPUTS = ("temporal_mask", "fps")


def frame_condition_channels(in_channels):
    """Extra input channels of masked-frame conditioning: known-frame latents plus one mask channel."""
    return in_channels + 1


def first_frame_mask(num_frames, batch_size=1):
    """``(B, F)`` float32 mask with only the first frame known (image-to-video).

    Example:
        >>> first_frame_mask(4)
        array([[1., 0., 0., 0.]], dtype=float32)
    """
    return frame_mask(num_frames, [0], batch_size)


def interpolation_mask(num_frames, stride, batch_size=1):
    """``(B, F)`` mask with every ``stride``-th frame known, the last frame too (key-frame interpolation).

    Example:
        >>> interpolation_mask(5, 2)
        array([[1., 0., 1., 0., 1.]], dtype=float32)
    """
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"`stride` must be a positive integer, got {stride!r}.")
    return frame_mask(num_frames, sorted(set(range(0, num_frames, stride)) | {num_frames - 1}), batch_size)


def frame_mask(num_frames, known_frames, batch_size=1):
    """``(B, F)`` float32 mask with ones at the frame indices ``known_frames``.

    Example:
        >>> frame_mask(4, [0, 3])
        array([[1., 0., 0., 1.]], dtype=float32)
    """
    mask = np.zeros((num_frames,), dtype="float32")
    for index in known_frames:
        if not -num_frames <= int(index) < num_frames:
            raise ValueError(f"`known_frames` index {index} is outside [0, {num_frames}).")
        mask[int(index)] = 1.0
    return np.tile(mask[None], (batch_size, 1))


def training_masks(num_frames, modes=MASK_MODES, interpolation_stride=2, num_context_frames=2):
    """The candidate training masks ``(M, F)`` of the given modes.

    ``"first_frame"``: frame 0 known; ``"interpolation"``: every
    ``interpolation_stride``-th frame and the last; ``"prediction"``: the first
    ``num_context_frames``; ``"random"``: a fixed set of alternating patterns;
    ``"none"``: nothing known (unconditional generation).
    """
    masks = []
    for mode in modes:
        if mode not in MASK_MODES:
            raise ValueError(f"Unknown mask mode {mode!r}; valid: {MASK_MODES}.")
        if mode == "first_frame":
            masks.append(first_frame_mask(num_frames)[0])
        elif mode == "interpolation":
            masks.append(interpolation_mask(num_frames, interpolation_stride)[0])
        elif mode == "prediction":
            masks.append(frame_mask(num_frames, range(min(num_context_frames, num_frames)))[0])
        elif mode == "random":
            masks.append(frame_mask(num_frames, range(0, num_frames, 2))[0])
            masks.append(frame_mask(num_frames, range(1, num_frames, 2))[0])
        else:
            masks.append(np.zeros((num_frames,), "float32"))
    return np.stack(masks)


def frame_condition(known_latents, mask):
    """``[m * z_0 | m]``: the known-frame part of the backbone input, ``(B, F, H, W, C + 1)``.

    Args:
        known_latents: ``(B, F, H, W, C)`` clean latents (values at unknown frames are ignored).
        mask: ``(B, F)`` with 1 for the known frames.
    """
    known_latents = ops.cast(known_latents, "float32")
    mask = ops.cast(mask, "float32")
    shape = ops.shape(known_latents)
    mask = ops.broadcast_to(mask[:, :, None, None, None], tuple(shape[:4]) + (1,))
    return ops.concatenate([known_latents * mask, mask], axis=-1)


def masked_frame_inputs(noisy_latents, known_latents, mask):
    """The backbone's ``latents`` input ``[z_t | m * z_0 | m]`` ``(B, F, H, W, 2C + 1)``.

    Example:
        >>> x = masked_frame_inputs(keras.ops.zeros((2, 4, 8, 8, 3)), keras.ops.ones((2, 4, 8, 8, 3)),
        ...                         first_frame_mask(4, batch_size=2))
        >>> x.shape
        (2, 4, 8, 8, 7)
    """
    return ops.concatenate([ops.cast(noisy_latents, "float32"), frame_condition(known_latents, mask)], axis=-1)


def substitute_frames(noisy_latents, condition):
    """ConsistI2V substitution: the known frames of ``noisy_latents`` replaced by their clean latents.

    Args:
        noisy_latents: ``(B, F, H, W, C)``.
        condition: ``[m * z_0 | m]`` ``(B, F, H, W, C + 1)`` from ``frame_condition``.
    """
    channels = noisy_latents.shape[-1]
    mask = condition[..., channels:]
    return ops.cast(noisy_latents, "float32") * (1.0 - mask) + condition[..., :channels]


def mask_known_frames(process, model_output, x0, noise, t, mask):
    """``model_output`` with its prediction at the known frames set to the target (under stop-gradient).

    Passing the result to ``process.compute_loss`` removes the known frames
    from the regression loss (their squared error is 0; the mean still runs
    over all frames). Used with ConsistI2V substitution, where the backbone sees
    the clean known frames and cannot, and need not, predict their noise.

    Args:
        process: ``GaussianDiffusion`` or ``FlowMatching``.
        model_output: backbone output ``(B, F, H, W, C)`` (``2C`` with learned variance;
            the variance channels are kept).
        x0, noise, t: the training example's clean latents, noise and timesteps.
        mask: ``(B, F)``, 1 at the known frames.
    """
    prediction, variance = process.split_output(model_output)
    known = ops.cast(mask, "float32")[:, :, None, None, None]
    target = ops.stop_gradient(process.target(x0, noise, t))
    prediction = known * target + (1.0 - known) * prediction
    return prediction if variance is None else ops.concatenate([prediction, variance], axis=-1)


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
        extra = int(getattr(backbone, "num_extra_input_channels", 0))
        channels = int(backbone.in_channels)
        if extra not in (0, frame_condition_channels(channels)):
            raise ValueError(
                f"The backbone has num_extra_input_channels={extra}; masked-frame conditioning needs "
                f"in_channels + 1 = {frame_condition_channels(channels)} (concatenated) or 0 (added)."
            )
        if backbone.self_conditioning:
            raise ValueError("Masked-frame conditioning does not support self-conditioning backbones.")
        if not mask_modes:
            raise ValueError(f"`mask_modes` must name at least one of {MASK_MODES}.")
        super().__init__(backbone, process, **kwargs)
        self.concatenate_condition = extra > 0
        self.mask_modes = tuple(mask_modes)
        self.interpolation_stride = interpolation_stride
        self.num_context_frames = num_context_frames
        self.substitute_known_frames = bool(substitute_known_frames)
        self.training_masks = training_masks(
            backbone.latent_shape[0], self.mask_modes, interpolation_stride, num_context_frames
        )
        self.condition_projection = None
        if not self.concatenate_condition:
            self.condition_projection = keras.layers.Dense(
                channels, use_bias=False, kernel_initializer="zeros", name="condition_projection"
            )
            self.condition_projection.build((None, frame_condition_channels(channels)))
        self._pending_condition = None
        self._pending_inputs = {}

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
        if self.concatenate_condition:
            return ops.concatenate([x, condition], axis=-1)
        if projection_kernel is None:
            projection_kernel = self.condition_projection.kernel
        return x + ops.matmul(condition, ops.cast(projection_kernel, "float32"))

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
    def _backbone_output(self, inputs, training):
        inputs = dict(inputs)
        condition = inputs.pop("frame_condition", None)
        substitute = inputs.pop("substitute_known_frames", None)
        projection_kernel = inputs.pop("condition_projection_kernel", None)
        if condition is None:
            raise ValueError(
                "FrameConditionedDiffusion needs a `frame_condition` backbone input; "
                "use generate(known_frames=..., frame_mask=...) or fit."
            )
        inputs["latents"] = self.backbone_latents(inputs["latents"], condition, substitute, projection_kernel)
        return super()._backbone_output(inputs, training)

    def _sampling_conditions(self, labels, prompts, text_embeddings, batch_size, use_guidance):
        conditions, batch = super()._sampling_conditions(labels, prompts, text_embeddings, batch_size, use_guidance)
        condition = self._pending_condition
        if condition is None:
            raise ValueError("FrameConditionedDiffusion: sample through `generate`, which sets the known frames.")
        if int(ops.shape(condition)[0]) != batch:
            raise ValueError(
                f"`known_frames` holds {int(ops.shape(condition)[0])} videos but the conditions give {batch}."
            )
        extra = dict(self._pending_inputs, frame_condition=condition)
        for key, value in extra.items():
            # the null half keeps the known frames: guidance drops only the label / text
            conditions[key] = ops.concatenate([value, value], axis=0) if use_guidance else value
        if self.condition_projection is not None:
            # an explicit argument of the compiled loop, which maps only the backbone's variables
            conditions["condition_projection_kernel"] = ops.convert_to_tensor(self.condition_projection.kernel)
        return conditions, batch

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
            **kwargs: ``steps``, ``sampler``, ``guidance_scale``, ``seed``, ... of ``VideoDiffusion.generate``.

        Returns: numpy uint8 ``(B, F, H, W, C)``. Without substitution the known
        frames are the model's own output (a measure of how well it follows them).
        """
        num_frames = self.backbone.latent_shape[0]
        if substitute_known_frames is None:
            substitute_known_frames = self.substitute_known_frames
        if known_frames is None:
            batch = len(np.asarray(labels).reshape(-1)) if labels is not None else int(batch_size)
            latents = ops.zeros((batch,) + tuple(self.backbone.latent_shape), dtype="float32")
            mask = np.zeros((batch, num_frames), "float32")
        else:
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
        condition = frame_condition(latents, mask)
        self._pending_condition = condition
        self._pending_inputs = {
            "substitute_known_frames": ops.full((batch,), 1.0 if substitute_known_frames else 0.0, dtype="float32")
        }
        backbone_inputs = self.backbone.input if isinstance(self.backbone.input, dict) else {}
        if fps is not None:
            if "fps" not in backbone_inputs:
                raise ValueError("`fps` was given but the backbone has no fps conditioning.")
            fps = np.broadcast_to(np.asarray(fps, "float32").reshape(-1), (batch,))
            self._pending_inputs["fps"] = ops.convert_to_tensor(np.array(fps))
        try:
            result = super().generate(labels=labels, batch_size=batch, return_latents=True, **kwargs)
        finally:
            self._pending_condition = None
            self._pending_inputs = {}
        if substitute_known_frames:
            result = np.asarray(ops.convert_to_numpy(substitute_frames(result, condition)))
        if return_latents:
            return result
        videos = result if self.autoencoder is None else self.autoencoder.decode(ops.convert_to_tensor(result))
        return unit_range_to_uint8(np.asarray(ops.convert_to_numpy(ops.cast(videos, "float32"))))

    def get_config(self):
        config = super().get_config()
        config.update(
            mask_modes=list(self.mask_modes),
            interpolation_stride=self.interpolation_stride,
            num_context_frames=self.num_context_frames,
            substitute_known_frames=self.substitute_known_frames,
        )
        return config
