"""``kv.convert.from_diffusers`` on diffusers' ``WanTransformer3DModel``, against the diffusers model itself.

Two small configs: diffusers' own test sizes (``tests/models/transformers/
test_models_transformer_wan.py``: 2 heads x 12, 2 layers, text 16, RoPE tables
of 32) for text-to-video, and the same with the image-to-video additions of
Wan2.1-I2V-14B (12 input channels = 4 of noise + 8 extra, an image embedder and
added image keys / values in every cross-attention). Every tensor is randomised
(``tests/diffusers_reference.py``), saved with ``save_pretrained`` and loaded by
the converter; outputs are compared channels-first (diffusers, ``(B, C, F, H,
W)``) vs channels-last (ours) at max relative error 1e-4 in float32.
diffusers' I2V attention takes the last 512 context tokens as the text (its
pipeline's padded length), so the I2V test passes 512 text tokens and the 257
CLIP image tokens Wan's converter builds for.
"""

import keras
import numpy as np
import pytest

import keras_vdiff as kv
from conftest import to_numpy

diffusers = pytest.importorskip("diffusers")
from diffusers_reference import randomize, relative_error, save, to_torch, torch  # noqa: E402

TOLERANCE = 1e-4
T2V = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
           text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
           rope_max_seq_len=32)
I2V = dict(T2V, in_channels=12, image_dim=12, added_kv_proj_dim=24)
SHAPE = (2, 16, 16)  # latent frames, height, width (diffusers' test input)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """name -> (reference, folder) for the two configs."""
    out = {}
    for seed, (name, config) in enumerate((("t2v", T2V), ("i2v", I2V))):
        reference = randomize(diffusers.WanTransformer3DModel(**config), seed=seed)
        out[name] = reference, save(reference, tmp_path_factory.mktemp(name))
    return out


def _at_size(model, shape):
    """The converted model rebuilt for another latent size (its weights do not depend on it)."""
    resized = kv.models.Wan.from_config({**model.get_config(), "input_shape": shape + (model.in_channels,)})
    resized.set_weights(model.get_weights())
    return resized


def _inputs(channels, text_length, image=False, seed=0):
    rng = np.random.default_rng(seed)
    inputs = dict(latents=rng.standard_normal((2,) + SHAPE + (channels,)).astype("float32"),
                  timesteps=np.array([10.0, 700.0], "float32"),
                  text_embeddings=rng.standard_normal((2, text_length, 16)).astype("float32"),
                  text_mask=np.ones((2, text_length), "float32"), pooled_text=np.zeros((2, 16), "float32"))
    if image:
        inputs["image_embeddings"] = rng.standard_normal((2, 257, 12)).astype("float32")
    return inputs


def _ours(model, inputs):
    """On JAX through one compiled function (``predict_on_batch``, much quicker than op-by-op eager there)."""
    if keras.backend.backend() == "jax":
        return model.predict_on_batch(inputs)
    return to_numpy(model(inputs))


def _diffusers(reference, inputs):
    image = inputs.get("image_embeddings")
    with torch.no_grad():
        out = reference(to_torch(inputs["latents"].transpose(0, 4, 1, 2, 3)),
                        timestep=to_torch(inputs["timesteps"]),
                        encoder_hidden_states=to_torch(inputs["text_embeddings"]),
                        encoder_hidden_states_image=None if image is None else to_torch(image)).sample
    return out.numpy().transpose(0, 2, 3, 4, 1)


def test_text_to_video_matches_diffusers(folders):
    reference, path = folders["t2v"]
    model = kv.convert.from_diffusers(path)
    assert isinstance(model, kv.models.Wan) and model.image_dim is None and model.num_extra_input_channels == 0
    assert model.latent_shape == (21, 60, 64, 4)  # Wan's 21 x 60 x 104, the width capped by rope_max_seq_len 32
    inputs = _inputs(4, 12)
    assert relative_error(_ours(_at_size(model, SHAPE), inputs), _diffusers(reference, inputs)) <= TOLERANCE


def test_image_to_video_matches_diffusers(folders):
    reference, path = folders["i2v"]
    model = _at_size(kv.convert.from_diffusers(path), SHAPE)
    assert model.num_extra_input_channels == 8 and model.image_dim == 12 and model.out_channels == 4
    inputs = _inputs(12, 512, image=True, seed=1)
    assert relative_error(_ours(model, inputs), _diffusers(reference, inputs)) <= TOLERANCE


