"""Masked-frame conditioning, the engine side: masks and the ``[m * z_0 | m]`` input of the known frames.

The denoiser sees the noisy latents ``z_t`` together with ``[m * z_0 | m]``:
the clean latents of the known frames (zero elsewhere) and a binary per-frame
mask ``m`` (1 = frame given). This is the "masked frame interpolation and
extrapolation" input of Make-A-Video (Singer et al. 2022, §3.3), SEINE and Wan
image-to-video. One model trained on a mixture of masks does image-to-video
(first frame known), interpolation (key frames known), prediction (first
frames known) and plain generation (nothing known).

ConsistI2V-style substitution (Ren et al. 2024; "directly substituting the
initial noise of the first frame by the given input frame both in training
and inference"): ``substitute_frames`` replaces the noisy latents of the known
frames by their clean latents, and ``mask_known_frames`` removes them from the loss.

These are pure functions of tensors; the task that draws the masks and feeds
them to a backbone is ``keras_vdiff.tasks.FrameConditionedDiffusion``.
"""

import numpy as np
from keras import ops

MASK_MODES = ("first_frame", "interpolation", "prediction", "random", "none")


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
