"""Streaming feature statistics and the Frechet video distance built on them.

FVD/FID only need the mean and covariance of the features of each set, so the
videos can flow through the feature extractor batch by batch: each batch
updates a running mean and centred scatter matrix in float64 (Chan, Golub &
LeVeque's pairwise update, which stays accurate when the mean is large
compared with the spread, unlike raw sums of squares), and thousands of videos
never sit in memory together. Statistics of shards computed on different
machines combine with :meth:`FeatureStatistics.merge`, and real-data
statistics can be saved once and reused.
"""

import os

import keras
import numpy as np

from keras_vdiff.atomic_files import staged_file
from keras_vdiff.metrics.frechet import frechet_distance

__all__ = [
    "FeatureStatistics",
    "compute_feature_statistics",
    "extract_features",
    "frechet_video_distance",
    "iterate_batches",
]


class FeatureStatistics:
    """Running mean and covariance of feature vectors (float64).

    Args:
        dim: feature dimension, or ``None`` to take it from the first batch.

    Example:
    >>> stats = FeatureStatistics()
    >>> for batch in np.array_split(np.random.randn(1000, 8), 7):
    ...     stats.update(batch)
    >>> stats.count, stats.mean.shape, stats.covariance.shape
    (1000, (8,), (8, 8))

    Paper: Chan, Golub & LeVeque, 1979, "Updating formulae and a pairwise
    algorithm for computing sample variances".
    """

    def __init__(self, dim=None):
        if dim is not None and (not isinstance(dim, (int, np.integer)) or dim < 1):
            raise ValueError(f"`dim` must be a positive integer or None; received {dim!r}.")
        self.dim = None if dim is None else int(dim)
        self.count = 0
        self._mean = None if dim is None else np.zeros(self.dim)
        self._scatter = None if dim is None else np.zeros((self.dim, self.dim))

    def _combine(self, count, mean, scatter):
        if self.dim is None:
            self.dim = mean.shape[0]
            self._mean = np.zeros(self.dim)
            self._scatter = np.zeros((self.dim, self.dim))
        if mean.shape[0] != self.dim:
            raise ValueError(
                f"Feature dimension {mean.shape[0]} does not match the "
                f"accumulated dimension {self.dim}."
            )
        if count == 0:
            return self
        total = self.count + count
        delta = mean - self._mean
        self._mean = self._mean + delta * (count / total)
        self._scatter = (
            self._scatter + scatter + np.outer(delta, delta) * (self.count * count / total)
        )
        self.count = total
        return self

    def update(self, features):
        """Adds a batch of features of shape ``(batch, dim)``; returns ``self``."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise ValueError(
                f"`features` must have shape (batch, dim); received shape {features.shape}."
            )
        if not np.all(np.isfinite(features)):
            raise ValueError("`features` contains NaN or infinite values.")
        if features.shape[0] == 0:
            if self.dim is None:
                self._combine(0, np.zeros(features.shape[1]), None)
            return self
        batch_mean = features.mean(axis=0)
        centred = features - batch_mean
        return self._combine(features.shape[0], batch_mean, centred.T @ centred)

    def merge(self, other):
        """Adds the statistics of another accumulator (e.g. another shard); returns ``self``."""
        if not isinstance(other, FeatureStatistics):
            raise TypeError(
                f"`other` must be a FeatureStatistics; received {type(other).__name__}."
            )
        if other.count == 0:
            return self
        return self._combine(other.count, other._mean.copy(), other._scatter.copy())

    @property
    def mean(self):
        """``(dim,)`` float64 mean of everything seen so far."""
        if self.count == 0:
            raise ValueError("FeatureStatistics is empty: call `update` with features first.")
        return self._mean.copy()

    @property
    def covariance(self):
        """``(dim, dim)`` float64 unbiased sample covariance (divides by ``count - 1``)."""
        if self.count < 2:
            raise ValueError(
                f"A covariance needs at least 2 feature vectors; only {self.count} seen."
            )
        return self._scatter / (self.count - 1)

    def save(self, path):
        """Writes ``count``, ``mean`` and ``scatter`` to an ``.npz`` file atomically."""
        if self.count == 0:
            raise ValueError("Refusing to save an empty FeatureStatistics.")
        with staged_file(path) as staging, open(staging, "wb") as file:
            np.savez(file, count=self.count, mean=self._mean, scatter=self._scatter)

    @classmethod
    def load(cls, path):
        """Reads statistics written by :meth:`save`."""
        with np.load(os.fspath(path)) as data:
            missing = {"count", "mean", "scatter"} - set(data.files)
            if missing:
                raise ValueError(
                    f"{path!r} is not a FeatureStatistics file: missing {sorted(missing)}."
                )
            stats = cls(dim=int(data["mean"].shape[0]))
            stats.count = int(data["count"])
            stats._mean = data["mean"].astype(np.float64)
            stats._scatter = data["scatter"].astype(np.float64)
        return stats

    def __repr__(self):
        return f"FeatureStatistics(dim={self.dim}, count={self.count})"


def iterate_batches(data, batch_size):
    """Yields numpy batches from an array or from an iterable of batches.

    Args:
        data: an array of samples (first axis is the sample axis), or any
            iterable (list, generator, ``tf.data.Dataset``) yielding arrays or
            dicts with a ``"videos"`` entry.
        batch_size: positive int; arrays are cut into batches of this size,
            iterables are passed through batch by batch.
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; received {batch_size!r}.")
    if hasattr(data, "shape") and hasattr(data, "__getitem__"):
        array = np.asarray(data)
        for start in range(0, array.shape[0], batch_size):
            yield array[start : start + batch_size]
        return
    if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__"):
        raise TypeError(
            "`data` must be an array of samples or an iterable of batches; "
            f"received {type(data).__name__}."
        )
    for batch in data:
        if isinstance(batch, dict):
            if "videos" not in batch:
                raise ValueError(
                    f"A dict batch must hold a 'videos' entry; received keys {sorted(batch)}."
                )
            batch = batch["videos"]
        yield np.asarray(batch)