def test_presets_have_the_released_models_sizes():
    # The released configs (diffusers' WanTransformer3DModel on the meta device, one block: no memory); the 1.3B
    # preset built here at one layer (without random values) has the same parameters as diffusers' at one layer.
    released = {
        "wan2_1_t2v_1_3b": dict(num_attention_heads=12, ffn_dim=8960, num_layers=30),
        "wan2_1_t2v_14b": dict(num_attention_heads=40, ffn_dim=13824, num_layers=40),
        "wan2_1_i2v_14b_480p": dict(num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=36,
                                    image_dim=1280, added_kv_proj_dim=5120),
    }
    for name, config in released.items():
        preset = kv.presets.registry.get_preset(name)["config"]
        assert (preset["num_heads"], preset["head_dim"], preset["num_layers"], preset["ffn_dim"]) == (
            config["num_attention_heads"], 128, config["num_layers"], config["ffn_dim"])
        assert preset["input_shape"][-1] + preset.get("num_extra_input_channels", 0) == config.get("in_channels", 16)
        assert preset.get("image_dim") == config.get("image_dim")
    with torch.device("meta"):
        reference = diffusers.WanTransformer3DModel(attention_head_dim=128, text_dim=4096,
                                                    **dict(released["wan2_1_t2v_1_3b"], num_layers=1))
    one_layer = sum(p.numel() for p in reference.parameters())
    per_block = sum(p.numel() for p in reference.blocks[0].parameters())
    assert one_layer + 29 * per_block == 1_418_996_800  # the released 1.3B transformer
    from keras_vdiff.presets.loading import weights_to_load

    with weights_to_load():
        ours = kv.models.Wan(**dict(kv.presets.registry.get_preset("wan2_1_t2v_1_3b")["config"],
                                    input_shape=(1, 2, 2, 16), num_layers=1))
    assert ours.count_params() == one_layer


I2V_TINY = dict(num_extra_input_channels=3, image_dim=6, image_length=4)


def test_presets_name_valid_arguments_and_the_image_to_video_config_round_trips():
    from harness import run_preset_test

    run_preset_test(kv.models.Wan, ["wan2_1_t2v_1_3b", "wan2_1_t2v_14b", "wan2_1_i2v_14b_480p", "wan_tiny"])
    model = kv.models.Wan(**kv.presets.registry.get_preset("wan_tiny")["config"], **I2V_TINY)
    assert model.input["latents"].shape[1:] == (2, 8, 8, 7) and model.input["image_embeddings"].shape[1:] == (4, 6)
    clone = kv.models.Wan.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert [w.path for w in clone.weights] == [w.path for w in model.weights]


@pytest.mark.slow
def test_backbone_contract_and_image_to_video_preset_round_trip(tmp_path):
    # Slow on JAX (eager calls, about 50 s there); the fast sibling above checks the configs without calls.
    from harness import run_backbone_test, run_model_saving_test, run_preset_test

    run_preset_test(kv.models.Wan, ["wan_tiny"], build=("wan_tiny",))
    config = dict(kv.presets.registry.get_preset("wan_tiny")["config"], **I2V_TINY)
    model, inputs = run_backbone_test(kv.models.Wan, config, (2, 2, 8, 8, 4))
    run_model_saving_test(model, tmp_path, input_data=inputs)


def test_unsupported_configs_and_unused_or_missing_tensors_raise_naming_them(folders, tmp_path):
    from test_convert_transformers import _edited_copy

    _, path = folders["t2v"]
    for i, (config, message) in enumerate((
        ({"pos_embed_seq_len": 514}, "`pos_embed_seq_len`=514"),
        ({"image_dim": 12}, "`image_dim`=12 and `added_kv_proj_dim`=None"),
        ({"eps": 1e-5}, "`eps`=1e-05"),
        ({"patch_size": [1, 2, 4]}, r"`patch_size`=\[1, 2, 4\]"),
    )):
        with pytest.raises(kv.convert.ConversionError, match=message):
            kv.convert.from_diffusers(_edited_copy(path, tmp_path / f"config{i}", config=config))
    extra = {"blocks.0.attn2.add_k_proj.weight": np.ones((24, 24), "float32")}
    with pytest.raises(kv.convert.ConversionError, match="not used.*blocks.0.attn2.add_k_proj.weight"):
        kv.convert.from_diffusers(_edited_copy(path, tmp_path / "extra", tensors=extra))
    with pytest.raises(kv.convert.ConversionError, match="no tensor 'blocks.1.norm2.bias'"):
        kv.convert.from_diffusers(_edited_copy(path, tmp_path / "missing", drop=["blocks.1.norm2.bias"]))
