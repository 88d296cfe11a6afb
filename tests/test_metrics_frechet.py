"""Frechet distance, streaming feature statistics and FVD over a pluggable extractor."""

import keras
import numpy as np
import pytest
import scipy.linalg

from keras_vdiff import metrics


def random_covariance(rng, dim, rank=None, scale=1.0):
    rank = dim if rank is None else rank
    factor = rng.normal(size=(dim, rank)) * scale
    return factor @ factor.T / rank


def scipy_frechet(mu1, sigma1, mu2, sigma2):
    """The textbook FID formula with scipy's Schur-based sqrtm (the usual reference)."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)


@pytest.mark.parametrize("dim", [1, 7, 32])
def test_matches_scipy_on_full_rank_covariances(dim):
    rng = np.random.default_rng(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    sigma1 = random_covariance(rng, dim) + 0.1 * np.eye(dim)
    sigma2 = random_covariance(rng, dim, scale=2.0) + 0.1 * np.eye(dim)
    expected = scipy_frechet(mu1, sigma1, mu2, sigma2)
    # Tolerance: both are float64 eigen/Schur computations on well-conditioned matrices.
    np.testing.assert_allclose(metrics.frechet_distance(mu1, sigma1, mu2, sigma2), expected, rtol=1e-8, atol=1e-9)


def test_rank_deficient_covariances_match_nuclear_norm_and_scipy():
    # 10 samples in 40 dimensions: both covariances have rank 9.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 40))
    y = rng.normal(size=(10, 40)) * 1.5 + 0.3
    mu1, mu2 = x.mean(0), y.mean(0)
    sigma1, sigma2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # Exact reference: with S1 = A A^T and S2 = B B^T, tr((S1 S2)^1/2) is the nuclear norm of A^T B.
    a = (x - mu1).T / np.sqrt(9.0)
    b = (y - mu2).T / np.sqrt(9.0)
    nuclear = np.linalg.svd(a.T @ b, compute_uv=False).sum()
    exact = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * nuclear
    value = metrics.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert np.isfinite(value)
    np.testing.assert_allclose(value, exact, rtol=1e-7)
    # scipy's sqrtm is less accurate on singular products: looser tolerance.
    np.testing.assert_allclose(value, scipy_frechet(mu1, sigma1, mu2, sigma2), rtol=1e-3)
    # A small eps offset changes the result only by O(eps * dim).
    regularised = metrics.frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6)
    assert abs(regularised - value) < 1e-2


def test_closed_forms():
    # Same Gaussian: zero. Pure translation: squared distance of the means.
    rng = np.random.default_rng(0)
    sigma = random_covariance(rng, 5)
    mu = rng.normal(size=5)
    assert metrics.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert metrics.frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(shift @ shift, rel=1e-9)
    # Commuting (diagonal) covariances: sum of (sqrt(a) - sqrt(b))^2.
    d1, d2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert metrics.frechet_distance(np.zeros(3), np.diag(d1), np.zeros(3), np.diag(d2)) == pytest.approx(expected)


def test_symmetric_sqrtm_squares_back():
    rng = np.random.default_rng(1)
    matrix = random_covariance(rng, 12, rank=5)
    root = metrics.symmetric_sqrtm(matrix)
    np.testing.assert_allclose(root @ root, matrix, atol=1e-10)
    np.testing.assert_allclose(root, root.T, atol=1e-12)


def test_frechet_rejects_bad_shapes():
    with pytest.raises(ValueError, match="mu2"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma2"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="eps"):
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), eps=-1.0)


def test_streaming_statistics_match_numpy_and_merge():
    rng = np.random.default_rng(5)
    # A large common offset: naive sums of squares would lose digits here.
    features = rng.normal(size=(301, 6)) * 0.01 + 1e4
    stats = metrics.FeatureStatistics()
    for batch in np.array_split(features, [1, 2, 50, 51, 200]):
        stats.update(batch)
    assert stats.count == 301
    np.testing.assert_allclose(stats.mean, features.mean(0), rtol=1e-13)
    np.testing.assert_allclose(stats.covariance, np.cov(features, rowvar=False), rtol=1e-7, atol=1e-12)

    left, right = metrics.FeatureStatistics(), metrics.FeatureStatistics()
    left.update(features[:120])
    right.update(features[120:])
    merged = left.merge(right)
    np.testing.assert_allclose(merged.mean, stats.mean, rtol=1e-13)
    np.testing.assert_allclose(merged.covariance, stats.covariance, rtol=1e-7, atol=1e-12)


def test_statistics_save_load_and_errors(tmp_path):
    stats = metrics.FeatureStatistics()
    with pytest.raises(ValueError, match="empty"):
        stats.mean
    stats.update(np.arange(12.0).reshape(4, 3))
    path = tmp_path / "real_stats.npz"
    stats.save(path)
    loaded = metrics.FeatureStatistics.load(path)
    assert loaded.count == 4
    np.testing.assert_array_equal(loaded.covariance, stats.covariance)
    assert [p.name for p in tmp_path.iterdir()] == ["real_stats.npz"]  # no temporary left behind
    with pytest.raises(ValueError, match="dimension"):
        stats.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        stats.update(np.zeros(3))
    one = metrics.FeatureStatistics()
    one.update(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        one.covariance


def keras_extractor(seed=0):
    """A small Keras network: Flatten -> Dense(6), run on the active backend."""
    model = keras.Sequential(
        [keras.layers.Flatten(), keras.layers.Dense(6, kernel_initializer=keras.initializers.RandomNormal(seed=seed))]
    )
    return lambda videos: model(keras.ops.convert_to_tensor(np.asarray(videos, "float32") / 255.0))


def test_frechet_video_distance_streams_arrays_iterables_and_statistics():
    rng = np.random.default_rng(7)
    real = rng.integers(0, 256, size=(20, 2, 4, 4, 1), dtype=np.uint8)
    fake = np.clip(real.astype(int) + rng.integers(-40, 40, size=real.shape), 0, 255).astype(np.uint8)
    extractor = keras_extractor()
    real_features = keras.ops.convert_to_numpy(extractor(real)).astype(np.float64)
    fake_features = keras.ops.convert_to_numpy(extractor(fake)).astype(np.float64)
    expected = scipy_frechet(
        real_features.mean(0), np.cov(real_features, rowvar=False), fake_features.mean(0), np.cov(fake_features, rowvar=False)
    )
    from_arrays = metrics.frechet_video_distance(real, fake, extractor, batch_size=6)
    generator = (fake[i : i + 7] for i in range(0, 20, 7))
    real_stats = metrics.compute_feature_statistics(real, extractor, batch_size=3)
    from_mixed = metrics.frechet_video_distance(real_stats, generator, extractor)
    dict_batches = [{"videos": fake[:10]}, {"videos": fake[10:]}]
    from_dicts = metrics.frechet_video_distance(real, dict_batches, extractor)
    # float32 features from the backend, float64 statistics: 1e-5 relative.
    np.testing.assert_allclose([from_arrays, from_mixed, from_dicts], expected, rtol=1e-5)
    assert from_arrays > 0.0


def test_frechet_video_distance_uses_features_method_and_checks_output():
    class Extractor:
        def features(self, videos):
            return videos.reshape(len(videos), -1)[:, :3].astype(np.float64)

    videos = np.random.default_rng(0).integers(0, 256, size=(8, 2, 3, 3, 1))
    assert metrics.frechet_video_distance(videos, videos, Extractor(), batch_size=3) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="expected"):
        metrics.frechet_video_distance(videos, videos, lambda v: np.zeros((1, 3)))
    with pytest.raises(TypeError, match="feature_extractor"):
        metrics.frechet_video_distance(videos, videos, object())
    with pytest.raises(TypeError, match="iterable"):
        metrics.frechet_video_distance(3, videos, Extractor())
