"""``kv.convert.from_diffusers`` on a diffusers ``AutoencoderKL`` (the SD 1/2 VAE layout, small random config):
posterior mean and decoder match diffusers, videos are coded frame by frame, old attention names load,
unsupported configs and extra / missing tensors raise naming them, the model serializes."""

import json
import os

import keras
import numpy as np
import pytest

from keras_vdiff import convert
from keras_vdiff.autoencoders.autoencoder_kl import AutoencoderKL
from keras_vdiff.convert.checkpoint import ConversionError

SMALL = dict(
    in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1, latent_channels=4,
    norm_num_groups=2, sample_size=16, down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
)
TOLERANCE = 1e-4  # max relative error, float32
# Few distinct kernel shapes (4 and 8 channels, shared by both references): on JAX every new shape compiles its
# random initializer once, which dominates the time of these tests.


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def nchw(x):
    return np.moveaxis(x, -1, 1)


def nhwc(x):
    return np.moveaxis(np.asarray(x), 1, -1)


def build_reference(tmp_path, seed=0, **config):
    """A randomized diffusers AutoencoderKL saved to ``tmp_path``: (torch model, folder)."""
    import diffusers_reference as ref
    from diffusers import AutoencoderKL as DiffusersAutoencoderKL

    model = ref.randomize(DiffusersAutoencoderKL(**config), seed=seed)
    return model, ref.save(model, tmp_path)


def diffusers_encode(model, images):
    import diffusers_reference as ref

    with ref.torch.no_grad():
        mean = model.encode(ref.to_torch(nchw(images))).latent_dist.mean
    shift = model.config.shift_factor or 0.0
    return nhwc((mean.numpy() - shift) * model.config.scaling_factor)


def diffusers_decode(model, latents):
    """diffusers' decoder on latents of the diffusion model's scale (unclipped)."""
    import diffusers_reference as ref

    z = latents / model.config.scaling_factor + (model.config.shift_factor or 0.0)
    with ref.torch.no_grad():
        return nhwc(model.decode(ref.to_torch(nchw(z))).sample.numpy())


def relative_error(actual, expected):
    import diffusers_reference as ref

    return ref.relative_error(actual, expected)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return build_reference(tmp_path_factory.mktemp("autoencoder_kl"), **SMALL)


@pytest.fixture(scope="module")
def vae(reference):
    return convert.from_diffusers(reference[1])


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")


def test_encode_matches_diffusers_posterior_mean(reference, vae, images):
    model, _ = reference
    assert isinstance(vae, AutoencoderKL) and vae.scaling_factor == pytest.approx(0.18215)
    assert vae.count_params() == sum(p.numel() for p in model.parameters())
    latents = np_(vae.encode(images))
    assert latents.shape == (2, 8, 8, 4) == vae.compute_latent_shape(images.shape)
    error = relative_error(latents, diffusers_encode(model, images))
    print(f"encode max relative error {error:.2e}")
    assert error <= TOLERANCE


def test_decode_matches_diffusers(reference, vae):
    model, _ = reference
    latents = np.random.default_rng(1).normal(0, 1, (2, 8, 8, 4)).astype("float32")
    expected = diffusers_decode(model, latents)
    unclipped = np_(vae.reconstruct(keras.ops.convert_to_tensor(latents / vae.scaling_factor)))
    error = relative_error(unclipped, expected)
    print(f"decode max relative error {error:.2e}")
    assert error <= TOLERANCE
    assert relative_error(np_(vae.decode(latents)), np.clip(expected, -1, 1)) <= TOLERANCE


def test_videos_are_coded_frame_by_frame(reference, vae):
    """A (B, F, H, W, 3) video encodes and decodes as its frames do in diffusers, also ``frame_batch_size`` frames
    at a time (frame batches of 2, the batch size of the tests above: no new shapes to compile)."""
    model, _ = reference
    videos = np.random.default_rng(2).uniform(-1, 1, (1, 4, 16, 16, 3)).astype("float32")
    expected = diffusers_encode(model, videos[0])
    latents = np_(vae.encode(videos[:, :2]))
    assert latents.shape == (1, 2, 8, 8, 4)
    assert relative_error(latents[0], expected[:2]) <= TOLERANCE
    vae.frame_batch_size = 2
    try:
        latents = np_(vae.encode(videos))
        assert latents.shape == (1, 4, 8, 8, 4)
        assert relative_error(latents[0], expected) <= TOLERANCE
        decoded = np_(vae.decode(latents))
    finally:
        vae.frame_batch_size = None
    assert decoded.shape == videos.shape
    assert relative_error(decoded[0], np.clip(diffusers_decode(model, latents[0]), -1, 1)) <= TOLERANCE


def _tensors(path):
    from safetensors.numpy import load_file

    return load_file(os.path.join(path, "diffusion_pytorch_model.safetensors"))


