"""``kv.convert.from_diffusers`` on diffusers' DiT and Latte transformers, against the diffusers models themselves.

Each reference model is built from a small config (diffusers' own test sizes),
every tensor randomised (``tests/diffusers_reference.py``), saved with
``save_pretrained`` and loaded by the converter; outputs are compared
channels-first (diffusers) vs channels-last (ours) at max relative error 1e-4
in float32.
"""

import json
import os
import shutil

import keras
import numpy as np
import pytest

import keras_vdiff as kv
from conftest import to_numpy

diffusers = pytest.importorskip("diffusers")
from diffusers_reference import randomize, relative_error, save, to_torch, torch  # noqa: E402

TOLERANCE = 1e-4
LATTE = dict(sample_size=8, num_layers=2, patch_size=2, attention_head_dim=4, num_attention_heads=2,
             caption_channels=8, in_channels=4, cross_attention_dim=8, out_channels=8, attention_bias=True,
             activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
             norm_elementwise_affine=False, norm_eps=1e-6, video_length=3)
DIT = dict(sample_size=8, num_layers=2, patch_size=2, attention_head_dim=4, num_attention_heads=2, in_channels=4,
           out_channels=8, num_embeds_ada_norm=5)


def _share_block_embeddings(model):
    """Give every block block 0's timestep / label embedding, as the released diffusers DiTs have."""
    state = model.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            if name.startswith("transformer_blocks.0.norm1.emb."):
                for i in range(1, model.config.num_layers):
                    state[name.replace("transformer_blocks.0.", f"transformer_blocks.{i}.")].copy_(value)
    return model


@pytest.fixture(scope="module")
def dit_folder(tmp_path_factory):
    reference = _share_block_embeddings(randomize(diffusers.DiTTransformer2DModel(**DIT)))
    return reference, save(reference, tmp_path_factory.mktemp("dit"))


@pytest.fixture(scope="module")
def latte_folder(tmp_path_factory):
    reference = randomize(diffusers.LatteTransformer3DModel(**LATTE))
    return reference, save(reference, tmp_path_factory.mktemp("latte"))


def _latte_inputs(frames, seed=0):
    rng = np.random.default_rng(seed)
    return dict(latents=rng.standard_normal((2, frames, 8, 8, 4)).astype("float32"),
                timesteps=np.array([10.0, 700.0], "float32"),
                text_embeddings=rng.standard_normal((2, 5, 8)).astype("float32"),
                text_mask=np.ones((2, 5), "float32"), pooled_text=np.zeros((2, 8), "float32"))


def _diffusers_latte(reference, inputs, **kwargs):
    with torch.no_grad():
        out = reference(to_torch(inputs["latents"].transpose(0, 4, 1, 2, 3)),
                        timestep=torch.tensor(inputs["timesteps"].astype("int64")),
                        encoder_hidden_states=to_torch(inputs["text_embeddings"]), **kwargs).sample
    return out.numpy().transpose(0, 2, 3, 4, 1)


def test_dit_matches_diffusers(dit_folder):
    reference, path = dit_folder
    model = kv.convert.from_diffusers(path)
    assert isinstance(model, kv.models.DiT) and model.learn_sigma and model.num_classes == 5
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8, 8, 4)).astype("float32")
    t, y = np.array([0, 10, 999]), np.array([1, 4, 5])  # 5: the null class
    with torch.no_grad():
        expected = reference(to_torch(x.transpose(0, 3, 1, 2)), timestep=torch.tensor(t),
                             class_labels=torch.tensor(y)).sample.numpy().transpose(0, 2, 3, 1)
    ours = to_numpy(model({"latents": x, "timesteps": t.astype("float32"), "class_labels": y.astype("int32")}))
    assert relative_error(ours, expected) <= TOLERANCE


def test_dit_with_separate_per_block_embeddings_is_refused(tmp_path):
    reference = randomize(diffusers.DiTTransformer2DModel(**DIT))  # every block's embedding differs
    with pytest.raises(kv.convert.ConversionError, match="transformer_blocks.1.norm1.emb.*differs"):
        kv.convert.from_diffusers(save(reference, tmp_path / "dit"))


