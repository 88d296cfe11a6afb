import keras
import numpy as np
import pytest

from conftest import to_numpy
from harness import run_backbone_test, run_model_saving_test, run_preset_test
from keras_vdiff.layers.embeddings import sincos_embedding_1d, sincos_embedding_2d
from keras_vdiff.layers.video_blocks import GenTronBlock
from keras_vdiff.models.gentron import GenTron
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

TINY = dict(input_shape=(FRAMES, SIZE, SIZE, CHANNELS), patch_size=2, hidden_dim=WIDTH, num_layers=1, num_heads=2,
            conditioning="text", text_dim=TEXT_DIM)


def test_forward_shapes_blocks_and_config_round_trip(tmp_path):
    shape = (2, FRAMES, SIZE, SIZE, 2 * CHANNELS)
    model, inputs = run_backbone_test(GenTron, TINY, expected_output_shape=shape)
    assert model.latent_shape == (FRAMES, SIZE, SIZE, CHANNELS) and model.out_channels == 2 * CHANNELS
    assert all(isinstance(b, GenTronBlock) and b.cross_attention for b in model.blocks)
    run_model_saving_test(model, tmp_path, input_data=_inputs(model))
    class_model, _ = run_backbone_test(
        GenTron, dict(TINY, conditioning="class", num_classes=3, temporal_position="rope"), expected_output_shape=shape
    )
    assert not class_model.blocks[0].cross_attention


def test_one_block_mixes_space_and_time():
    model = GenTron(**TINY)
    _randomise(model)
    base = _inputs(model)
    ref = to_numpy(model(base))
    changed = dict(base, latents=base["latents"].copy())
    changed["latents"][:, 0, :2, :2] += 3.0
    diff = np.abs(to_numpy(model(changed)) - ref)
    assert spread_beyond_the_patch(diff, frame=1) > 1e-5  # spatial then temporal attention


def test_at_initialisation_the_output_is_the_final_layer_of_the_embedded_input():
    model = GenTron(**TINY)
    rng = np.random.default_rng(1)
    for layer in (model.patch_embedding, model.condition_embedding, model.final_layer):
        layer.set_weights([0.2 * rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()])
    inputs = _inputs(model)
    grid = SIZE // 2
    x = to_numpy(model.patch_embedding(inputs["latents"]))
    x = x + sincos_embedding_2d(grid, grid, WIDTH)[None, None] + sincos_embedding_1d(FRAMES, WIDTH)[None, :, None]
    c = model.condition_embedding.embed({k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()})
    expected = to_numpy(model.unpatchify(model.final_layer(keras.ops.convert_to_tensor(x), c)))
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(to_numpy(model(inputs)), expected, atol=1e-5)


def test_padded_text_tokens_are_ignored_and_the_prompt_matters():
    assert_padding_ignored_and_prompt_used(GenTron(**TINY))


@pytest.mark.slow
def test_trains_with_fit_and_samples_with_generate():
    fit_and_generate(GenTron(**TINY))


def test_presets_and_errors():
    tiny = run_preset_test(GenTron, ["gentron_thesis", "gentron_tiny"], build=("gentron_tiny",))["gentron_tiny"]
    thesis = registry.get_preset("gentron_thesis")["config"]
    assert thesis["num_layers"] == 5 and thesis["hidden_dim"] == 1152 and thesis["input_shape"] == (10, 28, 28, 4)
    assert tiny.latent_shape == (2, 8, 8, 1) and tiny.conditioning == "text"
    for bad, match in ((dict(temporal_position="learned"), "temporal_position"),
                       (dict(text_dim=None), "text_dim"), (dict(patch_size=3), "patch_size"),
                       (dict(num_heads=5), "num_heads")):
        with pytest.raises(ValueError, match=match):
            GenTron(**dict(TINY, **bad))