def _variant(tmp_path, source, config=None, tensors=None):
    """A copy of the folder ``source`` with config fields overridden and / or other tensors."""
    from safetensors.numpy import save_file

    tmp_path.mkdir(parents=True, exist_ok=True)
    with open(os.path.join(source, "config.json")) as f:
        full = dict(json.load(f), **(config or {}))
    with open(tmp_path / "config.json", "w") as f:
        json.dump(full, f)
    save_file(_tensors(source) if tensors is None else tensors, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    return tmp_path


def test_folders_with_the_old_attention_names_load(tmp_path, reference, vae, images):
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for name, value in _tensors(reference[1]).items():
        for new_name, old_name in renames.items():
            name = name.replace(f".attentions.0.{new_name}.", f".attentions.0.{old_name}.")
        old[name] = value
    assert "encoder.mid_block.attentions.0.proj_attn.weight" in old
    legacy = convert.from_diffusers(_variant(tmp_path, reference[1], tensors=old))
    np.testing.assert_array_equal(np_(legacy.encode(images)), np_(vae.encode(images)))


@pytest.mark.parametrize(
    "field, value",
    [
        ("act_fn", "gelu"),
        ("down_block_types", ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]),
        ("up_block_types", ["UpDecoderBlock2D"]),
        ("latents_mean", [0.1, 0.2, 0.3, 0.4]),
        ("norm_num_groups", 3),
        ("use_tiles_everywhere", True),
    ],
)
def test_unsupported_config_raises_naming_the_field(tmp_path, reference, field, value):
    with pytest.raises(ConversionError, match=field):
        convert.from_diffusers(_variant(tmp_path, reference[1], config={field: value}))


def test_extra_and_missing_tensors_raise_naming_them(tmp_path, reference):
    tensors = _tensors(reference[1])
    extra = dict(tensors, **{"decoder.mid_block.extra.weight": np.zeros((2,), "float32")})
    with pytest.raises(ConversionError, match=r"not used.*decoder\.mid_block\.extra\.weight"):
        convert.from_diffusers(_variant(tmp_path / "extra", reference[1], tensors=extra))
    missing = {k: v for k, v in tensors.items() if k != "decoder.mid_block.attentions.0.to_k.bias"}
    with pytest.raises(ConversionError, match=r"decoder\.mid_block\.attentions\.0\.to_k\.bias"):
        convert.from_diffusers(_variant(tmp_path / "missing", reference[1], tensors=missing))


def test_other_config_options_match_diffusers(tmp_path):
    """No quant convs, no mid attention, a shift, swish, layers_per_block 2, one level (the kernel shapes of the
    first reference, few new to compile on JAX)."""
    config = dict(
        in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=2, latent_channels=4,
        norm_num_groups=2, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        act_fn="swish", scaling_factor=0.5, shift_factor=0.1, use_quant_conv=False, use_post_quant_conv=False,
        mid_block_add_attention=False,
    )
    model, path = build_reference(tmp_path, seed=1, **config)
    vae = convert.from_diffusers(path)
    assert (vae.shift_factor, vae.scaling_factor, vae.downsampling_factor) == (0.1, 0.5, 1)
    images = np.random.default_rng(3).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    assert relative_error(np_(vae.encode(images)), diffusers_encode(model, images)) <= TOLERANCE
    latents = np.random.default_rng(4).normal(0, 1, (2, 16, 16, 4)).astype("float32")
    unclipped = np_(vae.reconstruct(keras.ops.convert_to_tensor(latents / 0.5 + 0.1)))
    assert relative_error(unclipped, diffusers_decode(model, latents)) <= TOLERANCE


@pytest.mark.slow  # a bfloat16 build compiles every initializer and op anew (a minute on CPU JAX)
def test_bfloat16_conversion_casts_the_weights(reference, vae, images):
    half = convert.from_diffusers(reference[1], dtype="bfloat16")
    conv_in = half.encoder.get_layer("encoder_conv_in")
    assert conv_in.kernel.dtype == "bfloat16"
    assert half.encoder.get_layer("encoder_out_norm").gamma.dtype == "float32"
    assert relative_error(np_(half.encode(images)), np_(vae.encode(images))) <= 0.1


def test_serialization_round_trip(vae, images):
    config = vae.get_config()
    assert config["block_out_channels"] == [4, 8] and config["sample_size"] == [16, 16]
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vae))
    assert isinstance(clone, AutoencoderKL) and clone.get_config() == config
    clone.set_weights(vae.get_weights())
    np.testing.assert_array_equal(np_(clone.encode(images)), np_(vae.encode(images)))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(block_out_channels=()), "block_out_channels"),
        (dict(block_out_channels=(8, 12), norm_num_groups=8), "norm_num_groups"),
        (dict(frame_batch_size=0), "frame_batch_size"),
        (dict(use_quant_conv="yes"), "use_quant_conv"),
        (dict(layers_per_block=0), "layers_per_block"),
    ],
)
def test_invalid_arguments_raise_naming_them(arguments, message):
    with pytest.raises(ValueError, match=message):
        AutoencoderKL(**dict(dict(block_out_channels=(8,), norm_num_groups=4), **arguments))


def test_inputs_of_the_wrong_shape_raise(vae):
    with pytest.raises(ValueError, match="divisible by 2"):
        vae.encode(np.zeros((1, 15, 16, 3), "float32"))
    with pytest.raises(ValueError, match="4 channels"):
        vae.decode(np.zeros((1, 4, 4, 3), "float32"))
