"""Memory levers: mixed bfloat16, gradient checkpointing (remat) of every block, LoRA fine-tuning.

References: the same model in float32 / without remat / before LoRA, with the same
weights and the same training seed.
"""

import keras
import numpy as np
import pytest

import keras_vdiff as kv
from keras_vdiff.models import lora, remat

VIDEOS = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3)).astype("uint8")  # dit_tiny: 16x16x3 images
LABELS = np.arange(4) % 4


def dit(**kwargs):
    return kv.models.DiT.from_preset("dit_tiny", **kwargs)


def weight_values(model):
    return {v.path: np.array(keras.ops.convert_to_numpy(v.value), dtype=np.float32) for v in model.weights}


def fit_steps(backbone, steps=1, optimizer=None):
    """Per-step losses of ``steps`` fit steps on one fixed batch (seeded)."""
    model = kv.VideoDiffusion(backbone, seed=3)
    model.compile(optimizer=optimizer or keras.optimizers.SGD(1.0))
    losses = []
    for _ in range(steps):
        losses.append(float(model.train_on_batch({"videos": VIDEOS, "labels": LABELS})))
    return losses


def copy_weights(source, target):
    copy_weights_by_path(weight_values(source), target)  # numpy copies: JAX's train step donates its buffers


def test_remat_checkpoints_each_block_and_keeps_the_gradients(monkeypatch):
    plain, checkpointed = dit(), dit(remat=True)
    copy_weights(plain, checkpointed)
    assert checkpointed.get_config()["remat"] is True and "remat" not in plain.get_config()
    for name in ("block_3", "spatial_block_0", "temporal_block_1", "down_0_res_1", "mid_attn", "up_2_tattn_0"):
        assert remat.REMAT_BLOCK_NAMES.fullmatch(name), name          # transformer, latent-token and U-Net blocks
    for name in ("patch_embedding", "final_layer", "down_0_downsample", "conv_in"):
        assert not remat.REMAT_BLOCK_NAMES.fullmatch(name), name
    calls = []
    original = remat.recompute_in_backward
    monkeypatch.setattr(remat, "recompute_in_backward", lambda f: calls.append(f) or original(f))
    before = weight_values(plain)
    fit_steps(plain)          # SGD with learning rate 1: the update is minus the gradient
    assert not calls
    fit_steps(checkpointed)
    assert calls, "no block was rematerialized"
    after_plain, after_remat = weight_values(plain), weight_values(checkpointed)
    for path, value in before.items():
        np.testing.assert_allclose(after_remat[path] - value, after_plain[path] - value, atol=1e-5, err_msg=path)
    assert any(np.abs(after_plain[p] - before[p]).max() > 1e-4 for p in before)  # the step did move the weights


def test_mixed_bfloat16_fit_steps_have_finite_float32_losses_close_to_float32_training():
    full, mixed = dit(), dit(dtype="mixed_bfloat16")
    copy_weights(full, mixed)
    assert mixed.compute_dtype == "bfloat16" and mixed.variable_dtype == "float32"
    optimizer = lambda: keras.optimizers.AdamW(1e-3)  # noqa: E731
    reference, losses = fit_steps(full, 2, optimizer()), fit_steps(mixed, 2, optimizer())
    assert np.all(np.isfinite(losses))
    # bfloat16 keeps 8 bits of mantissa: the loss of the same step agrees to a few percent.
    np.testing.assert_allclose(losses, reference, rtol=5e-2)
    # The process' loss is float32 whatever the backbone computes in.
    process = kv.diffusion.GaussianDiffusion("cosine")
    output = keras.ops.ones((2, 4, 4, 3), dtype="bfloat16")
    x0 = keras.ops.zeros((2, 4, 4, 3))
    t = keras.ops.convert_to_tensor([3, 7], dtype="int32")
    assert keras.backend.standardize_dtype(process.compute_loss(output, x0, x0, x0, t).dtype) == "float32"


