"""``kv.convert.from_diffusers`` on diffusers' ``AutoencoderKLCogVideoX`` (its tiny test config, every tensor random):
posterior mean and decoder match diffusers, whole and in frame batches with the causal context handed on,
images code as one frame, unsupported configs and extra / missing tensors raise naming them, the model serializes."""

import keras
import numpy as np
import pytest

from keras_vdiff import convert
from keras_vdiff.autoencoders import CogVideoXVAE
from keras_vdiff.autoencoders.cogvideox_vae import _blend, frame_batches
from keras_vdiff.convert.checkpoint import ConversionError
from keras_vdiff.presets.loading import weights_to_load

# diffusers' own tiny config (tests/models/autoencoders/test_models_autoencoder_cogvideox.py): four levels, x8 space,
# x4 time (the third level halves space only, the last neither).
TINY = dict(
    block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
    temporal_compression_ratio=4, down_block_types=("CogVideoXDownBlock3D",) * 4,
    up_block_types=("CogVideoXUpBlock3D",) * 4,
)
TOLERANCE = 1e-4  # max relative error, float32 (measured: about 1e-6 on the three backends)


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def ncfhw(x):
    return np.moveaxis(x, -1, 1)


def nfhwc(x):
    return np.moveaxis(np.asarray(x), 1, -1)


def relative_error(actual, expected):
    import diffusers_reference as ref

    return ref.relative_error(actual, expected)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A randomized diffusers AutoencoderKLCogVideoX saved to a folder: (torch model, folder)."""
    import diffusers_reference as ref
    from diffusers import AutoencoderKLCogVideoX

    model = ref.randomize(AutoencoderKLCogVideoX(**TINY), seed=0)
    return model, ref.save(model, tmp_path_factory.mktemp("cogvideox_vae"))


@pytest.fixture(scope="module")
def vae(reference):
    return convert.from_diffusers(reference[1])


def diffusers_posterior_mean(model, videos, batch_size=8):
    """diffusers' ``encode(...).latent_dist.mean`` with ``num_sample_frames_batch_size`` frames per batch."""
    import diffusers_reference as ref

    model.num_sample_frames_batch_size = batch_size
    with ref.torch.no_grad():
        return nfhwc(model.encode(ref.to_torch(ncfhw(videos))).latent_dist.mean.numpy())


def diffusers_decode(model, z, batch_size=2):
    """diffusers' ``decode`` of unscaled latents, ``num_latent_frames_batch_size`` latent frames per batch."""
    import diffusers_reference as ref

    model.num_latent_frames_batch_size = batch_size
    with ref.torch.no_grad():
        return nfhwc(model.decode(ref.to_torch(ncfhw(z))).sample.numpy())


def videos(frames, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (1, frames, 16, 16, 3)).astype("float32")


def latents(frames, seed=1):
    return np.random.default_rng(seed).normal(0, 1, (1, frames, 2, 2, 4)).astype("float32")


def test_encode_matches_diffusers_posterior_mean(reference, vae):
    """9 frames -> 3 latent frames of 2x2 (one frame batch, diffusers' default of 8 plus the odd first frame)."""
    model, _ = reference
    assert isinstance(vae, CogVideoXVAE) and vae.scaling_factor == pytest.approx(1.15258426)
    assert vae.count_params() == sum(p.numel() for p in model.parameters())
    x = videos(9)
    encoded = np_(vae.encode(x))
    assert encoded.shape == (1, 3, 2, 2, 4) == vae.compute_latent_shape(x.shape)
    error = relative_error(encoded, diffusers_posterior_mean(model, x) * vae.scaling_factor)
    print(f"encode max relative error {error:.2e}")
    assert error <= TOLERANCE


def test_decode_matches_diffusers(reference, vae):
    """3 latent frames -> 9 frames (one batch: diffusers' 2 plus the remainder); ``decode`` clips to [-1, 1]."""
    model, _ = reference
    z = latents(3)
    expected = diffusers_decode(model, z)
    unclipped = np_(vae.reconstruct(keras.ops.convert_to_tensor(z)))
    assert unclipped.shape == (1, 9, 16, 16, 3) and vae.pixel_num_frames(3) == 9
    error = relative_error(unclipped, expected)
    print(f"decode max relative error {error:.2e}")
    assert error <= TOLERANCE
    decoded = np_(vae.decode(z * vae.scaling_factor))
    assert relative_error(decoded, np.clip(expected, -1, 1)) <= TOLERANCE