def test_latte_matches_diffusers_with_temporal_attention_and_learned_sigma(latte_folder):
    reference, path = latte_folder
    model = kv.convert.from_diffusers(path)
    assert isinstance(model, kv.models.Latte) and model.learn_sigma and model.adaln == "single"
    inputs = _latte_inputs(frames=3)
    assert relative_error(to_numpy(model(inputs)), _diffusers_latte(reference, inputs)) <= TOLERANCE


@pytest.mark.parametrize("temporal_attention", [True, False])
def test_latte_single_frame_with_and_without_temporal_attention(tmp_path, temporal_attention):
    reference = randomize(diffusers.LatteTransformer3DModel(**dict(LATTE, video_length=1, out_channels=4)), seed=1)
    model = kv.convert.from_diffusers(save(reference, tmp_path / "latte"))
    assert not model.learn_sigma
    if not temporal_attention:  # diffusers' enable_temporal_attentions=False: same weights, temporal blocks skipped
        weights = model.get_weights()
        model = kv.models.Latte.from_config({**model.get_config(), "temporal_attention": False})
        model.set_weights(weights)
    inputs = _latte_inputs(frames=1, seed=2)
    expected = _diffusers_latte(reference, inputs, enable_temporal_attentions=temporal_attention)
    assert relative_error(to_numpy(model(inputs)), expected) <= TOLERANCE


def test_sharded_and_bfloat16_folders_load_the_same_weights(latte_folder, tmp_path):
    reference, path = latte_folder
    sharded = str(tmp_path / "sharded")
    reference.save_pretrained(sharded, safe_serialization=True, max_shard_size="2KB")
    assert any(name.endswith(".index.json") for name in os.listdir(sharded))
    bf16 = str(tmp_path / "bf16")
    reference.to(torch.bfloat16).save_pretrained(bf16, safe_serialization=True)
    reference.to(torch.float32)
    full = kv.convert.from_diffusers(path).get_weights()
    for a, b in zip(kv.convert.from_diffusers(sharded).get_weights(), full, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(kv.convert.from_diffusers(bf16).get_weights(), full, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)  # bfloat16 keeps 8 bits of mantissa


def _edited_copy(path, tmp_path, config=None, tensors=None, drop=None):
    """A copy of a model folder with config fields replaced, tensors added or removed."""
    from safetensors.numpy import load_file, save_file

    copy = str(tmp_path / "edited")
    shutil.copytree(path, copy)
    with open(os.path.join(copy, "config.json")) as f:
        data = json.load(f)
    data.update(config or {})
    with open(os.path.join(copy, "config.json"), "w") as f:
        json.dump(data, f)
    weights_file = os.path.join(copy, "diffusion_pytorch_model.safetensors")
    state = load_file(weights_file)
    state.update(tensors or {})
    for name in drop or ():
        del state[name]
    save_file(state, weights_file)
    return copy


def test_unsupported_config_unused_and_missing_tensors_raise_naming_them(latte_folder, tmp_path):
    _, path = latte_folder
    with pytest.raises(kv.convert.ConversionError, match="`norm_type`='ada_norm_zero'"):
        kv.convert.from_diffusers(_edited_copy(path, tmp_path / "a", config={"norm_type": "ada_norm_zero"}))
    extra = {"transformer_blocks.0.attn2.norm_k.weight": np.ones(4, "float32")}
    with pytest.raises(kv.convert.ConversionError, match="not used.*transformer_blocks.0.attn2.norm_k.weight"):
        kv.convert.from_diffusers(_edited_copy(path, tmp_path / "b", tensors=extra))
    with pytest.raises(kv.convert.ConversionError, match="no tensor 'proj_out.bias'"):
        kv.convert.from_diffusers(_edited_copy(path, tmp_path / "c", drop=["proj_out.bias"]))
    with pytest.raises(FileNotFoundError, match="config.json"):
        kv.convert.from_diffusers(str(tmp_path))
