"""keras_vdiff.layers.core: Keras' Dense / norms with a lean PyTorch call give Keras' results on every backend,
take the lean path only where ``Layer.__call__`` would not change the result, and keep training flags working;
on JAX, Dense's flat matmul gives Keras' gradients without a transposed copy of its input."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_vdiff.layers import Attention
from keras_vdiff.layers.core import Dense, LayerNormalization, RMSNormalization
from tests.conftest import to_numpy

TORCH = keras.backend.backend() == "torch"
JAX = keras.backend.backend() == "jax"


def _copy_weights(source, target):
    target.set_weights(source.get_weights())


@pytest.mark.parametrize("use_bias,activation", [(True, None), (False, None), (True, "gelu")])
def test_dense_equals_keras_dense(use_bias, activation):
    x = np.random.randn(2, 5, 3, 6).astype("float32")
    ours, theirs = Dense(4, use_bias=use_bias, activation=activation), keras.layers.Dense(4, use_bias=use_bias,
                                                                                        activation=activation)
    ours.build(x.shape)
    theirs.build(x.shape)
    weights = [np.random.randn(*w.shape).astype("float32") for w in theirs.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    tensor = ops.convert_to_tensor(x)
    ours(tensor)  # the first call builds through Keras; the second is the lean one on PyTorch
    np.testing.assert_allclose(to_numpy(ours(tensor)), to_numpy(theirs(tensor)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(theirs(x)), rtol=1e-5, atol=1e-5)  # numpy input


@pytest.mark.parametrize("shape", [(3, 6), (2, 3, 5, 6)])
def test_dense_with_lora_uses_the_merged_kernel(shape):
    x = ops.convert_to_tensor(np.random.randn(*shape).astype("float32"))
    dense = Dense(4)
    dense.build((None, 6))
    dense.enable_lora(2)
    dense.lora_kernel_b.assign(np.random.randn(2, 4).astype("float32"))
    merged = to_numpy(dense.kernel)
    expected = to_numpy(x) @ merged + to_numpy(dense.bias)
    np.testing.assert_allclose(to_numpy(dense(x)), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(merged, to_numpy(dense._kernel))  # the LoRA factor is really in play


@pytest.mark.parametrize("cls,keras_cls", [(LayerNormalization, keras.layers.LayerNormalization),
                                           (RMSNormalization, keras.layers.RMSNormalization)])
def test_norms_equal_keras_norms(cls, keras_cls):
    x = ops.convert_to_tensor(np.random.randn(2, 7, 8).astype("float32") * 3 + 1)
    ours, theirs = cls(epsilon=1e-6), keras_cls(epsilon=1e-6)
    ours.build(x.shape)
    theirs.build(x.shape)
    weights = [np.random.randn(*w.shape).astype("float32") for w in theirs.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    ours(x)
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(theirs(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 6), (2, 4, 3, 6)])
def test_mixed_precision_dense_matches_keras(shape):
    x = ops.convert_to_tensor(np.random.randn(*shape).astype("float32"))
    ours, theirs = Dense(4, dtype="mixed_bfloat16"), keras.layers.Dense(4, dtype="mixed_bfloat16")
    ours.build((None, 6))
    theirs.build((None, 6))
    ours.set_weights(theirs.get_weights())
    a, b = ours(x), theirs(x)
    assert keras.backend.standardize_dtype(a.dtype) == "bfloat16"
    np.testing.assert_allclose(to_numpy(ops.cast(a, "float32")), to_numpy(ops.cast(b, "float32")), atol=2e-2)


def _dense_pair(x_shape, units):
    ours, theirs = Dense(units), keras.layers.Dense(units)
    ours.build(x_shape)
    theirs.build(x_shape)
    ours.set_weights([np.random.randn(*w.shape).astype("float32") for w in theirs.get_weights()])
    theirs.set_weights(ours.get_weights())
    return ours, theirs


def _jax_dense_gradient(layer, x, jit=False):
    """``jax.grad`` of ``sum(tanh(layer(x)))`` with respect to the kernel, the bias and ``x`` (the jitted function
    when ``jit``)."""
    import jax

    def loss(weights, x):
        return jax.numpy.sum(jax.numpy.tanh(layer.stateless_call(weights, [], x)[0]))

    gradient = jax.jit(jax.grad(loss, argnums=(0, 1)))
    weights = [v.value for v in layer.trainable_variables]
    return gradient if jit else gradient(weights, x)


@pytest.mark.skipif(not JAX, reason="the flat matmul is the JAX path of Dense")
def test_flat_matmul_gradients_equal_keras_dense():
    x = np.random.randn(2, 3, 5, 6).astype("float32")
    ours, theirs = _dense_pair(x.shape, 4)
    (our_weights, our_x), (their_weights, their_x) = _jax_dense_gradient(ours, x), _jax_dense_gradient(theirs, x)
    for a, b in zip([*our_weights, our_x], [*their_weights, their_x]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not JAX, reason="the flat matmul is the JAX path of Dense")
def test_flat_matmul_gradient_needs_no_transposed_copy_of_the_input():
    """The compiled gradient of Dense on video tokens ``(B, F, N, D)`` has no transpose or copy instruction.

    With the full-rank matmul (keras.layers.Dense) XLA:CPU copies a transposed input before the kernel's
    gradient dot (jax 0.10: one ``transpose`` and one ``copy``); the flat matmul of ``layers/core.py`` avoids it.
    """
    import re

    x = np.random.randn(2, 4, 16, 32).astype("float32")
    ours, _ = _dense_pair(x.shape, 64)
    gradient = _jax_dense_gradient(ours, x, jit=True)
    hlo = gradient.lower([v.value for v in ours.trainable_variables], x).compile().as_text()
    opcodes = re.findall(r"= \S+ ([\w-]+)\(", hlo)
    assert "dot" in opcodes  # the parse found the program's instructions
    assert "transpose" not in opcodes and "copy" not in opcodes, hlo


def test_weight_paths_are_keras_dense_ones():
    attention = Attention(num_heads=2, head_dim=4, name="attention")
    attention.build((None, 3, 8))
    paths = sorted(v.path for v in attention.weights)
    assert paths == sorted(f"attention/{layer}/{kind}" for layer in ("query", "key", "value", "output_projection")
                           for kind in ("kernel", "bias"))


class _CountKerasCalls:
    """Counts the calls that reach ``keras.layers.Layer.__call__``, per layer."""

    def __init__(self, monkeypatch):
        self.layers = []
        original = keras.layers.Layer.__call__

        def counting(layer, *args, **kwargs):
            self.layers.append(layer)
            return original(layer, *args, **kwargs)

        monkeypatch.setattr(keras.layers.Layer, "__call__", counting)


@pytest.mark.skipif(not TORCH, reason="the lean call exists on PyTorch only (JAX and TensorFlow trace the call once)")
def test_lean_call_is_taken_only_where_keras_would_not_change_the_result(monkeypatch):
    import torch

    dense = Dense(4)
    x = torch.randn(3, 6)
    dense(x)  # builds through Keras
    calls = _CountKerasCalls(monkeypatch)
    dense(x)
    assert calls.layers == []  # built, float32 tensor in a float32 layer: lean
    dense(x.double())  # needs Keras' cast to float32
    dense(x.numpy())  # needs Keras' conversion
    masked = torch.randn(3, 6)
    masked._keras_mask = torch.ones(3, dtype=torch.bool)
    dense(masked)  # Keras propagates the mask
    with keras.RematScope(mode="full"):
        rematerialised = Dense(4)
    rematerialised(x)
    rematerialised(x)
    mixed = Dense(4, dtype="mixed_bfloat16")
    mixed(x)
    mixed(x)
    assert [layer is dense for layer in calls.layers[:3]] == [True] * 3
    assert calls.layers.count(rematerialised) == 2 and calls.layers.count(mixed) == 2


@pytest.mark.skipif(not TORCH, reason="the lean call exists on PyTorch only")
def test_lean_call_backpropagates_like_keras():
    import torch

    x = torch.randn(4, 6)
    ours, theirs = Dense(3), keras.layers.Dense(3)
    ours.build((None, 6))
    theirs.build((None, 6))
    ours.set_weights(theirs.get_weights())
    for layer in (ours, theirs):
        layer(x)
        loss = (layer(x) ** 2).sum()
        loss.backward()
    np.testing.assert_allclose(ours._kernel.value.grad.numpy(), theirs._kernel.value.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.bias.value.grad.numpy(), theirs.bias.value.grad.numpy(), rtol=1e-5)


def test_attention_dropout_follows_the_enclosing_training_flag():
    # Attention may run without Keras' __call__ on PyTorch; its dropout must still see the outer call's flag.
    inputs = keras.Input((6, 8))
    attention = Attention(num_heads=2, head_dim=4, dropout=0.5)
    model = keras.Model(inputs, attention(inputs))
    x = np.random.randn(2, 6, 8).astype("float32")
    inference = [to_numpy(model(x, training=False)) for _ in range(2)]
    training = [to_numpy(model(x, training=True)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    assert not np.allclose(training[0], training[1])  # dropout is on, with fresh masks
    assert np.mean(training[0] == 0) > 0.2


def test_attention_without_dropout_calls_no_dropout_layer(monkeypatch):
    attention = Attention(num_heads=2, head_dim=4)
    x = ops.convert_to_tensor(np.random.randn(2, 6, 8).astype("float32"))
    attention(x)
    calls = _CountKerasCalls(monkeypatch)
    attention(x, training=True)
    assert attention.dropout_layer not in calls.layers