@pytest.mark.slow
def test_mixed_bfloat16_sampler_state_stays_float32():
    full, mixed = dit(), dit(dtype="mixed_bfloat16")
    copy_weights(full, mixed)
    # The sampler state stays float32 (eager: a bfloat16 state would come back as such) and close to float32's.
    sample = lambda backbone: kv.VideoDiffusion(backbone, seed=3).generate(  # noqa: E731
        labels=[0, 1], steps=3, seed=0, return_latents=True, guidance_scale=1.0, compile=False)
    latents, reference_latents = sample(mixed), sample(full)
    assert latents.dtype == np.float32 and np.all(np.isfinite(latents))
    np.testing.assert_allclose(latents, reference_latents, atol=0.1)


def test_lora_trains_only_the_lora_pairs_and_its_weights_reload(tmp_path):
    backbone = dit()
    rng = np.random.default_rng(2)  # random non-zero weights, as a converted model has (adaLN-Zero gates start at 0)
    for v in backbone.weights:
        v.assign(rng.normal(0.0, 0.05, tuple(v.shape)).astype("float32"))
    base = weight_values(backbone)
    backbone.enable_lora(2)
    trainable = {v.path for v in backbone.trainable_variables}
    assert trainable == {v.path for v in lora.lora_variables(backbone)}
    assert {p.rsplit("/", 2)[-2] for p in trainable} == {"query", "key", "value", "output_projection", "fc1", "fc2"}
    fit_steps(backbone, 2, keras.optimizers.Adam(1e-2))
    after = weight_values(backbone)
    for path, value in base.items():  # every original weight, biases included, is untouched
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    assert any(np.abs(after[p]).max() > 0 for p in trainable if p.endswith("lora_kernel_b"))  # b starts at 0

    path = str(tmp_path / "adapter.lora.h5")
    backbone.save_lora_weights(path)
    backbone.save_lora_weights(path)  # its own file: replaced
    fresh = dit()
    copy_weights_by_path(base, fresh)
    fresh.load_lora_weights(path)
    assert {v.path for v in fresh.trainable_variables} == trainable
    inputs = {"latents": np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype("float32"),
              "timesteps": np.array([10.0, 500.0], "float32"), "class_labels": np.array([0, 3])}
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fresh(inputs)),
                                  keras.ops.convert_to_numpy(backbone(inputs)))


def copy_weights_by_path(values, model):
    for v in model.weights:
        v.assign(values[v.path])


def test_lora_files_never_replace_what_keras_vdiff_did_not_write(tmp_path):
    backbone = dit()
    with pytest.raises(ValueError, match="rank"):
        backbone.enable_lora(0)
    backbone.enable_lora(1)
    foreign = tmp_path / "mine.lora.h5"
    foreign.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="not written by keras_vdiff"):
        backbone.save_lora_weights(foreign)
    assert foreign.read_bytes() == b"user data"
    with pytest.raises(ValueError, match=r"\.lora\.h5"):
        backbone.save_lora_weights(tmp_path / "adapter.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.lora.h5"]  # no temporary file left behind


def test_remat_keeps_the_gradients_of_blocks_called_with_keyword_arguments():
    """Latte's blocks get keyword and None / Python arguments (``context=None``, ``active=True``); on TensorFlow
    ``tf.recompute_grad`` takes neither in a traced step, so only the tensors pass through the checkpoint."""
    config = dict(input_shape=(2, 8, 8, 3), patch_size=4, hidden_dim=32, num_layers=2, num_heads=2, num_classes=4)
    plain, checkpointed = kv.models.Latte(**config), kv.models.Latte(remat=True, **config)
    copy_weights(plain, checkpointed)
    videos = np.random.default_rng(1).integers(0, 255, (4, 2, 8, 8, 3)).astype("uint8")
    before = weight_values(plain)
    for backbone in (plain, checkpointed):
        model = kv.VideoDiffusion(backbone, seed=3)
        model.compile(optimizer=keras.optimizers.SGD(1.0))
        assert np.isfinite(float(model.train_on_batch({"videos": videos, "labels": LABELS})))
    after_plain, after_remat = weight_values(plain), weight_values(checkpointed)
    for path, value in before.items():
        np.testing.assert_allclose(after_remat[path] - value, after_plain[path] - value, atol=1e-5, err_msg=path)
    assert any(np.abs(after_plain[p] - before[p]).max() > 1e-4 for p in before)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="XLA's memory analysis of the compiled step: JAX")
