import keras
import numpy as np

from keras_vdiff.layers import (
    MLP,
    AdaLNModulation,
    DiTBlock,
    FinalLayer,
    fold_spatial,
    fold_temporal,
    modulate,
    unfold_spatial,
    unfold_temporal,
)
from conftest import to_numpy


def test_adaln_modulation_is_zero_initialised_and_splits_in_order():
    mod = AdaLNModulation(8, num_modulations=3)
    outs = mod(np.random.randn(2, 8).astype("float32"))
    assert len(outs) == 3 and all(tuple(o.shape) == (2, 8) for o in outs)
    assert all(np.abs(to_numpy(o)).max() == 0 for o in outs)
    mod.projection.kernel.assign(np.random.randn(8, 24).astype("float32"))
    c = np.random.randn(2, 8).astype("float32")
    silu = c / (1 + np.exp(-c))
    full = silu @ to_numpy(mod.projection.kernel)
    for i, o in enumerate(mod(c)):
        np.testing.assert_allclose(to_numpy(o), full[:, 8 * i:8 * (i + 1)], atol=1e-5)


def test_modulate_broadcasts_over_tokens():
    x = np.random.randn(2, 3, 4, 5).astype("float32")
    shift, scale = np.random.randn(2, 5).astype("float32"), np.random.randn(2, 5).astype("float32")
    ref = x * (1 + scale[:, None, None]) + shift[:, None, None]
    np.testing.assert_allclose(to_numpy(modulate(x, shift, scale)), ref, atol=1e-6)


def test_final_layer_starts_at_zero_and_matches_reference_once_trained():
    head = FinalLayer(6)
    x = np.random.randn(2, 4, 8).astype("float32")
    c = np.random.randn(2, 8).astype("float32")
    np.testing.assert_array_equal(to_numpy(head(x, c)), 0.0)
    head.projection.kernel.assign(np.random.randn(8, 6).astype("float32"))
    head.modulation.projection.kernel.assign(np.random.randn(8, 16).astype("float32"))
    shift_scale = (c / (1 + np.exp(-c))) @ to_numpy(head.modulation.projection.kernel)
    shift, scale = shift_scale[:, :8], shift_scale[:, 8:]
    norm = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    ref = (norm * (1 + scale[:, None]) + shift[:, None]) @ to_numpy(head.projection.kernel)
    np.testing.assert_allclose(to_numpy(head(x, c)), ref, atol=1e-4)


def test_dit_block_is_identity_at_initialisation():
    x = np.random.randn(2, 6, 16).astype("float32")
    c = np.random.randn(2, 16).astype("float32")
    block = DiTBlock(16, num_heads=4)
    np.testing.assert_allclose(to_numpy(block(x, c)), x, atol=1e-6)
    text = np.random.randn(2, 5, 12).astype("float32")
    block = DiTBlock(16, num_heads=4, cross_attention=True)
    np.testing.assert_allclose(to_numpy(block(x, c, context=text, context_mask=np.ones((2, 5)))), x, atol=1e-6)


def test_dit_block_conditions_on_c_once_trained():
    x = np.random.randn(2, 6, 16).astype("float32")
    block = DiTBlock(16, num_heads=4)
    block(x, np.zeros((2, 16), "float32"))
    block.modulation.projection.kernel.assign(0.1 * np.random.randn(16, 96).astype("float32"))
    a = to_numpy(block(x, np.ones((2, 16), "float32")))
    b = to_numpy(block(x, -np.ones((2, 16), "float32")))
    assert np.abs(a - b).max() > 1e-3


def test_folds_are_inverse_and_group_the_right_tokens():
    x = np.random.randn(2, 3, 4, 5).astype("float32")
    s = to_numpy(fold_spatial(x))
    np.testing.assert_array_equal(s[1 * 3 + 2], x[1, 2])
    t = to_numpy(fold_temporal(x))
    np.testing.assert_array_equal(t[1 * 4 + 3], x[1, :, 3])
    np.testing.assert_array_equal(to_numpy(unfold_spatial(fold_spatial(x), 3)), x)
    np.testing.assert_array_equal(to_numpy(unfold_temporal(fold_temporal(x), 4)), x)


def test_serialization_round_trip():
    for layer in (MLP(8, 2.0), DiTBlock(16, 4, cross_attention=True), AdaLNModulation(8, 2), FinalLayer(4)):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert restored.get_config() == layer.get_config()
