"""``kv.convert.from_diffusers`` on a diffusers ``AutoencoderKLWan`` (the Wan 2.1 causal 3D VAE, diffusers' own test
config made random and small): the posterior and the chunked decode match diffusers, latents are normalised with
``latents_mean`` / ``latents_std`` as the Wan pipelines do, coding is causal (a prefix of a video codes as the prefix
of its code), unsupported configs and extra / missing tensors raise naming them, the model serializes.

On JAX every op compiles once per shape in eager mode: the tests reuse the shapes of the first encode and decode."""

import keras
import numpy as np
import pytest

from keras_vdiff import convert
from keras_vdiff.autoencoders import WanVAE
from keras_vdiff.convert.checkpoint import ConversionError
from keras_vdiff.presets.loading import weights_to_load

Z_DIM = 4
RNG = np.random.default_rng(0)
# diffusers' test config (base_dim 3, dim_mult [1, 1, 1, 1], num_res_blocks 1, temperal_downsample [False, True,
# True]) with base_dim 4 (its upsamplers halve the width: 2 channels, not 1), 4 latent channels and random latent
# statistics.
SMALL = dict(base_dim=4, z_dim=Z_DIM, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
             latents_mean=RNG.normal(0, 1, Z_DIM).round(4).tolist(),
             latents_std=RNG.uniform(0.5, 2.0, Z_DIM).round(4).tolist())
TOLERANCE = 1e-4  # max relative error, float32
DECODER_OUTPUT_SCALE = 0.1  # conv_out of the random decoder scaled so that few pixels reach diffusers' clamp to [-1, 1]


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def ncfhw(x):
    return np.moveaxis(np.asarray(x), -1, 1)


