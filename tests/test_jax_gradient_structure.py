"""The JAX gradient of a transformer stack grows linearly with depth, and the gradient boundary changes no number.

The structural test reads what XLA built (HLO line count, ``cost_analysis()``
bytes accessed) rather than timing it: without the boundary of
``keras_vdiff/layers/gradient_boundary.py`` XLA:CPU duplicates each block's
residual-gradient chain into the blocks below it, so both grow quadratically
with depth (tiny DiT, 1 / 2 / 4 blocks: 3.4k / 6.3k / 14.3k lines).
"""

import keras
import numpy as np
import pytest

import keras_vdiff as kv
from keras_vdiff.layers import gradient_boundary as gb
from keras_vdiff.layers.gradient_boundary import gradient_boundaries, gradient_boundary, set_gradient_boundaries

BATCH = 2


def tiny_dit(depth, seed=0):
    """A tiny DiT with every weight random (adaLN-Zero's zero gates would make most gradients zero)."""
    model = kv.models.DiT(image_size=8, in_channels=4, patch_size=2, hidden_dim=32, num_layers=depth, num_heads=2,
                          num_classes=10, learn_sigma=False)
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if variable.trainable:
            variable.assign((0.2 * rng.standard_normal(variable.shape)).astype("float32"))
    return model


def tiny_inputs():
    rng = np.random.default_rng(1)
    return {"latents": rng.standard_normal((BATCH, 8, 8, 4)).astype("float32"),
            "timesteps": np.array([3.0, 700.0], "float32"), "class_labels": np.array([2, 10], "int32")}


