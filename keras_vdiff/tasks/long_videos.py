"""Long videos: a video extended autoregressively by a prediction model (Video-LDM, Blattmann et al. 2023).

A ``FrameConditionedDiffusion`` trained with the ``"prediction"`` mask mode
generates the frames of a window that follow its first ``num_context_frames``
known frames. ``extend_video`` slides that window along a video: each round
the last ``k`` frames of the video so far become the window's known frames
(``frame_mask = [1] * k + [0] * (F - k)``), the ``F - k`` frames the model
generates after them are appended, and the rounds repeat until the video is
``num_new_frames`` longer (the last round's surplus frames are dropped). The
given frames are returned unchanged; with ``substitute_known_frames`` (the
model's setting by default) every window also keeps its context frames exactly.
"""

import numpy as np

from keras_vdiff.conventions import unit_range_to_uint8
from keras_vdiff.validation import check_int


def as_uint8_video(video):
    """uint8 ``[0, 255]`` or float ``[-1, 1]`` videos ``(B, F, H, W, C)`` as a uint8 numpy array."""
    video = np.asarray(video)
    if video.ndim != 5:
        raise ValueError(f"`video` must be videos (B, F, H, W, C), got shape {video.shape}.")
    return video if video.dtype == np.uint8 else unit_range_to_uint8(video.astype(np.float32))


def extend_video(task, video, num_new_frames, context_frames=None, seed=0, **generate_kwargs):
    """``task.extend``: ``video`` followed by ``num_new_frames`` generated frames (module docstring).

    Args:
        task: a ``FrameConditionedDiffusion`` trained with the ``"prediction"`` mask mode.
        video: uint8 / ``[-1, 1]`` videos ``(B, F0, H, W, C)`` at the model's frame size, with at least
            ``context_frames`` frames.
        num_new_frames: frames to add (a positive integer).
        context_frames: known frames of each window (default: the model's ``num_context_frames``); from 1 to
            the window length minus 1.
        seed: seed of the first round; round ``r`` uses ``seed + r``.
        **generate_kwargs: ``labels``, ``prompts``, ``steps``, ``sampler``, ``guidance_scale``,
            ``substitute_known_frames``, ... of ``FrameConditionedDiffusion.generate`` (the same every round).

    Returns: numpy uint8 ``(B, F0 + num_new_frames, H, W, C)``; its first ``F0`` frames are ``video``'s.
    """
    if "prediction" not in task.mask_modes:
        raise ValueError(
            f"`extend` needs a model trained with the 'prediction' mask mode; this one has mask_modes="
            f"{task.mask_modes}."
        )
    if task.autoencoder is not None and hasattr(task.autoencoder, "latent_num_frames"):
        raise ValueError("`extend` works on frame-wise latents; this autoencoder compresses time.")
    for key in ("known_frames", "frame_mask", "return_latents"):
        if key in generate_kwargs:
            raise ValueError(f"`extend` sets `{key}` itself (the context frames of each round); do not pass it.")
    num_new_frames = check_int(num_new_frames, "num_new_frames")
    window = int(task.backbone.latent_shape[0])
    context = task.num_context_frames if context_frames is None else context_frames
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or not 1 <= context < window:
        raise ValueError(
            f"`context_frames` must be an integer from 1 to {window - 1} (the model's {window}-frame window "
            f"minus one), got {context!r}."
        )
    context = int(context)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an integer, got {seed!r}.")
    video = as_uint8_video(video)
    if video.shape[1] < context:
        raise ValueError(f"`video` has {video.shape[1]} frames; extending it needs at least {context}.")
    mask = np.array([1.0] * context + [0.0] * (window - context), np.float32)
    frames = [video]
    total, made, round_index = video.shape[1], 0, 0
    while made < num_new_frames:
        so_far = np.concatenate(frames, axis=1)
        known = np.zeros((video.shape[0], window) + video.shape[2:], np.uint8)
        known[:, :context] = so_far[:, total - context:total]
        generated = task.generate(known_frames=known, frame_mask=mask, seed=int(seed) + round_index,
                                  **generate_kwargs)
        new = generated[:, context:][:, :num_new_frames - made]
        frames.append(new)
        total, made, round_index = total + new.shape[1], made + new.shape[1], round_index + 1
    return np.concatenate(frames, axis=1)
