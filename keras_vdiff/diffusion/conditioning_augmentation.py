"""Low-resolution conditions of super-resolution stages, the engine side: resizing and conditioning augmentation.

A spatial super-resolution stage of a cascade (SR3, Saharia et al. 2021; CDM,
Ho et al. 2021; Imagen Video, Ho et al. 2022) sees the low-resolution video
upsampled to its own size next to the noisy target. Noise-conditioning
augmentation corrupts that low-resolution input during training with Gaussian
noise of a random level ``a`` in ``[0, a_max]`` (and optionally a Gaussian
blur), and tells the model ``a``; at sampling ``a`` is chosen, so the stage is
robust to the artefacts of the stage before it (CDM §3, "conditioning
augmentation"). The noise is variance preserving, on the cosine path:

    augmented = cos(pi a / 2) * low_res + sin(pi a / 2) * noise,    a = 0: the low-resolution video itself.

These are pure functions of tensors; the task that draws the levels and feeds
the backbone is ``keras_vdiff.tasks.SuperResolutionDiffusion``.
"""

import math

from keras import ops

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


def downsample_frames(videos, factor):
    """Area downsampling of ``(B, F, H, W, C)`` videos by an integer ``factor`` (the mean of each block).

    Example:
        >>> downsample_frames(keras.ops.ones((1, 2, 4, 4, 1)), 2).shape
        (1, 2, 2, 2, 1)
    """
    batch, frames, height, width, channels = videos.shape
    if height % factor or width % factor:
        raise ValueError(f"Frames of {height}x{width} cannot be downsampled by `factor`={factor}.")
    blocks = ops.reshape(ops.cast(videos, "float32"),
                         (-1, frames, height // factor, factor, width // factor, factor, channels))
    return ops.mean(blocks, axis=(3, 5))


def resize_frames(videos, size, interpolation="bicubic"):
    """Every frame of ``(B, F, h, w, C)`` videos resized to ``size`` ``(H, W)``: ``(B, F, H, W, C)`` float32.

    Args:
        videos: the videos.
        size: the new ``(height, width)``.
        interpolation: one of ``INTERPOLATIONS`` (``keras.ops.image.resize``, no antialiasing).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"`interpolation` must be one of {INTERPOLATIONS}, got {interpolation!r}.")
    frames, height, width, channels = videos.shape[1:]
    flat = ops.reshape(ops.cast(videos, "float32"), (-1, height, width, channels))
    resized = ops.image.resize(flat, tuple(size), interpolation=interpolation, antialias=False)
    return ops.reshape(resized, (-1, frames) + tuple(size) + (channels,))


def augment_with_noise(low_res, aug_level, noise):
    """``cos(pi a / 2) * low_res + sin(pi a / 2) * noise`` per example (``aug_level`` ``a`` of shape ``(B,)``).

    ``aug_level = 0`` returns ``low_res`` exactly.
    """
    angle = ops.reshape(ops.cast(aug_level, "float32"), (-1,) + (1,) * (len(low_res.shape) - 1)) * (math.pi / 2)
    return ops.cos(angle) * ops.cast(low_res, "float32") + ops.sin(angle) * ops.cast(noise, "float32")


def blur_frames(videos, sigma, radius=2):
    """A separable Gaussian blur of every frame with a standard deviation per example (``sigma`` ``(B,)``).

    ``sigma = 0`` leaves the example unchanged; edges are replicated. The
    kernel has ``2 * radius + 1`` taps.
    """
    x = ops.cast(videos, "float32")
    offsets = ops.arange(-radius, radius + 1, dtype="float32")
    sigma = ops.reshape(ops.cast(sigma, "float32"), (-1, 1))
    safe = ops.maximum(sigma, 1e-3)
    weights = ops.exp(-0.5 * ops.square(offsets[None, :] / safe))
    weights = ops.where(sigma > 0, weights, ops.cast(ops.equal(offsets, 0.0), "float32")[None, :])
    weights = weights / ops.sum(weights, axis=1, keepdims=True)  # (B, taps)
    for axis in (2, 3):
        length = x.shape[axis]
        first = ops.take(x, [0] * radius, axis=axis)
        last = ops.take(x, [length - 1] * radius, axis=axis)
        padded = ops.concatenate([first, x, last], axis=axis)
        blurred = 0.0
        for tap in range(2 * radius + 1):
            window = ops.take(padded, list(range(tap, tap + length)), axis=axis)
            blurred = blurred + ops.reshape(weights[:, tap], (-1, 1, 1, 1, 1)) * window
        x = blurred
    return x
