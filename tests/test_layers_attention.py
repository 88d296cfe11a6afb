import keras
import numpy as np
import pytest

from keras_vdiff.layers import Attention, JointAttention
from conftest import to_numpy


def _np_softmax_attention(q, k, v, mask=None, bias=None):
    # q (B, N, H, Dh), k/v (B, M, H, Dh); mask (B, M) with 1 = attend; bias broadcastable to (B, H, N, M).
    logits = np.einsum("bnhd,bmhd->bhnm", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = np.where(mask[:, None, None, :] > 0, logits, -np.inf)
    logits -= logits.max(-1, keepdims=True)
    w = np.exp(logits)
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bhnm,bmhd->bnhd", w, v)


def _np_attention_layer(layer, x, context, mask=None, bias=None):
    def dense(d, inp):
        return inp @ to_numpy(d.kernel) + to_numpy(d.bias)

    b, n, _ = x.shape
    h, dh = layer.num_heads, layer.head_dim
    q = dense(layer.query, x).reshape(b, n, h, dh)
    k = dense(layer.key, context).reshape(b, context.shape[1], h, dh)
    v = dense(layer.value, context).reshape(b, context.shape[1], h, dh)
    out = _np_softmax_attention(q, k, v, mask, bias).reshape(b, n, h * dh)
    return dense(layer.output_projection, out)


def test_self_attention_equals_numpy_reference():
    x = np.random.randn(2, 5, 12).astype("float32")
    layer = Attention(num_heads=3, head_dim=4)
    got = to_numpy(layer(x))
    np.testing.assert_allclose(got, _np_attention_layer(layer, x, x), atol=1e-5)


def test_cross_attention_with_padding_mask_equals_reference_and_ignores_padded_keys():
    x = np.random.randn(2, 4, 8).astype("float32")
    text = np.random.randn(2, 6, 10).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], "float32")
    layer = Attention(num_heads=2, head_dim=4)
    got = to_numpy(layer(x, context=text, mask=mask))
    np.testing.assert_allclose(got, _np_attention_layer(layer, x, text, mask), atol=1e-5)
    changed = text.copy()
    changed[mask == 0] = 100.0 * np.random.randn(int((mask == 0).sum()), 10)
    np.testing.assert_allclose(to_numpy(layer(x, context=changed, mask=mask)), got, atol=1e-5)


def test_logit_bias_equals_reference_and_a_large_negative_bias_excludes_keys():
    x = np.random.randn(2, 4, 8).astype("float32")
    text = np.random.randn(2, 6, 10).astype("float32")
    bias = np.random.default_rng(3).standard_normal((1, 2, 4, 6)).astype("float32")  # per head, query, key
    layer = Attention(num_heads=2, head_dim=4)
    got = to_numpy(layer(x, context=text, bias=bias))
    np.testing.assert_allclose(got, _np_attention_layer(layer, x, text, bias=bias), atol=1e-5)
    assert np.abs(got - to_numpy(layer(x, context=text))).max() > 1e-4
    blocked = np.zeros((1, 1, 4, 6), "float32")
    blocked[..., 3:] = -1e4  # keys 3-5 get weight exp(-1e4) = 0
    changed = text.copy()
    changed[:, 3:] = 100.0 * np.random.randn(2, 3, 10)
    np.testing.assert_allclose(to_numpy(layer(x, context=changed, bias=blocked)),
                               to_numpy(layer(x, context=text, bias=blocked)), atol=1e-5)
    with pytest.raises(ValueError, match="either `mask` or `bias`"):
        layer(x, context=text, bias=bias, mask=np.ones((2, 6), "float32"))


def test_fully_masked_context_contributes_exactly_zero():
    layer = Attention(num_heads=2, head_dim=4)
    x = np.random.randn(2, 3, 8).astype("float32")
    text = np.random.randn(2, 4, 8).astype("float32")
    out = to_numpy(layer(x, context=text, mask=np.array([[0, 0, 0, 0], [1, 0, 0, 0]], "float32")))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], 0.0)
    assert np.abs(out[1]).max() > 0


def test_heads_are_split_correctly():
    # Zeroing the value projection of head 0 must change only the first head_dim outputs before
    # the output projection; with an identity output projection that is directly observable.
    layer = Attention(num_heads=2, head_dim=4, use_bias=False)
    x = np.random.randn(1, 5, 8).astype("float32")
    layer(x)
    layer.output_projection.kernel.assign(np.eye(8, dtype="float32"))
    layer.output_projection.bias.assign(np.zeros(8, "float32"))
    before = to_numpy(layer(x))
    kernel = to_numpy(layer.value.kernel)
    kernel[:, :4] = 0.0
    layer.value.kernel.assign(kernel)
    after = to_numpy(layer(x))
    np.testing.assert_allclose(after[..., :4], 0.0, atol=1e-6)
    np.testing.assert_allclose(after[..., 4:], before[..., 4:], atol=1e-6)


def test_qk_norm_and_zero_init_output():
    layer = Attention(num_heads=2, head_dim=4, qk_norm=True, zero_init_output=True)
    out = to_numpy(layer(np.random.randn(2, 3, 8).astype("float32")))
    np.testing.assert_array_equal(out, 0.0)
    # QK-norm: scaling x scales q and k, which RMS-norm removes; without bias the logits are unchanged.
    layer = Attention(num_heads=2, head_dim=4, qk_norm=True, use_bias=False)
    x = np.random.randn(1, 4, 8).astype("float32")
    q1, k1, _ = layer.project_qkv(x, x)
    q2, k2, _ = layer.project_qkv(10 * x, 10 * x)
    np.testing.assert_allclose(to_numpy(q1), to_numpy(q2), atol=1e-4)


def test_joint_attention_is_one_softmax_over_both_streams():
    layer = JointAttention(num_heads=2, head_dim=4)
    x = np.random.randn(2, 3, 8).astype("float32")
    c = np.random.randn(2, 4, 6).astype("float32")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], "float32")
    xo, co = layer(x, c, mask)

    def qkv(att, inp):
        def dense(d):
            return inp @ to_numpy(d.kernel) + to_numpy(d.bias)
        shape = (inp.shape[0], inp.shape[1], 2, 4)
        return [dense(d).reshape(shape) for d in (att.query, att.key, att.value)]

    qx, kx, vx = qkv(layer.x_attention, x)
    qc, kc, vc = qkv(layer.context_attention, c)
    full_mask = np.concatenate([np.ones((2, 3)), mask], axis=1)
    out = _np_softmax_attention(np.concatenate([qx, qc], 1), np.concatenate([kx, kc], 1),
                                np.concatenate([vx, vc], 1), full_mask).reshape(2, 7, 8)
    px, pc = layer.x_attention.output_projection, layer.context_attention.output_projection
    np.testing.assert_allclose(to_numpy(xo), out[:, :3] @ to_numpy(px.kernel) + to_numpy(px.bias), atol=1e-5)
    np.testing.assert_allclose(to_numpy(co), out[:, 3:] @ to_numpy(pc.kernel) + to_numpy(pc.bias), atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_heads"):
        Attention(num_heads=0, head_dim=4)
    with pytest.raises(ValueError, match="mask"):
        Attention(2, 4)(np.zeros((1, 2, 8), "float32"), mask=np.ones((1, 2, 2, 2), "float32"))


def test_serialization_round_trip():
    for layer in (Attention(2, 4, qk_norm=True, output_dim=6), JointAttention(2, 4)):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert restored.get_config() == layer.get_config()
