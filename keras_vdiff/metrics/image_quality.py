"""SSIM and PSNR for videos and images in [0, 255], computed frame by frame in numpy.

Both are full-reference metrics: ``a`` and ``b`` are paired (a generated video
and its ground truth). Each frame is scored on its own, frame scores are
averaged per video, and video scores are averaged over the batch (or returned
per video with ``reduction="none"``).

SSIM follows Wang et al., 2004, "Image Quality Assessment: From Error
Visibility to Structural Similarity": an 11x11 Gaussian window with sigma 1.5,
``K1 = 0.01``, ``K2 = 0.03``, data range 255, population (not sample)
statistics, and the SSIM map averaged over the pixels where the window lies
fully inside the frame and over channels. This matches
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=-1)``.

The arithmetic is float64 numpy (metrics are evaluated on host memory, not
inside a compiled graph); frames are processed in chunks to bound memory.
"""

import numpy as np

__all__ = ["gaussian_window", "psnr", "ssim"]

_REDUCTIONS = ("mean", "none")


def gaussian_window(size=11, sigma=1.5):
    """Normalised 1-D Gaussian of odd length ``size`` (the separable SSIM window)."""
    if not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"`size` must be a positive odd integer; received {size!r}.")
    if sigma <= 0:
        raise ValueError(f"`sigma` must be positive; received {sigma!r}.")
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    window = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return window / window.sum()


def _as_frames(value, name, data_range):
    """Validates a video/image batch and returns float64 frames (N, F, H, W, C)."""
    array = np.asarray(value)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise TypeError(f"`{name}` must hold integers or floats; received dtype {array.dtype}.")
    if array.ndim == 4:
        array = array[:, None]
    elif array.ndim != 5:
        raise ValueError(
            f"`{name}` must be videos (N, F, H, W, C) or images (N, H, W, C); "
            f"received shape {array.shape}."
        )
    array = array.astype(np.float64)
    if array.size and (not np.all(np.isfinite(array))):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    if array.size and (array.min() < 0 or array.max() > data_range):
        raise ValueError(
            f"`{name}` must lie in [0, {data_range:g}]; received values in "
            f"[{array.min():g}, {array.max():g}]. Convert [-1, 1] or [0, 1] data with "
            f"`(x + 1) * 127.5` or `x * 255` first."
        )
    return array


def _check_pair(a, b, data_range):
    if not np.isscalar(data_range) or data_range <= 0:
        raise ValueError(f"`data_range` must be a positive number; received {data_range!r}.")
    frames_a = _as_frames(a, "a", data_range)
    frames_b = _as_frames(b, "b", data_range)
    if frames_a.shape != frames_b.shape:
        raise ValueError(
            f"`a` and `b` must have the same shape; received {np.shape(a)} and {np.shape(b)}."
        )
    if frames_a.shape[0] == 0 or frames_a.shape[1] == 0:
        raise ValueError(f"`a` and `b` hold no frames; received shape {np.shape(a)}.")
    return frames_a, frames_b


def _reduce(per_video, reduction):
    if reduction == "mean":
        return float(per_video.mean())
    return per_video


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}; received {reduction!r}.")


def _filter_valid(images, window):
    """Separable 'valid' correlation of (M, H, W, C) images over H and W."""
    size = window.shape[0]
    rows = np.lib.stride_tricks.sliding_window_view(images, size, axis=1)
    images = np.tensordot(rows, window, axes=([-1], [0]))
    columns = np.lib.stride_tricks.sliding_window_view(images, size, axis=2)
    return np.tensordot(columns, window, axes=([-1], [0]))


def _ssim_frames(x, y, window, c1, c2):
    """Mean SSIM of each frame pair; x, y are (M, H, W, C) float64."""
    mu_x = _filter_valid(x, window)
    mu_y = _filter_valid(y, window)
    var_x = _filter_valid(x * x, window) - mu_x * mu_x
    var_y = _filter_valid(y * y, window) - mu_y * mu_y
    cov_xy = _filter_valid(x * y, window) - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean(axis=(1, 2, 3))


