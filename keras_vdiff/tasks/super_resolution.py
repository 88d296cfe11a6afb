"""``SuperResolutionDiffusion``: a spatial super-resolution stage of a cascade (SR3, CDM, Imagen Video).

The backbone denoises the high-resolution video given the low-resolution one,
upsampled (bicubic by default) to the high resolution and passed as extra input
channels (``keras_vdiff.tasks.channel_conditioning``: concatenated to the
latents of a backbone built with ``num_extra_input_channels=in_channels``, else
added through a zero-initialised projection).

Noise-conditioning augmentation (CDM, Ho et al. 2021; Imagen Video, Ho et al.
2022): in training the low-resolution input is corrupted with Gaussian noise of
a level ``a`` drawn uniformly in ``[0, max_aug_level]`` per example (and, with
probability ``blur_prob``, blurred first), and ``a`` reaches the backbone as its
``aug_level`` input (``VDMUNet(aug_level_conditioning=True)`` embeds it and adds
it to the timestep embedding). At sampling ``generate(aug_level=...)`` chooses
the level; ``aug_level=0`` conditions on the low-resolution video itself. The
tensor functions are ``keras_vdiff.diffusion.conditioning_augmentation``.

Training batches are the high-resolution videos (``videos``, with their labels
or captions); the low-resolution input is their area downsampling by
``scale_factor`` unless a batch carries ``low_res_videos``. Text or class
conditions, condition dropout and guidance work as in ``VideoDiffusion``; the
null rows of guidance keep the low-resolution condition.
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.diffusion.conditioning_augmentation import (
    INTERPOLATIONS,
    augment_with_noise,
    blur_frames,
    downsample_frames,
    resize_frames,
)
from keras_vdiff.tasks.channel_conditioning import (
    concatenates_condition,
    condition_projection,
    projection_task_inputs,
    with_condition,
)
from keras_vdiff.tasks.conditioning import videos_to_unit_range
from keras_vdiff.tasks.frame_conditioned import PREPARE_ARGUMENTS
from keras_vdiff.tasks.video_diffusion import VideoDiffusion
from keras_vdiff.validation import check_int


def _check_level(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
            0.0 <= float(value) <= 1.0):
        raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}.")
    return float(value)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class SuperResolutionDiffusion(VideoDiffusion):
    """``VideoDiffusion`` conditioned on a low-resolution video, with noise-conditioning augmentation.

    Args:
        backbone: a pixel-space video backbone; with ``num_extra_input_channels == in_channels``
            the upsampled low-resolution video is concatenated to its input, with 0 it is added
            through a zero-initialised projection. With ``max_aug_level > 0`` it must take an
            ``aug_level`` input (``VDMUNet(..., aug_level_conditioning=True)``).
        process, **kwargs: as in ``VideoDiffusion`` (no autoencoder, no self-conditioning).
        scale_factor: the spatial upsampling factor (the low-resolution frames are ``H / s x W / s``).
        interpolation: how the low-resolution video is upsampled: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        max_aug_level: training noise levels are uniform in ``[0, max_aug_level]`` (0: no augmentation).
        aug_level: the default noise level of ``generate``.
        blur_prob: probability that a training example's low-resolution input is also blurred.
        blur_sigma: ``(low, high)`` range of the blur's standard deviation, in low-resolution pixels.

    Example:
        >>> unet = kv.models.VDMUNet(image_size=32, num_frames=10, in_channels=1, num_extra_input_channels=1,
        ...                          aug_level_conditioning=True, conv_type="pseudo3d", attention_resolutions=(),
        ...                          temporal_attention_resolutions=(), mid_attention=False, dim=32,
        ...                          dim_mults=(1, 2, 2), num_res_blocks=1, norm_groups=8)
        >>> model = SuperResolutionDiffusion(unet, GaussianDiffusion("cosine", prediction="v"), scale_factor=2)
        >>> model.compile(optimizer="adamw"); model.fit({"videos": videos_32}, epochs=10)
        >>> videos = model.generate(videos_16, aug_level=0.1, steps=50)        # uint8 (B, 10, 32, 32, 1)
    """

    fills_extra_input_channels = True

    def __init__(self, backbone, process=None, scale_factor=2, interpolation="bicubic", max_aug_level=0.5,
                 aug_level=0.1, blur_prob=0.0, blur_sigma=(0.4, 0.6), **kwargs):
        if not getattr(backbone, "is_video", False):
            raise ValueError("Super-resolution needs a video backbone (is_video=True).")
        if backbone.self_conditioning:
            raise ValueError("Super-resolution does not support self-conditioning backbones.")
        if kwargs.get("autoencoder") is not None:
            raise ValueError("SuperResolutionDiffusion works in pixel space: pass no `autoencoder`.")
        channels = int(backbone.in_channels)
        concatenate = concatenates_condition(backbone, channels, "super-resolution (the low-resolution video's "
                                                                 "in_channels)")
        super().__init__(backbone, process, **kwargs)
        self.scale_factor = check_int(scale_factor, "scale_factor")
        _, height, width, _ = backbone.latent_shape
        if height % self.scale_factor or width % self.scale_factor:
            raise ValueError(f"`scale_factor`={scale_factor} does not divide the backbone's {height}x{width} frames.")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"`interpolation` must be one of {INTERPOLATIONS}, got {interpolation!r}.")
        self.interpolation = interpolation
        self.max_aug_level = _check_level(max_aug_level, "max_aug_level")
        self.aug_level = _check_level(aug_level, "aug_level")
        self.blur_prob = _check_level(blur_prob, "blur_prob")
        low, high = (float(v) for v in blur_sigma)
        if not 0.0 <= low <= high:
            raise ValueError(f"`blur_sigma` must be a range (low, high) with 0 <= low <= high, got {blur_sigma!r}.")
        self.blur_sigma = (low, high)
        self.takes_aug_level = isinstance(backbone.input, dict) and "aug_level" in backbone.input
        if (self.max_aug_level > 0 or self.aug_level > 0) and not self.takes_aug_level:
            raise ValueError(
                f"`max_aug_level`={max_aug_level} / `aug_level`={aug_level} need a backbone with an `aug_level` "
                "input (e.g. VDMUNet(aug_level_conditioning=True)), so the level reaches the model; pass 0 for "
                "plain low-resolution conditioning."
            )
        self.concatenate_condition = concatenate
        self.condition_projection = None if concatenate else condition_projection(channels, channels)

    @property
    def low_res_shape(self):
        """The shape of one low-resolution video ``(F, H / s, W / s, C)``."""
        frames, height, width, channels = self.backbone.latent_shape
        return (frames, height // self.scale_factor, width // self.scale_factor, channels)

    # --- the condition ------------------------------------------------------------------------
    def low_res_condition(self, low_res, aug_level, noise=None, blur_sigma=None):
        """The upsampled, augmented low-resolution input ``(B, F, H, W, C)`` for ``(B, F, h, w, C)`` ``low_res``.

        Args:
            low_res: low-resolution videos in [-1, 1].
            aug_level: ``(B,)`` noise levels; with ``noise=None`` they are ignored (no noise).
            noise: standard normal noise shaped like ``low_res``.
            blur_sigma: None, or ``(B,)`` blur standard deviations applied before the noise.
        """
        x = ops.cast(low_res, "float32")
        if blur_sigma is not None:
            x = blur_frames(x, blur_sigma)
        if noise is not None:
            x = augment_with_noise(x, aug_level, noise)
        return resize_frames(x, self.backbone.latent_shape[1:3], self.interpolation)

    def backbone_latents(self, noisy_latents, condition, projection_kernel=None):
        """The backbone's ``latents`` input: ``[z_t | up(low_res)]`` or ``z_t + P up(low_res)``."""
        if not self.concatenate_condition and projection_kernel is None:
            projection_kernel = self.condition_projection.kernel
        return with_condition(noisy_latents, condition, None if self.concatenate_condition else projection_kernel)

    def _checked_low_res(self, low_res, name):
        low_res = videos_to_unit_range(ops.convert_to_tensor(low_res))
        if tuple(low_res.shape[1:]) != self.low_res_shape:
            raise ValueError(f"`{name}` have shape {tuple(low_res.shape[1:])} per video, expected {self.low_res_shape}.")
        return ops.cast(low_res, "float32")

    # --- training -----------------------------------------------------------------------------
    def _denoise_for_loss(self, x, latents, noise, x_t, t, repeats, training):
        """The prediction for ``x_t`` given the (augmented, upsampled) low-resolution video of each example."""
        batch_size = ops.shape(latents)[0]
        if "low_res_videos" in x:
            low_res = self._checked_low_res(x["low_res_videos"], "low_res_videos")
        else:
            low_res = downsample_frames(latents, self.scale_factor)
        level = keras.random.uniform((batch_size,), 0.0, 1.0, seed=self.seed_generator) * self.max_aug_level
        sigma = None
        if self.blur_prob > 0:
            low, high = self.blur_sigma
            drawn = keras.random.uniform((batch_size,), low, high, seed=self.seed_generator)
            apply = keras.random.uniform((batch_size,), 0.0, 1.0, seed=self.seed_generator) < self.blur_prob
            sigma = ops.where(apply, drawn, 0.0)
        augment_noise = keras.random.normal(ops.shape(low_res), seed=self.seed_generator)
        condition = self.low_res_condition(low_res, level, augment_noise, sigma)
        inputs = {"latents": self.backbone_latents(x_t, condition), "timesteps": self.process.model_timesteps(t)}
        if self.takes_aug_level:
            inputs["aug_level"] = level
        inputs.update(self._training_conditions(x, batch_size, repeats))
        return ops.cast(self.backbone(inputs, training=training), "float32")

    # --- sampling -----------------------------------------------------------------------------
    def denoiser_inputs(self, latents, timesteps, args):
        """The backbone's inputs at a sampling step, the low-resolution condition from ``args["task_inputs"]``."""
        task_inputs = args["task_inputs"]
        latents = self.backbone_latents(latents, task_inputs["low_res_condition"],
                                        task_inputs.get("condition_projection_kernel"))
        return super().denoiser_inputs(latents, timesteps, args)

    def generate(self, low_res_videos, labels=None, aug_level=None, return_latents=False, **kwargs):
        """Sample high-resolution videos for low-resolution ones.

        Args:
            low_res_videos: uint8 or [-1, 1] videos ``(B, F, H / s, W / s, C)``.
            labels, prompts (in ``kwargs``): one per video, for class / text backbones.
            aug_level: the noise level of the low-resolution input (default: the model's ``aug_level``);
                0 conditions on the videos themselves.
            return_latents: return float32 videos in [-1, 1] instead of uint8.
            **kwargs: ``prompts``, ``steps``, ``sampler``, ``guidance_scale`` (default 1: no null pass),
                ``seed``, ... of ``VideoDiffusion.generate``; the seed also draws the augmentation noise.

        Returns: numpy uint8 ``(B, F, H, W, C)``.
        """
        level = self.aug_level if aug_level is None else _check_level(aug_level, "aug_level")
        low_res = self._checked_low_res(low_res_videos, "low_res_videos")
        batch = int(ops.shape(low_res)[0])
        kwargs.setdefault("guidance_scale", 1.0)
        prepare = {key: kwargs.pop(key) for key in PREPARE_ARGUMENTS if key in kwargs}
        plan = self.prepare_generation(labels=labels, batch_size=batch, **prepare)
        if plan["batch"] != batch:
            raise ValueError(f"`low_res_videos` holds {batch} videos but the conditions give {plan['batch']}.")
        levels = ops.full((batch,), level, dtype="float32")
        noise = None
        if level > 0:
            noise = keras.random.normal(ops.shape(low_res), seed=int(plan["seed"]) + 2)
        plan = self._with_low_res(plan, self.low_res_condition(low_res, levels, noise), levels)
        result = self.sample_latents(plan, **kwargs)
        return np.asarray(ops.convert_to_numpy(result)) if return_latents else self.decode_latents(result)

    def _with_low_res(self, plan, condition, levels):
        """A ``prepare_generation`` plan with the low-resolution condition as task inputs (and ``aug_level``)."""
        def both_halves(value):  # the null half keeps the low-resolution video: guidance drops only the label / text
            return ops.concatenate([value, value], axis=0) if plan["use_guidance"] else value

        conditions = dict(plan["conditions"])
        if self.takes_aug_level:
            conditions["aug_level"] = both_halves(levels)
        task_inputs = {"low_res_condition": both_halves(condition), **projection_task_inputs(self.condition_projection)}
        return dict(plan, conditions=conditions, task_inputs=task_inputs)

    def get_config(self):
        config = super().get_config()
        config.update(scale_factor=self.scale_factor, interpolation=self.interpolation,
                      max_aug_level=self.max_aug_level, aug_level=self.aug_level, blur_prob=self.blur_prob,
                      blur_sigma=list(self.blur_sigma))
        return config
