"""KID/KVD: unbiased cubic polynomial-kernel MMD^2 against a double-loop reference."""

import keras
import numpy as np
import pytest

from keras_vdiff import metrics


def loop_mmd(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as explicit loops."""
    d = x.shape[1]

    def k(a, b):
        return (sum(a[i] * b[i] for i in range(d)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2.0 * xy


def test_matches_double_loop_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5))
    y = rng.normal(size=(15, 5)) + 0.4
    # float64 on both sides: agreement to round-off.
    np.testing.assert_allclose(metrics.kernel_distance(x, y), loop_mmd(x, y), rtol=1e-10)


def test_full_size_subsets_equal_full_estimate():
    # Subsets as large as the sets are permutations of them; MMD^2 does not depend on order.
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 4)), rng.normal(size=(9, 4)) * 2.0
    mean, std = metrics.kernel_distance(x, y, num_subsets=3, subset_size=50, return_std=True)
    np.testing.assert_allclose(mean, loop_mmd(x, y), rtol=1e-10)
    assert std == pytest.approx(0.0, abs=1e-10)


def test_subsets_separate_distributions():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(300, 8))
    same = rng.normal(size=(300, 8))
    shifted = rng.normal(size=(300, 8)) + 1.0
    close, close_std = metrics.kernel_distance(real, same, num_subsets=20, subset_size=100, return_std=True)
    far = metrics.kernel_distance(real, shifted, num_subsets=20, subset_size=100)
    assert abs(close) < 3.0 * close_std + 1e-3
    assert far > 10.0 * abs(close)


def test_kernel_video_distance_with_extractor():
    rng = np.random.default_rng(3)
    real = rng.integers(0, 256, size=(10, 2, 4, 4, 1), dtype=np.uint8)
    fake = rng.integers(0, 128, size=(10, 2, 4, 4, 1), dtype=np.uint8)
    dense = keras.layers.Dense(4, kernel_initializer=keras.initializers.RandomNormal(seed=0))

    def extractor(videos):
        return dense(keras.ops.convert_to_tensor(np.asarray(videos, "float32").reshape(len(videos), -1) / 255.0))

    features_real = keras.ops.convert_to_numpy(extractor(real)).astype(np.float64)
    features_fake = keras.ops.convert_to_numpy(extractor(fake)).astype(np.float64)
    value = metrics.kernel_video_distance(real, fake, extractor, batch_size=4)
    # float32 features from the backend: 1e-5 relative.
    np.testing.assert_allclose(value, loop_mmd(features_real, features_fake), rtol=1e-5)
    np.testing.assert_allclose(metrics.kernel_video_distance(features_real, features_fake, None), value, rtol=1e-5)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="same dimension"):
        metrics.kernel_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.kernel_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="num_subsets"):
        metrics.kernel_distance(np.zeros((4, 3)), np.zeros((4, 3)), num_subsets=0)
    with pytest.raises(ValueError, match="features_fake"):
        metrics.kernel_distance(np.zeros((4, 3)), np.zeros(4))