def ssim(
    a,
    b,
    reduction="mean",
    data_range=255.0,
    window_size=11,
    sigma=1.5,
    k1=0.01,
    k2=0.03,
    frames_per_chunk=64,
):
    """Structural similarity of paired videos (or images) in ``[0, data_range]``.

    Args:
        a: videos ``(N, F, H, W, C)`` or images ``(N, H, W, C)``, uint8 or
            float, values in ``[0, 255]``. ``H`` and ``W`` must be at least
            ``window_size``.
        b: the same shape as ``a``.
        reduction: ``"mean"`` returns a float (mean over frames, then
            videos); ``"none"`` returns a ``(N,)`` float64 array of per-video
            means over frames.
        data_range: the value range (255 for 8-bit frames).
        window_size: Gaussian window side (11).
        sigma: Gaussian standard deviation (1.5).
        k1: luminance constant (0.01).
        k2: contrast constant (0.03).
        frames_per_chunk: frames processed together (bounds memory).

    Returns:
        float or ``(N,)`` numpy array, each in ``[-1, 1]`` (1 for identical inputs).

    Example:
    >>> videos = np.random.randint(0, 256, (2, 4, 16, 16, 1), dtype=np.uint8)
    >>> ssim(videos, videos)
    1.0

    Paper: Wang et al., 2004, "Image Quality Assessment: From Error Visibility
    to Structural Similarity".
    """
    _check_reduction(reduction)
    frames_a, frames_b = _check_pair(a, b, data_range)
    num_videos, num_frames, height, width, channels = frames_a.shape
    if height < window_size or width < window_size:
        raise ValueError(
            f"SSIM needs frames of at least {window_size}x{window_size} pixels (the "
            f"window size); received {height}x{width}."
        )
    window = gaussian_window(window_size, sigma)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    flat_a = frames_a.reshape(-1, height, width, channels)
    flat_b = frames_b.reshape(-1, height, width, channels)
    scores = np.empty(flat_a.shape[0])
    chunk = max(1, int(frames_per_chunk))
    for start in range(0, flat_a.shape[0], chunk):
        stop = start + chunk
        scores[start:stop] = _ssim_frames(flat_a[start:stop], flat_b[start:stop], window, c1, c2)
    return _reduce(scores.reshape(num_videos, num_frames).mean(axis=1), reduction)


def psnr(a, b, reduction="mean", data_range=255.0):
    """Peak signal-to-noise ratio of paired videos (or images) in ``[0, data_range]``.

    Per frame ``10 * log10(data_range^2 / MSE)`` with the MSE over pixels and
    channels; frames are averaged per video. A frame identical to its
    reference has infinite PSNR, so the video's (and the batch's) mean is
    ``inf`` too.

    Args:
        a: videos ``(N, F, H, W, C)`` or images ``(N, H, W, C)``, uint8 or
            float in ``[0, 255]``.
        b: the same shape as ``a``.
        reduction: ``"mean"`` (float) or ``"none"`` (``(N,)`` array per video).
        data_range: the value range (255 for 8-bit frames).

    Returns:
        float or ``(N,)`` numpy array, in decibels.

    Example:
    >>> a = np.zeros((1, 2, 8, 8, 3)); b = np.full((1, 2, 8, 8, 3), 25.5)
    >>> psnr(a, b)  # MSE 650.25 -> 10 * log10(255^2 / 650.25)
    20.0
    """
    _check_reduction(reduction)
    frames_a, frames_b = _check_pair(a, b, data_range)
    mse = ((frames_a - frames_b) ** 2).mean(axis=(2, 3, 4))
    with np.errstate(divide="ignore"):
        per_frame = 10.0 * np.log10(data_range**2 / mse)
    return _reduce(per_frame.mean(axis=1), reduction)