def _feature_function(feature_extractor):
    if hasattr(feature_extractor, "features") and callable(feature_extractor.features):
        return feature_extractor.features
    if callable(feature_extractor):
        return feature_extractor
    raise TypeError(
        "`feature_extractor` must have a `features(videos)` method (e.g. "
        "MovingMNISTClassifier, I3D) or be callable as `extractor(videos)`; "
        f"received {type(feature_extractor).__name__}."
    )


def extract_features(data, feature_extractor, batch_size=16):
    """Yields ``(batch, dim)`` numpy features, one batch at a time.

    Args:
        data: array of videos or an iterable of video batches (see
            :func:`iterate_batches`).
        feature_extractor: object with ``features(videos) -> (batch, dim)``,
            or a callable with that signature.
        batch_size: batch size used when ``data`` is an array.
    """
    extract = _feature_function(feature_extractor)
    for batch in iterate_batches(data, batch_size):
        features = extract(batch)
        if not isinstance(features, np.ndarray):
            features = keras.ops.convert_to_numpy(features)
        if features.ndim != 2 or features.shape[0] != batch.shape[0]:
            raise ValueError(
                f"The feature extractor returned shape {features.shape} for a batch of "
                f"{batch.shape[0]} samples; expected ({batch.shape[0]}, dim)."
            )
        yield features


def compute_feature_statistics(data, feature_extractor, batch_size=16):
    """Streams ``data`` through ``feature_extractor`` into a :class:`FeatureStatistics`.

    ``data`` may already be a :class:`FeatureStatistics` (e.g. loaded from a
    file), in which case it is returned unchanged.
    """
    if isinstance(data, FeatureStatistics):
        return data
    stats = FeatureStatistics()
    for features in extract_features(data, feature_extractor, batch_size):
        stats.update(features)
    return stats


def frechet_video_distance(real, fake, feature_extractor, batch_size=16, eps=0.0):
    """Frechet distance between features of real and generated videos (FVD).

    With the I3D network (:class:`keras_vdiff.metrics.I3D`) and Kinetics
    weights this is the FVD of Unterthiner et al. (2018); with any other
    extractor (e.g. the MovingMNIST classifier's ``features``) it is a Frechet
    distance in that feature space; with an image extractor it is FID.

    Args:
        real: real videos as an array ``(N, F, H, W, C)``, an iterable of
            batches, or precomputed :class:`FeatureStatistics`.
        fake: generated videos, in the same forms.
        feature_extractor: object with ``features(videos)`` or a callable.
        batch_size: batch size used when an input is an array.
        eps: diagonal offset for near-singular covariances (see
            :func:`frechet_distance`).

    Returns:
        Python float.

    Example:
    >>> extractor = lambda v: v.reshape(len(v), -1)[:, :16].astype("float64")
    >>> frechet_video_distance(real_videos, fake_videos, extractor, batch_size=8)
    """
    real_stats = compute_feature_statistics(real, feature_extractor, batch_size)
    fake_stats = compute_feature_statistics(fake, feature_extractor, batch_size)
    if real_stats.dim != fake_stats.dim:
        raise ValueError(
            f"Real and fake feature dimensions differ: {real_stats.dim} vs {fake_stats.dim}."
        )
    return frechet_distance(
        real_stats.mean, real_stats.covariance, fake_stats.mean, fake_stats.covariance, eps=eps
    )