def nfhwc(x):
    return np.moveaxis(np.asarray(x), 1, -1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A randomized diffusers AutoencoderKLWan saved to a folder: (torch model, folder)."""
    import diffusers_reference as ref
    from diffusers import AutoencoderKLWan

    model = ref.randomize(AutoencoderKLWan(**SMALL))
    with ref.torch.no_grad():
        for tensor in (model.decoder.conv_out.weight, model.decoder.conv_out.bias):
            tensor.mul_(DECODER_OUTPUT_SCALE)
    return model, ref.save(model, tmp_path_factory.mktemp("wan_vae"))


@pytest.fixture(scope="module")
def vae(reference):
    return convert.from_diffusers(reference[1])


@pytest.fixture(scope="module")
def videos():
    return np.random.default_rng(1).uniform(-1, 1, (2, 9, 16, 16, 3)).astype("float32")


@pytest.fixture(scope="module")
def diffusers_posterior(reference, videos):
    import diffusers_reference as ref

    with ref.torch.no_grad():
        dist = reference[0].encode(ref.to_torch(ncfhw(videos))).latent_dist
    return nfhwc(dist.mean.numpy()), nfhwc(dist.logvar.numpy())


@pytest.fixture(scope="module")
def latents(vae, videos):
    return np_(vae.encode(videos))


def relative_error(actual, expected):
    import diffusers_reference as ref

    return ref.relative_error(actual, expected)


def test_encode_matches_diffusers_posterior(reference, vae, videos, diffusers_posterior, latents):
    model, _ = reference
    assert isinstance(vae, WanVAE) and vae.count_params() == sum(p.numel() for p in model.parameters())
    assert vae.latents_mean == tuple(SMALL["latents_mean"]) and vae.latents_std == tuple(SMALL["latents_std"])
    mean, logvar = diffusers_posterior
    ours_mean, ours_logvar = vae.posterior_moments(keras.ops.convert_to_tensor(videos))
    assert mean.shape == (2, 3, 2, 2, Z_DIM) == latents.shape == vae.compute_latent_shape(videos.shape)
    errors = relative_error(np_(ours_mean), mean), relative_error(np_(ours_logvar), logvar)
    print(f"posterior mean / logvar max relative error {errors[0]:.2e} / {errors[1]:.2e}")
    assert max(errors) <= TOLERANCE
    # WanPipeline's normalisation: (mean - latents_mean) * (1 / latents_std)
    expected = (mean - np.asarray(SMALL["latents_mean"])) * (1.0 / np.asarray(SMALL["latents_std"]))
    assert relative_error(latents, expected) <= TOLERANCE


def test_decode_matches_diffusers(reference, vae):
    """Normalised latents decode as diffusers decodes ``latents * latents_std + latents_mean`` (one latent frame at
    a time, clamped to [-1, 1])."""
    import diffusers_reference as ref

    model, _ = reference
    normalised = np.random.default_rng(2).normal(0, 1, (2, 3, 2, 2, Z_DIM)).astype("float32")
    z = normalised * np.asarray(SMALL["latents_std"], "float32") + np.asarray(SMALL["latents_mean"], "float32")
    with ref.torch.no_grad():
        expected = nfhwc(model.decode(ref.to_torch(ncfhw(z))).sample.numpy())
    assert expected.shape == (2, 9, 16, 16, 3)
    assert np.mean(np.abs(expected) >= 1.0) < 0.05  # the comparison is not mostly clamped values
    decoded = np_(vae.decode(normalised))
    error = relative_error(decoded, expected)
    print(f"decode max relative error {error:.2e}")
    assert error <= TOLERANCE
    # causal: the first two latent frames decode to the first 1 + 4 frames
    assert relative_error(np_(vae.decode(normalised[:, :2])), expected[:, :5]) <= TOLERANCE
    assert vae.pixel_num_frames(3) == 9 and vae.latent_num_frames(9) == 3


def test_coding_is_causal_and_images_are_one_frame_videos(vae, videos, latents):
    """The first 1 + 4 frames encode to the first two latent frames of the whole video; an image to the first."""
    np.testing.assert_allclose(np_(vae.encode(videos[:, :5])), latents[:, :2], rtol=1e-5, atol=1e-5)
    image_latents = np_(vae.encode(videos[:, 0]))
    assert image_latents.shape == (2, 2, 2, Z_DIM)
    np.testing.assert_allclose(image_latents, latents[:, 0], rtol=1e-5, atol=1e-5)
    assert vae.decode(image_latents).shape == (2, 16, 16, 3)


def test_encode_can_sample_the_posterior(vae, videos, diffusers_posterior):
    mean, logvar = diffusers_posterior
    first = np_(vae.encode(videos, sample=True, seed=3))
    np.testing.assert_array_equal(first, np_(vae.encode(videos, sample=True, seed=3)))
    draw = first * np.asarray(SMALL["latents_std"]) + np.asarray(SMALL["latents_mean"])  # back to the posterior
    standard = (draw - mean) / np.exp(0.5 * logvar)
    assert abs(standard.mean()) < 0.4 and 0.7 < standard.std() < 1.3  # mean + sigma * N(0, 1), 96 draws: 4 sigma
    assert not np.allclose(first, np_(vae.encode(videos, sample=True, seed=4)))


def test_serialization_round_trip(vae, videos, latents):
    config = vae.get_config()
    assert config["dim_mult"] == [1, 1, 1, 1] and config["temperal_downsample"] == [False, True, True]
    assert "scaling_factor" not in config
    with weights_to_load():  # no random initial values (on JAX each weight shape would compile its initializer)
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vae))
    assert isinstance(clone, WanVAE) and clone.get_config() == config
    clone.set_weights(vae.get_weights())
    np.testing.assert_array_equal(np_(clone.encode(videos)), latents)


@pytest.mark.parametrize(
    "field, value",
    [
        ("is_residual", True),
        ("patch_size", 2),
        ("attn_scales", [1.0]),
        ("dropout", 0.1),
        ("scale_factor_spatial", 16),
        ("latents_std", [1.0, 0.0, 1.0, 1.0]),
        ("temperal_downsample", [True, True, True]),
        ("use_tiles_everywhere", True),
    ],
)
def test_unsupported_config_raises_naming_the_field(tmp_path, reference, field, value):
    import diffusers_reference as ref

    with pytest.raises(ConversionError, match=field):
        convert.from_diffusers(ref.edited_folder(reference[1], tmp_path / "variant", **{field: value}))


def test_extra_and_missing_tensors_raise_naming_them(tmp_path, reference):
    import diffusers_reference as ref

    tensors = ref.folder_tensors(reference[1])
    extra = dict(tensors, **{"decoder.mid_block.extra.weight": np.zeros((2,), "float32")})
    with pytest.raises(ConversionError, match=r"not used.*decoder\.mid_block\.extra\.weight"):
        convert.from_diffusers(ref.edited_folder(reference[1], tmp_path / "extra", tensors=extra))
    missing = {k: v for k, v in tensors.items() if k != "decoder.up_blocks.0.upsamplers.0.time_conv.bias"}
    with pytest.raises(ConversionError, match=r"decoder\.up_blocks\.0\.upsamplers\.0\.time_conv\.bias"):
        convert.from_diffusers(ref.edited_folder(reference[1], tmp_path / "missing", tensors=missing))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(dim_mult=()), "dim_mult"),
        (dict(temperal_downsample=(True,)), "temperal_downsample"),
        (dict(temperal_downsample=(True, True, True)), "temperal_downsample"),
        (dict(latents_mean=[0.0] * 3), "latents_mean"),
        (dict(latents_std=[-1.0] * 16), "latents_std"),
        (dict(base_dim=0), "base_dim"),
    ],
)
def test_invalid_arguments_raise_naming_them(arguments, message):
    with pytest.raises(ValueError, match=message):
        WanVAE(**dict(dict(base_dim=4, dim_mult=(1, 1, 1, 1), num_res_blocks=1), **arguments))


def test_inputs_of_the_wrong_shape_raise(vae):
    with pytest.raises(ValueError, match="1 \\+ 4 \\* m frames"):
        vae.encode(np.zeros((1, 6, 16, 16, 3), "float32"))
    with pytest.raises(ValueError, match="divisible by 8"):
        vae.encode(np.zeros((1, 5, 12, 16, 3), "float32"))
    with pytest.raises(ValueError, match=f"{Z_DIM} channels"):
        vae.decode(np.zeros((1, 2, 2, 2, 3), "float32"))
    with pytest.raises(ValueError, match="num_frames"):
        vae.latent_num_frames(8)
