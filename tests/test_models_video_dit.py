import keras
import numpy as np
import pytest

from conftest import to_numpy
from harness import run_backbone_test, run_model_saving_test, run_preset_test
from keras_vdiff.layers.embeddings import sincos_embedding_3d
from keras_vdiff.layers.transformer import DiTBlock
from keras_vdiff.layers.video_blocks import MMDiTBlock
from keras_vdiff.models.video_dit import VideoDiT, axial_positions, temporal_width
from keras_vdiff.presets import registry
from test_models_latte import (
    CHANNELS,
    FRAMES,
    SIZE,
    TEXT_DIM,
    WIDTH,
    _inputs,
    _randomise,
    assert_padding_ignored_and_prompt_used,
    fit_and_generate,
    spread_beyond_the_patch,
)

TINY = dict(input_shape=(FRAMES, SIZE, SIZE, CHANNELS), patch_size=2, hidden_dim=WIDTH, num_layers=2, num_heads=2)
FORMS = {
    "cross_sincos": dict(conditioning="text", text_dim=TEXT_DIM, text_mode="cross", position="sincos"),
    "joint_rope": dict(conditioning="text", text_dim=TEXT_DIM, text_mode="joint", position="rope"),
    "class_rope": dict(conditioning="class", num_classes=3, position="rope"),
    "none_tubelet": dict(conditioning=None, tubelet_size=2),
}


@pytest.mark.parametrize("name", list(FORMS))
def test_full_3d_attention_mixes_space_and_time_in_one_block(name):
    model = VideoDiT(**dict(TINY, num_layers=1, **FORMS[name]))
    block_type = MMDiTBlock if FORMS[name].get("text_mode") == "joint" else DiTBlock
    assert all(isinstance(b, block_type) for b in model.blocks)
    _randomise(model)
    base = _inputs(model)
    ref = to_numpy(model(base))
    assert ref.shape == (2, FRAMES, SIZE, SIZE, 2 * CHANNELS)
    changed = dict(base, latents=base["latents"].copy())
    changed["latents"][:, 0, :2, :2] += 3.0
    diff = np.abs(to_numpy(model(changed)) - ref)
    assert spread_beyond_the_patch(diff, frame=1) > 1e-5  # after a single block
    clone = VideoDiT.from_config(model.get_config())
    assert clone.get_config() == model.get_config() and clone.count_params() == model.count_params()


def test_position_tables_and_rope_axes():
    assert temporal_width(24) == 8 and temporal_width(1152) == 288 and temporal_width(768) == 192
    positions = axial_positions(2, 3, 4)
    assert positions.shape == (24, 3) and tuple(positions[5]) == (0, 1, 1) and tuple(positions[13]) == (1, 0, 1)
    with pytest.raises(ValueError, match="divisible by 6"):
        VideoDiT(**dict(TINY, hidden_dim=32, conditioning=None, position="rope"))


@pytest.mark.parametrize("name", ["cross_sincos", "joint_rope"])
def test_at_initialisation_the_output_is_the_final_layer_of_the_embedded_input(name):
    model = VideoDiT(**dict(TINY, **FORMS[name]))
    rng = np.random.default_rng(1)
    for layer in (model.patch_embedding, model.condition_embedding, model.final_layer):
        layer.set_weights([0.2 * rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()])
    inputs = _inputs(model)
    x = to_numpy(model.patch_embedding(inputs["latents"]))
    if FORMS[name]["position"] == "sincos":
        x = x + sincos_embedding_3d(FRAMES, 4, 4, WIDTH, temporal_dim=8).reshape(1, FRAMES, 16, WIDTH)
    c = model.condition_embedding.embed({k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()})
    expected = to_numpy(model.unpatchify(model.final_layer(keras.ops.convert_to_tensor(x), c)))
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(to_numpy(model(inputs)), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["cross_sincos", "joint_rope"])
def test_padded_text_tokens_are_ignored_and_the_prompt_matters(name):
    assert_padding_ignored_and_prompt_used(VideoDiT(**dict(TINY, **FORMS[name])))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FORMS))
def test_trains_with_fit_and_samples_with_generate(name):
    fit_and_generate(VideoDiT(**dict(TINY, **FORMS[name], learn_sigma=name == "joint_rope")))


def test_presets_and_save_round_trip(tmp_path):
    sizes = [f"video_dit_{size}_patch{patch}" for size in ("small", "base", "large", "xlarge") for patch in (2, 4, 8)]
    run_preset_test(VideoDiT, sizes + ["video_dit_tiny"], build=("video_dit_tiny",))
    assert registry.get_preset("video_dit_base_patch2")["config"]["hidden_dim"] == 768
    model, inputs = run_backbone_test(VideoDiT, dict(TINY, **FORMS["joint_rope"]),
                                      expected_output_shape=(2, FRAMES, SIZE, SIZE, 2 * CHANNELS))
    run_model_saving_test(model, tmp_path, input_data=_inputs(model))
    with pytest.raises(ValueError, match="text_mode"):
        VideoDiT(**dict(TINY, text_mode="concat"))
    with pytest.raises(ValueError, match="position"):
        VideoDiT(**dict(TINY, position="learned"))
