import math

import keras
import numpy as np
import pytest

from keras_vdiff.layers import (
    LabelEmbedding,
    PooledTextEmbedding,
    TimestepEmbedding,
    apply_rope,
    rope_frequencies,
    sincos_embedding_1d,
    sincos_embedding_2d,
    sincos_embedding_3d,
    timestep_sinusoids,
)
from conftest import to_numpy


def _ref_1d(pos, dim):
    # Written out element by element from Vaswani et al.: sin on the first half, cos on the second.
    out = np.zeros((len(pos), dim))
    for k, p in enumerate(pos):
        for i in range(dim // 2):
            out[k, i] = math.sin(p / 10000 ** (2 * i / dim))
            out[k, dim // 2 + i] = math.cos(p / 10000 ** (2 * i / dim))
    return out


def test_sincos_1d_matches_formula():
    np.testing.assert_allclose(sincos_embedding_1d(7, 16), _ref_1d(range(7), 16), atol=1e-6)


def test_sincos_2d_rows_then_columns():
    table = sincos_embedding_2d(3, 4, 16)
    for r in range(3):
        for c in range(4):
            ref = np.concatenate([_ref_1d([r], 8)[0], _ref_1d([c], 8)[0]])
            np.testing.assert_allclose(table[r * 4 + c], ref, atol=1e-6)


def test_sincos_3d_frame_then_grid():
    table = sincos_embedding_3d(2, 2, 3, 32, temporal_dim=8)
    for f in range(2):
        for r in range(2):
            for c in range(3):
                ref = np.concatenate([_ref_1d([f], 8)[0], _ref_1d([r], 12)[0], _ref_1d([c], 12)[0]])
                np.testing.assert_allclose(table[(f * 2 + r) * 3 + c], ref, atol=1e-6)
    with pytest.raises(ValueError, match="dim"):
        sincos_embedding_1d(4, 7)


def test_timestep_sinusoids_match_dit_formula():
    t = np.array([0.0, 3.0, 999.0], "float32")
    got = to_numpy(timestep_sinusoids(t, 8))
    freqs = np.exp(-math.log(10000) * np.arange(4) / 4)
    ref = np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], axis=1)
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("frequency_shift", [0, 1])
def test_timestep_sinusoids_match_diffusers(frequency_shift):
    # diffusers' float32 features, as its Latte / DiT / Wan timestep embedders compute them ([cos, sin] order).
    torch = pytest.importorskip("torch")
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    t = np.array([0.0, 1.0, 17.5, 250.0, 999.0], "float32")
    ref = embeddings.get_timestep_embedding(torch.from_numpy(t), 32, flip_sin_to_cos=True,
                                            downscale_freq_shift=frequency_shift).numpy()
    got = to_numpy(timestep_sinusoids(t, 32, frequency_shift=frequency_shift))
    assert got.dtype == np.float32
    # float32 arguments reach ~1e3: one ulp of the argument is ~6e-5, so the tolerance is a few ulps of it.
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=0)


def test_timestep_embedding_discrete_and_continuous_agree_with_time_scale():
    discrete = TimestepEmbedding(32)
    continuous = TimestepEmbedding(32, time_scale=1000.0)
    discrete.build((None,))
    continuous.build((None,))
    continuous.set_weights(discrete.get_weights())
    a = to_numpy(discrete(np.array([250.0, 500.0], "float32")))
    b = to_numpy(continuous(np.array([0.25, 0.5], "float32")))
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert a.shape == (2, 32)
    assert np.abs(a[0] - a[1]).max() > 1e-3  # different timesteps differ


def test_label_embedding_drop_rate_within_binomial_tolerance_and_inference_never_drops():
    emb = LabelEmbedding(10, 8, dropout_prob=0.25, seed=3)
    labels = np.full((4000,), 3, "int32")
    dropped = to_numpy(emb.drop_labels(labels, training=True)) == 10
    n, p = labels.size, 0.25
    assert abs(dropped.mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert (to_numpy(emb.drop_labels(labels, training=False)) == 3).all()
    forced = to_numpy(emb.drop_labels(labels[:4], force_drop=np.array([1, 0, 1, 0], bool)))
    np.testing.assert_array_equal(forced, [10, 3, 10, 3])
    out = to_numpy(emb(np.array([10, 3], "int32")))
    table = to_numpy(emb.table.embeddings)
    np.testing.assert_allclose(out, table[[10, 3]], atol=1e-6)


def test_pooled_text_embedding_uses_learned_null_for_empty_prompt():
    emb = PooledTextEmbedding(16)
    pooled = np.random.randn(2, 8).astype("float32")
    out = to_numpy(emb(pooled, np.array([[1, 1, 0], [0, 0, 0]], "int32")))
    np.testing.assert_allclose(out[1], to_numpy(emb.null_embedding), atol=1e-6)
    ref = to_numpy(emb(pooled))
    np.testing.assert_allclose(out[0], ref[0], atol=1e-5)


def test_rope_matches_keras_hub_rotary_embedding_in_1d():
    import keras_hub

    x = np.random.randn(2, 6, 3, 8).astype("float32")
    ref = to_numpy(keras_hub.layers.RotaryEmbedding(max_wavelength=10000)(x))
    got = to_numpy(apply_rope(x, rope_frequencies(np.arange(6), 8)))
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_rope_is_relative_in_every_axis():
    # <R(p) q, R(p') k> depends only on p - p' (per axis).
    q = np.random.randn(1, 1, 1, 12).astype("float32")
    k = np.random.randn(1, 1, 1, 12).astype("float32")

    def score(pq, pk):
        rq = to_numpy(apply_rope(q, rope_frequencies(np.array([pq]), 12)))
        rk = to_numpy(apply_rope(k, rope_frequencies(np.array([pk]), 12)))
        return float((rq * rk).sum())

    assert abs(score((1, 2, 3), (0, 0, 0)) - score((5, 7, 9), (4, 5, 6))) < 1e-4
    assert abs(score((1, 2, 3), (0, 0, 0)) - score((1, 2, 4), (0, 0, 0))) > 1e-4


def test_serialization_round_trip():
    for layer in (TimestepEmbedding(16, time_scale=1000.0), LabelEmbedding(5, 8, dropout_prob=0.2),
                  PooledTextEmbedding(8)):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert restored.get_config() == layer.get_config()