def test_frame_batches_match_diffusers_with_the_causal_context(reference, vae):
    """17 frames in batches of 4 (5, 4, 4, 4 frames) and 5 latent frames in batches of 2 (3, 2): each batch's
    convolutions see the last frames of the previous one; GroupNorm statistics and time resampling are per batch,
    so batching changes the numbers, in diffusers and here alike."""
    model, _ = reference
    assert frame_batches(17, 4) == [(0, 5), (5, 9), (9, 13), (13, 17)]
    x = videos(17, seed=2)
    vae.num_sample_frames_batch_size = 4
    try:
        encoded = np_(vae.posterior_moments(keras.ops.convert_to_tensor(x))[0])
    finally:
        vae.num_sample_frames_batch_size = 8
    expected = diffusers_posterior_mean(model, x, batch_size=4)
    assert encoded.shape == (1, 5, 2, 2, 4) and vae.latent_num_frames(17) == 5
    assert relative_error(encoded, expected) <= TOLERANCE
    assert relative_error(expected, diffusers_posterior_mean(model, x, batch_size=17)) > 1e-3  # batching matters

    z = latents(5, seed=3)
    decoded = np_(vae.reconstruct(keras.ops.convert_to_tensor(z)))
    assert decoded.shape == (1, 17, 16, 16, 3) and vae.pixel_num_frames(5) == 17
    assert relative_error(decoded, diffusers_decode(model, z, batch_size=2)) <= TOLERANCE


def test_images_code_as_one_frame(reference, vae):
    model, _ = reference
    image = videos(1, seed=4)
    encoded = np_(vae.encode(image[:, 0]))
    assert encoded.shape == (1, 2, 2, 4)
    assert relative_error(encoded, diffusers_posterior_mean(model, image)[:, 0] * vae.scaling_factor) <= TOLERANCE
    z = latents(1, seed=5)
    decoded = np_(vae.reconstruct(keras.ops.convert_to_tensor(z[:, 0])))
    assert decoded.shape == (1, 16, 16, 3)
    assert relative_error(decoded, diffusers_decode(model, z)[:, 0]) <= TOLERANCE


def test_tile_blending_matches_diffusers(reference):
    """The fast sibling of the tiling test: one blend of two tiles, rows and columns, against diffusers' own."""
    import diffusers_reference as ref

    model, _ = reference
    rng = np.random.default_rng(9)
    a, b = (rng.normal(size=(1, 2, 6, 5, 3)).astype("float32") for _ in range(2))
    for axis, blend in ((2, model.blend_v), (3, model.blend_h)):
        expected = nfhwc(blend(ref.to_torch(ncfhw(a)), ref.to_torch(ncfhw(b)), 4).numpy())
        actual = np_(_blend(keras.ops.convert_to_tensor(a), keras.ops.convert_to_tensor(b), 4, axis=axis))
        assert relative_error(actual, expected) <= 1e-6


@pytest.mark.slow  # 12 tiles to code (30 s on a loaded CPU); test_tile_blending_matches_diffusers is the fast part
def test_tiling_matches_diffusers_enable_tiling(reference, vae):
    """Tiles of 32 x 32 pixels (4 x 4 latents) overlapping by a quarter, blended and cropped as diffusers'
    ``enable_tiling`` does: 56 x 40 pixels are 3 x 2 tiles, 7 x 5 latents 3 x 2 tiles (one frame: tiles of every
    size, few shapes to compile)."""
    model, _ = reference
    options = dict(tile_sample_min_height=32, tile_sample_min_width=32, tile_overlap_factor_height=0.25,
                   tile_overlap_factor_width=0.25)
    assert model.use_tiling is False
    model.enable_tiling(**options)
    previous = {name: getattr(vae, name) for name in options}
    for name, value in dict(options, use_tiling=True).items():
        setattr(vae, name, value)
    try:
        assert vae.tile_sizes() == ((32, 32), (4, 4))
        x = np.random.default_rng(7).uniform(-1, 1, (1, 1, 56, 40, 3)).astype("float32")
        encoded = np_(vae.posterior_moments(keras.ops.convert_to_tensor(x))[0])
        assert relative_error(encoded, diffusers_posterior_mean(model, x)) <= TOLERANCE
        z = np.random.default_rng(8).normal(0, 1, (1, 1, 7, 5, 4)).astype("float32")
        decoded = np_(vae.reconstruct(keras.ops.convert_to_tensor(z)))
        assert decoded.shape == (1, 1, 56, 40, 3)
        assert relative_error(decoded, diffusers_decode(model, z)) <= TOLERANCE
    finally:
        model.disable_tiling()
        for name, value in dict(previous, use_tiling=False).items():
            setattr(vae, name, value)