def output_and_gradients(model, inputs):
    """Model output and the gradients of ``mean(output**2)`` w.r.t. the trainable weights, as numpy, this backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def loss(trainable):
            output = model.stateless_call(trainable, frozen, inputs)[0]
            return jax.numpy.mean(output ** 2), output

        (_, output), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(trainable)
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            output = model(inputs)
            loss = tf.reduce_mean(output ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
    else:
        output = model(inputs)
        loss = keras.ops.mean(output ** 2)
        weights = [v.value for v in model.trainable_variables]
        import torch

        grads = torch.autograd.grad(loss, weights)
    return keras.ops.convert_to_numpy(output), [keras.ops.convert_to_numpy(g) for g in grads]


def test_boundary_changes_neither_outputs_nor_gradients():
    model, inputs = tiny_dit(1), tiny_inputs()
    with gradient_boundaries("off"):
        output_off, grads_off = output_and_gradients(model, inputs)
    with gradient_boundaries("on"):
        output_on, grads_on = output_and_gradients(model, inputs)
    np.testing.assert_allclose(output_on, output_off, rtol=0, atol=1e-5)
    assert len(grads_on) == len(grads_off) == len(model.trainable_variables)
    for variable, on, off in zip(model.trainable_variables, grads_on, grads_off):
        np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-5, err_msg=variable.path)
    # The test means something: the loss depends on every block, so their gradients are not all zero.
    assert all(np.abs(g).max() > 0 for v, g in zip(model.trainable_variables, grads_on) if "block_0" in v.path)


def test_boundary_is_the_identity_in_the_forward_pass():
    x = keras.ops.convert_to_tensor(np.arange(6, dtype="float32").reshape(2, 3))
    with gradient_boundaries("on"):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(gradient_boundary(x)), np.arange(6).reshape(2, 3))
    with gradient_boundaries("off"):
        assert gradient_boundary(x) is x
    symbolic = keras.KerasTensor((None, 3))
    with gradient_boundaries("on"):
        assert gradient_boundary(symbolic) is symbolic


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the boundary's own backward exists on JAX only")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_boundary_backward_returns_the_cotangent_bit_for_bit(dtype):
    import jax
    import jax.numpy as jnp

    # Signed zero, infinities, NaN and a subnormal-sized value: a float reduction (g + 0) would turn -0 into +0.
    cotangent = jnp.asarray(np.array([[1.5, -0.0, np.inf], [-np.inf, np.nan, 3e-8]], "float32")).astype(dtype)
    with gradient_boundaries("on"):
        _, pullback = jax.vjp(gradient_boundary, jnp.ones_like(cotangent))
        (result,) = jax.jit(pullback)(cotangent)
    assert result.dtype == cotangent.dtype
    bits = f"uint{8 * cotangent.dtype.itemsize}"
    np.testing.assert_array_equal(np.asarray(jax.lax.bitcast_convert_type(result, bits)),
                                  np.asarray(jax.lax.bitcast_convert_type(cotangent, bits)))


def test_modes_are_validated(monkeypatch):
    with pytest.raises(ValueError, match="`mode` must be one of .*'sometimes'"):
        set_gradient_boundaries("sometimes")
    monkeypatch.setenv(gb.ENVIRONMENT_VARIABLE, "yes")
    with gradient_boundaries(None), pytest.raises(ValueError, match="KERAS_VDIFF_GRADIENT_BOUNDARY.*'yes'"):
        gb.gradient_boundaries_enabled()
    monkeypatch.setenv(gb.ENVIRONMENT_VARIABLE, "off")
    with gradient_boundaries(None):
        assert not gb.gradient_boundaries_enabled()
    with gradient_boundaries("on"):  # the function wins over the variable
        assert gb.gradient_boundaries_enabled() == (keras.backend.backend() == "jax")


def tiny_latte(depth, seed=0):
    """A small Latte with text cross-attention (16 tokens a frame), every weight random."""
    model = kv.models.Latte(input_shape=(4, 8, 8, 4), patch_size=2, hidden_dim=32, num_heads=2, num_layers=depth,
                            conditioning="text", text_dim=16, adaln="single", caption_projection=True,
                            pooled_text=False)
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if variable.trainable:
            variable.assign((0.2 * rng.standard_normal(variable.shape)).astype("float32"))
    rng = np.random.default_rng(1)
    inputs = {"latents": rng.standard_normal((BATCH, 4, 8, 8, 4)).astype("float32"),
              "timesteps": np.array([3.0, 700.0], "float32"),
              "text_embeddings": rng.standard_normal((BATCH, 4, 16)).astype("float32"),
              "text_mask": np.ones((BATCH, 4), "float32"), "pooled_text": np.zeros((BATCH, 16), "float32")}
    return model, inputs


# family -> (build(depth) -> (model, inputs), three depths d, 2d, 4d). Without the boundary the gradients are
# quadratic: DiT 1 / 2 / 4 blocks 3.4k / 6.3k / 14.3k lines; Latte 2 / 4 / 8 blocks 8.8k / 19.7k / 53.6k.
FAMILIES = {"dit": (lambda depth: (tiny_dit(depth), tiny_inputs()), (1, 2, 4)), "latte": (tiny_latte, (2, 4, 8))}


def compiled_gradient_size(model, inputs):
    """HLO lines and bytes accessed of the compiled gradient of ``model``'s mean-square output (JAX)."""
    import jax

    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def loss(trainable):
        return jax.numpy.mean(model.stateless_call(trainable, frozen, inputs)[0] ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(trainable).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return len(compiled.as_text().splitlines()), cost["bytes accessed"]


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="inspects the XLA program JAX compiles")
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_compiled_gradient_grows_linearly_with_depth(family):
    build, depths = FAMILIES[family]
    with gradient_boundaries("auto"):
        if not gb.gradient_boundaries_enabled():
            pytest.skip("the boundary is only on by default on JAX's CPU backend")
        sizes = [compiled_gradient_size(*build(depth)) for depth in depths]
    for index, what in enumerate(("HLO lines", "bytes accessed")):
        one, two, four = (size[index] for size in sizes)
        # Linear: the blocks from 2d to 4d add what those from d to 2d added, twice (10% slack). The duplicated
        # chain of the boundary-less gradient adds 2.5-2.8x as much.
        assert four - two <= 1.1 * 2 * (two - one), (what, one, two, four)
        assert four - two >= 0.9 * 2 * (two - one), (what, one, two, four)
