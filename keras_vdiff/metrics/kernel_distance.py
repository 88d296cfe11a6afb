"""Kernel distance (KID / KVD): unbiased MMD^2 with a cubic polynomial kernel.

Binkowski et al., 2018, "Demystifying MMD GANs", proposed the Kernel Inception
Distance: the squared maximum mean discrepancy between real and generated
features under ``k(x, y) = (x . y / d + 1)^3``, estimated without bias (the
diagonal terms ``k(x_i, x_i)`` are left out). Unlike the Frechet distance it
has an unbiased estimator, so it can be compared across sample sizes; on video
features it is called KVD (Unterthiner et al., 2018). Computed in float64 numpy.
"""

import numpy as np

from keras_vdiff.metrics.feature_statistics import extract_features

__all__ = ["kernel_distance", "kernel_video_distance", "polynomial_kernel", "polynomial_mmd"]


def polynomial_kernel(x, y, degree=3, gamma=None, coef=1.0):
    """``(gamma * x @ y.T + coef) ** degree``, with ``gamma = 1 / dim`` by default."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (gamma * (x @ y.T) + coef) ** degree


def polynomial_mmd(x, y, degree=3, gamma=None, coef=1.0):
    """Unbiased MMD^2 between two feature sets (each needs at least 2 rows).

    ``mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)``.
    """
    m, n = x.shape[0], y.shape[0]
    k_xx = polynomial_kernel(x, x, degree, gamma, coef)
    k_yy = polynomial_kernel(y, y, degree, gamma, coef)
    k_xy = polynomial_kernel(x, y, degree, gamma, coef)
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())


def _as_features(value, name):
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"`{name}` must have shape (num_samples, dim); received {array.shape}.")
    if array.shape[0] < 2:
        raise ValueError(f"`{name}` needs at least 2 samples; received {array.shape[0]}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return array


def kernel_distance(
    features_real,
    features_fake,
    num_subsets=None,
    subset_size=1000,
    degree=3,
    gamma=None,
    coef=1.0,
    seed=0,
    return_std=False,
):
    """Unbiased polynomial-kernel MMD^2 between two feature sets (KID / KVD).

    Args:
        features_real: ``(m, d)`` features of real samples.
        features_fake: ``(n, d)`` features of generated samples.
        num_subsets: ``None`` (default) computes one estimate on all samples.
            An int draws that many random subsets of ``subset_size`` samples
            from each set (without replacement within a subset) and averages
            the estimates, as in the KID paper; this bounds memory by
            ``subset_size^2``.
        subset_size: samples per subset; capped at the smaller set's size.
        degree: polynomial degree (3).
        gamma: scale of the dot product; ``None`` means ``1 / d``.
        coef: additive constant (1).
        seed: seed for drawing subsets.
        return_std: also return the standard deviation over subsets (``0.0``
            when ``num_subsets`` is ``None``).

    Returns:
        float, or ``(mean, std)`` when ``return_std``. Values can be slightly
        negative: the estimator is unbiased, not non-negative.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> kernel_distance(rng.normal(size=(200, 16)), rng.normal(size=(200, 16)) + 0.5)

    Paper: Binkowski et al., 2018, "Demystifying MMD GANs".
    """
    x = _as_features(features_real, "features_real")
    y = _as_features(features_fake, "features_fake")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"`features_real` and `features_fake` must have the same dimension; "
            f"received {x.shape[1]} and {y.shape[1]}."
        )
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    if num_subsets is None:
        value = polynomial_mmd(x, y, degree, gamma, coef)
        return (value, 0.0) if return_std else value
    if not isinstance(num_subsets, (int, np.integer)) or num_subsets < 1:
        raise ValueError(f"`num_subsets` must be a positive integer or None; received {num_subsets!r}.")
    if not isinstance(subset_size, (int, np.integer)) or subset_size < 2:
        raise ValueError(f"`subset_size` must be an integer >= 2; received {subset_size!r}.")
    size = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    estimates = np.empty(num_subsets)
    for index in range(num_subsets):
        subset_x = x[rng.choice(x.shape[0], size, replace=False)]
        subset_y = y[rng.choice(y.shape[0], size, replace=False)]
        estimates[index] = polynomial_mmd(subset_x, subset_y, degree, gamma, coef)
    mean = float(estimates.mean())
    return (mean, float(estimates.std())) if return_std else mean


def kernel_video_distance(real, fake, feature_extractor, batch_size=16, **kwargs):
    """KVD: :func:`kernel_distance` over features of real and generated videos.

    Args:
        real: array of videos or iterable of batches (see
            :func:`keras_vdiff.metrics.frechet_video_distance`), or a
            precomputed ``(m, d)`` feature array passed as ``np.ndarray`` with
            ``feature_extractor=None``.
        fake: the same for generated videos.
        feature_extractor: object with ``features(videos)`` or a callable;
            ``None`` when ``real`` and ``fake`` already are features.
        batch_size: batch size used for arrays.
        **kwargs: forwarded to :func:`kernel_distance`.

    The features (not the videos) are kept in memory: ``N x d`` floats.
    """
    if feature_extractor is None:
        return kernel_distance(real, fake, **kwargs)
    real_features = np.concatenate(list(extract_features(real, feature_extractor, batch_size)))
    fake_features = np.concatenate(list(extract_features(fake, feature_extractor, batch_size)))
    return kernel_distance(real_features, fake_features, **kwargs)
