"""``kv.convert.from_diffusers`` on diffusers' ``CogVideoXTransformer3DModel``, against the diffusers model itself.

Three small configs (diffusers' own test sizes, ``tests/models/transformers/
test_models_transformer_cogvideox.py``): the 2b form (3D sin-cos positions),
the 5b form (3D RoPE; its positions at another size, resized and cropped into
the sample grid, are checked against the pipeline's) and
the 1.5 form (tubelets of 2 frames, RoPE on the integer grid). Every tensor is
randomised (``tests/diffusers_reference.py``), saved with ``save_pretrained``
and loaded by the converter; outputs are compared channels-first (diffusers,
``(B, F, C, H, W)``) vs channels-last (ours) at max relative error 1e-4 in
float32. diffusers' transformer takes the RoPE angles from its pipeline: they
are computed here by the pipeline's own ``_prepare_rotary_positional_embeddings``.

The RoPE configs use ``attention_head_dim`` 16, not the tests' 8: diffusers'
3D RoPE splits a head 1/4, 3/8, 3/8, and 3 channels cannot hold rotation pairs
(its pipeline fails on 8).
"""

import types

import keras
import numpy as np
import pytest

import keras_vdiff as kv
from conftest import to_numpy
from keras_vdiff.models.cogvideox import cogvideox_rope_angles, crop_region

diffusers = pytest.importorskip("diffusers")
from diffusers_reference import randomize, relative_error, save, to_torch, torch  # noqa: E402

TOLERANCE = 1e-4
SINCOS = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
              text_embed_dim=8, num_layers=2, sample_width=8, sample_height=8, sample_frames=8, patch_size=2,
              patch_size_t=None, temporal_compression_ratio=4, max_text_seq_length=8)
ROPE = dict(SINCOS, attention_head_dim=16, use_rotary_positional_embeddings=True)
ROPE_15 = dict(ROPE, patch_size_t=2)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """name -> (reference, folder) for the three configs."""
    out = {}
    for seed, (name, config) in enumerate((("sincos", SINCOS), ("rope", ROPE), ("rope_15", ROPE_15))):
        reference = randomize(diffusers.CogVideoXTransformer3DModel(**config), seed=seed)
        out[name] = reference, save(reference, tmp_path_factory.mktemp(name))
    return out


def _inputs(frames, height, width, seed=0):
    rng = np.random.default_rng(seed)
    return dict(latents=rng.standard_normal((2, frames, height, width, 4)).astype("float32"),
                timesteps=np.array([10.0, 700.0], "float32"),
                text_embeddings=rng.standard_normal((2, 8, 8)).astype("float32"),
                text_mask=np.ones((2, 8), "float32"), pooled_text=np.zeros((2, 8), "float32"))


def _ours(model, inputs):
    """The model's output as numpy. On JAX through one compiled function (``predict_on_batch``): the eager
    call compiles every op on its own, measured 10 s against 4 s per model here; elsewhere eager is quicker."""
    if keras.backend.backend() == "jax":
        return model.predict_on_batch(inputs)
    return to_numpy(model(inputs))


def _rotary(reference, frames, height, width):
    """The RoPE angles diffusers' CogVideoXPipeline passes for these latents (it sees pixel sizes, x8)."""
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline

    pipeline = types.SimpleNamespace(transformer=reference, vae_scale_factor_spatial=8)
    return CogVideoXPipeline._prepare_rotary_positional_embeddings(pipeline, 8 * height, 8 * width, frames, "cpu")


def _diffusers(reference, inputs, rope):
    _, frames, height, width, _ = inputs["latents"].shape
    with torch.no_grad():
        out = reference(to_torch(inputs["latents"].transpose(0, 1, 4, 2, 3)),
                        encoder_hidden_states=to_torch(inputs["text_embeddings"]),
                        timestep=torch.tensor(inputs["timesteps"].astype("int64")),
                        image_rotary_emb=_rotary(reference, frames, height, width) if rope else None).sample
    return out.numpy().transpose(0, 1, 3, 4, 2)


def test_sincos_cogvideox_2b_form_matches_diffusers(folders):
    reference, path = folders["sincos"]
    model = kv.convert.from_diffusers(path)
    assert isinstance(model, kv.models.CogVideoX) and model.position == "sincos"
    assert model.latent_shape == (2, 8, 8, 4) and model.text_length == 8
    inputs = _inputs(2, 8, 8)
    assert relative_error(_ours(model, inputs), _diffusers(reference, inputs, rope=False)) <= TOLERANCE


def test_rope_cogvideox_5b_form_matches_diffusers(folders):
    reference, path = folders["rope"]
    model = kv.convert.from_diffusers(path)
    assert model.position == "rope" and model.rope_positions == "crop"
    inputs = _inputs(2, 8, 8, seed=1)
    assert relative_error(_ours(model, inputs), _diffusers(reference, inputs, rope=True)) <= TOLERANCE


def test_rope_angles_at_another_size_are_the_pipelines(folders):
    # 3 frames of 8 x 12 latents (a 4 x 6 grid) resized and cropped into the 4 x 4 sample grid: fractional
    # positions, and Python's rounding of the crop box; diffusers repeats each angle for its interleaved pair.
    cos, sin = (value.numpy() for value in _rotary(folders["rope"][0], 3, 8, 12))
    angles = cogvideox_rope_angles(3, 4, 6, 16, base_grid=(4, 4))
    np.testing.assert_allclose(cos, np.repeat(np.cos(angles), 2, axis=1), atol=1e-6)
    np.testing.assert_allclose(sin, np.repeat(np.sin(angles), 2, axis=1), atol=1e-6)
    assert crop_region(4, 6, 4, 4) == ((0, 0), (3, 4))  # round(0.5) == 0


def test_rope_tubelet_cogvideox_1_5_form_matches_diffusers(folders):
    reference, path = folders["rope_15"]
    model = kv.convert.from_diffusers(path)
    assert model.tubelet_size == 2 and model.rope_positions == "grid"
    inputs = _inputs(2, 8, 8, seed=2)
    assert relative_error(_ours(model, inputs), _diffusers(reference, inputs, rope=True)) <= TOLERANCE


def test_unsupported_configs_and_unused_or_missing_tensors_raise_naming_them(folders, tmp_path):
    from test_convert_transformers import _edited_copy

    _, path = folders["sincos"]
    for i, (config, message) in enumerate((
        ({"use_learned_positional_embeddings": True}, "`use_learned_positional_embeddings`=True"),
        ({"in_channels": 8}, "`out_channels`=4 differs from `in_channels`=8"),
        ({"flip_sin_to_cos": False}, "`flip_sin_to_cos`=False"),
        ({"patch_size_t": 2}, "`patch_size_t`=2 .*use_rotary_positional_embeddings"),
        ({"use_rotary_positional_embeddings": True}, "`attention_head_dim`=8"),
    )):
        with pytest.raises(kv.convert.ConversionError, match=message):
            kv.convert.from_diffusers(_edited_copy(path, tmp_path / f"config{i}", config=config))
    extra = {"transformer_blocks.0.attn1.norm_added_q.weight": np.ones(8, "float32")}
    with pytest.raises(kv.convert.ConversionError, match="not used.*transformer_blocks.0.attn1.norm_added_q"):
        kv.convert.from_diffusers(_edited_copy(path, tmp_path / "extra", tensors=extra))
    with pytest.raises(kv.convert.ConversionError, match="no tensor 'norm_out.norm.bias'"):
        kv.convert.from_diffusers(_edited_copy(path, tmp_path / "missing", drop=["norm_out.norm.bias"]))
