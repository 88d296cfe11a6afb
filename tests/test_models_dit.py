import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vdiff as kv
from conftest import to_numpy
from harness import randomise, run_backbone_test, run_model_saving_test, run_preset_test

TINY = dict(image_size=8, in_channels=2, patch_size=2, hidden_dim=32, num_layers=2, num_heads=4, num_classes=5)


def _inputs(batch=2, size=8, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "latents": rng.standard_normal((batch, size, size, channels)).astype("float32"),
        "timesteps": rng.uniform(0, 999, (batch,)).astype("float32"),
        "class_labels": rng.integers(0, 6, (batch,)).astype("int32"),
    }


def _randomise(model, seed=0):
    randomise(model, seed=seed)  # fresh models output zeros (adaLN-Zero + zero final layer)


def test_forward_shapes_and_learned_sigma_channels():
    model = kv.models.DiT(**TINY, learn_sigma=True)
    out = model(_inputs())
    assert tuple(out.shape) == (2, 8, 8, 4)
    assert model.out_channels == 4 and model.latent_shape == (8, 8, 2) and not model.is_video
    assert kv.models.DiT(**TINY, learn_sigma=False)(_inputs()).shape[-1] == 2


def test_output_is_zero_at_initialisation_and_depends_on_every_input_once_trained():
    model = kv.models.DiT(**TINY)
    np.testing.assert_array_equal(to_numpy(model(_inputs())), 0.0)
    _randomise(model)
    base = _inputs()
    ref = to_numpy(model(base))
    for key, change in (("latents", lambda v: v + 1.0), ("timesteps", lambda v: v + 100.0),
                        ("class_labels", lambda v: (v + 1) % 6)):
        changed = dict(base, **{key: change(base[key])})
        assert np.abs(to_numpy(model(changed)) - ref).max() > 1e-4, key


def test_backbone_config_and_preset_round_trip(tmp_path):
    model, inputs = run_backbone_test(kv.models.DiT, TINY, expected_output_shape=(2, 8, 8, 4), input_data=_inputs())
    run_model_saving_test(model, tmp_path, input_data=inputs, generic_loader=True)


def test_registered_presets_and_clear_errors():
    sizes = [f"dit_{size}_patch{patch}" for size in ("small", "base", "large", "xlarge") for patch in (2, 4, 8)]
    run_preset_test(kv.models.DiT, sizes + ["dit_mnist", "dit_tiny"])  # dit_mnist is built by name below
    mnist = kv.models.DiT.from_preset("dit_mnist")
    assert mnist.latent_shape == (28, 28, 1) and mnist.patch_size == 2 and mnist.hidden_dim == 64
    with pytest.raises(ValueError, match="Unknown preset|Valid presets"):
        kv.presets.get_preset("dit_huge")
    with pytest.raises(ValueError, match="patch_size"):
        kv.models.DiT(**dict(TINY, patch_size=3))
    with pytest.raises(ValueError, match="num_heads"):
        kv.models.DiT(**dict(TINY, num_heads=5))


def test_dit_small_patch2_parameter_count_matches_reference_formula():
    # Count of the official DiT (facebookresearch/DiT models.py) written out per module; the fixed
    # sin-cos table, a Parameter there, is a constant here and is not counted.
    d, depth, p, c, classes, mlp = 384, 12, 2, 4, 1000, 4
    patch = p * p * c * d + d
    t_embed = 256 * d + d + d * d + d
    y_embed = (classes + 1) * d
    attn = d * 3 * d + 3 * d + d * d + d
    block = attn + (d * mlp * d + mlp * d + mlp * d * d + d) + (d * 6 * d + 6 * d)
    final = d * p * p * 2 * c + p * p * 2 * c + d * 2 * d + 2 * d
    expected = patch + t_embed + y_embed + depth * block + final
    assert kv.models.DiT.from_preset("dit_small_patch2").count_params() == expected


@pytest.mark.slow
def test_dit_xl2_parameter_count_matches_paper():
    # Official DiT-XL/2 has 675,129,632 parameters including its 256x1152 fixed position table.
    model = kv.models.DiT.from_preset("dit_xlarge_patch2")
    assert model.count_params() + 256 * 1152 == 675_129_632


_OTHER = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}

_LOAD_SCRIPT = """
import sys, numpy as np, keras_vdiff as kv, keras
model = kv.models.DiT(**eval(sys.argv[1]))
model.load_weights(sys.argv[2])
data = np.load(sys.argv[3])
out = model({k: data[k] for k in ("latents", "timesteps", "class_labels")})
np.save(sys.argv[4], keras.ops.convert_to_numpy(out))
"""


def test_weights_saved_on_this_backend_give_the_same_output_on_another(tmp_path):
    config = dict(TINY, num_layers=3)
    model = kv.models.DiT(**config)
    _randomise(model, seed=3)
    inputs = _inputs(batch=3, seed=5)
    ref = to_numpy(model(inputs))
    model.save_weights(str(tmp_path / "w.weights.h5"))
    np.savez(tmp_path / "inputs.npz", **inputs)
    other = _OTHER[keras.backend.backend()]
    env = dict(os.environ, KERAS_BACKEND=other, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, repr(config), str(tmp_path / "w.weights.h5"),
         str(tmp_path / "inputs.npz"), str(tmp_path / "out.npy")],
        check=True, env=env, capture_output=True, timeout=300,
    )
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), ref, atol=1e-5)