@pytest.mark.parametrize(
    "field, value",
    [
        ("act_fn", "gelu"),
        ("down_block_types", ["CogVideoXDownBlock3D"] * 3 + ["DownEncoderBlock2D"]),
        ("up_block_types", ["CogVideoXUpBlock3D"] * 3),
        ("use_quant_conv", True),
        ("latents_mean", [0.1, 0.2, 0.3, 0.4]),
        ("temporal_compression_ratio", 16),
        ("norm_num_groups", 3),
        ("use_tiles_everywhere", True),
    ],
)
def test_unsupported_config_raises_naming_the_field(tmp_path, reference, field, value):
    import diffusers_reference as ref

    with pytest.raises(ConversionError, match=field):
        convert.from_diffusers(ref.edited_folder(reference[1], tmp_path / "edited", **{field: value}))


def test_extra_and_missing_tensors_raise_naming_them(tmp_path, reference):
    import diffusers_reference as ref

    tensors = ref.folder_tensors(reference[1])
    extra = dict(tensors, **{"decoder.mid_block.extra.weight": np.zeros((2,), "float32")})
    with pytest.raises(ConversionError, match=r"not used.*decoder\.mid_block\.extra\.weight"):
        convert.from_diffusers(ref.edited_folder(reference[1], tmp_path / "extra", tensors=extra))
    missing = {k: v for k, v in tensors.items() if k != "decoder.norm_out.conv_b.conv.bias"}
    with pytest.raises(ConversionError, match=r"decoder\.norm_out\.conv_b\.conv\.bias"):
        convert.from_diffusers(ref.edited_folder(reference[1], tmp_path / "missing", tensors=missing))


def test_serialization_round_trip(vae):
    config = vae.get_config()
    assert config["block_out_channels"] == [8, 8, 8, 8] and config["num_latent_frames_batch_size"] == 2
    with weights_to_load():  # zeros, not random draws (each a compile on JAX); the weights are copied next
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vae))
    assert isinstance(clone, CogVideoXVAE) and clone.get_config() == config
    clone.set_weights(vae.get_weights())
    x = videos(1, seed=6)[:, 0]
    np.testing.assert_array_equal(np_(clone.encode(x)), np_(vae.encode(x)))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(block_out_channels=()), "block_out_channels"),
        (dict(block_out_channels=(8, 12), norm_num_groups=8), "norm_num_groups"),
        (dict(temporal_compression_ratio=3), "temporal_compression_ratio"),
        (dict(num_latent_frames_batch_size=0), "num_latent_frames_batch_size"),
        (dict(tile_overlap_factor_width=1.5), "tile_overlap_factor_width"),
        (dict(use_tiling="yes"), "use_tiling"),
    ],
)
def test_invalid_arguments_raise_naming_them(arguments, message):
    with pytest.raises(ValueError, match=message):
        CogVideoXVAE(**dict(dict(block_out_channels=(8, 8), norm_num_groups=4, temporal_compression_ratio=2),
                            **arguments))


def test_inputs_of_the_wrong_shape_raise(vae):
    with pytest.raises(ValueError, match="divisible by 8"):
        vae.encode(np.zeros((1, 1, 12, 16, 3), "float32"))
    with pytest.raises(ValueError, match="4 channels"):
        vae.decode(np.zeros((1, 3, 2, 2, 3), "float32"))