def test_remat_lowers_the_memory_of_the_compiled_train_step():
    """XLA:CPU merged ``jax.checkpoint``'s recomputation back into the forward pass (no memory saved); the blocks'
    own remat (``models/remat.py``) must survive compilation: the train step's temporaries (the activations kept
    for the backward pass) drop by more than the issue's 30%."""
    import jax

    config = dict(input_shape=(4, 16, 16, 3), patch_size=2, hidden_dim=64, num_layers=4, num_heads=2, num_classes=4)
    data = {"videos": np.random.default_rng(1).integers(0, 255, (8, 4, 16, 16, 3)).astype("uint8"),
            "labels": np.arange(8) % 4}
    temporaries = {}
    for remat_on in (False, True):
        model = kv.VideoDiffusion(kv.models.Latte(remat=remat_on, **config), seed=3)
        model.compile(optimizer=keras.optimizers.AdamW(1e-4))
        model.train_on_batch(data)  # builds the optimizer
        state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                     optimizer_variables=True, metrics_variables=True)
        compiled = jax.jit(model.train_step).lower(state, (data, None, None)).compile()
        temporaries[remat_on] = compiled.memory_analysis().temp_size_in_bytes
    assert temporaries[True] < 0.7 * temporaries[False], temporaries


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the tie is JAX's (models/remat.py)")
def test_the_tie_keeps_every_bit_of_its_input():
    """A tied input is its input bit for bit (-0, NaN, infinities, subnormals included), whatever the cotangent's
    first element, in float32, bfloat16 and float16, under jit."""
    import jax
    import jax.numpy as jnp

    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-40, -3.5, 65504.0], dtype="float32")
    for dtype in ("float32", "bfloat16", "float16"):
        x = jnp.asarray(special).astype(dtype)
        for first in (0.0, -0.0, np.nan, -np.inf, 1.0):
            cotangent = jnp.full((2, 3), first, dtype)
            tied = jax.jit(lambda a, g: remat._jax_tie(a, remat._jax_zero_token(g)))(x, cotangent)
            unsigned = f"uint{8 * x.dtype.itemsize}"
            np.testing.assert_array_equal(np.asarray(jax.lax.bitcast_convert_type(tied, unsigned)),
                                          np.asarray(jax.lax.bitcast_convert_type(x, unsigned)), err_msg=dtype)


def test_recompute_in_backward_keeps_values_and_gradients():
    """A function of a tensor and a closed-over weight gives the same output and gradients through
    ``recompute_in_backward`` as without it, for float32 and bfloat16 inputs (the reference: the plain
    function's gradient on the same backend)."""
    weight = keras.Variable(np.random.default_rng(0).standard_normal((8, 8)).astype("float32"))

    def block(x):
        return x + keras.ops.tanh(keras.ops.matmul(x, keras.ops.cast(weight, x.dtype)))

    for dtype, tolerance in (("float32", 1e-6), ("bfloat16", 1e-2)):
        x = keras.ops.convert_to_tensor(np.random.default_rng(1).standard_normal((4, 8)), dtype=dtype)
        plain = _value_and_gradients(block, x, weight)
        rematerialized = _value_and_gradients(remat.recompute_in_backward(block), x, weight)
        for reference, value in zip(plain, rematerialized):
            np.testing.assert_allclose(value, reference, rtol=tolerance, atol=tolerance, err_msg=dtype)


def _value_and_gradients(function, x, weight):
    """Output, d(sum of squares)/dx and /dweight of ``function(x)`` on the current backend."""
    backend = keras.backend.backend()
    as_numpy = lambda t: np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")))  # noqa: E731
    if backend == "jax":
        import jax
        from keras.src.backend import StatelessScope

        def loss(x, w):
            with StatelessScope(state_mapping=[(weight, w)]):
                y = function(x)
            return keras.ops.sum(keras.ops.cast(y, "float32") ** 2), y

        (_, y), (gx, gw) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, weight.value)
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = function(x)
            total = tf.reduce_sum(tf.cast(y, "float32") ** 2)
        gx, gw = tape.gradient(total, [x, weight.value])
    else:
        import torch

        x = x.detach().requires_grad_(True)
        y = function(x)
        gx, gw = torch.autograd.grad((y.float() ** 2).sum(), [x, weight.value])
    return as_numpy(y), as_numpy(gx), as_numpy(gw)
