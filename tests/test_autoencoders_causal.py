"""CausalVideoVAE: (1 + k m) frames <-> (1 + m) latents, causality of encoder and decoder, images as one-frame
videos, the temporal down/upsampling against numpy, configs, errors and a short fit."""

import math

import keras
import numpy as np
import pytest

from keras_vdiff.autoencoders.causal_vae import (
    CausalVideoVAE,
    causal_temporal_downsample,
    causal_temporal_upsample,
)
from keras_vdiff.presets import registry

K = 4  # temporal factor
TINY = dict(in_channels=1, latent_channels=4, spatial_downsampling=4, temporal_downsampling=K, base_channels=8,
            channel_multipliers=(1, 2, 2), norm_groups=4, reconstruction_loss="mse", seed=0)


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture(scope="module", params=["replicate", "zeros"])
def vae(request):
    keras.utils.set_random_seed(0)
    return CausalVideoVAE(**dict(TINY, temporal_padding=request.param))


@pytest.fixture(scope="module")
def videos():
    return np.random.default_rng(0).uniform(-1, 1, (2, 1 + 2 * K, 16, 16, 1)).astype("float32")


def test_frame_counts_and_shapes(vae, videos):
    latents = vae.encode(videos)
    assert tuple(latents.shape) == (2, 3, 4, 4, 4) == vae.compute_latent_shape(videos.shape)
    assert tuple(vae.decode(latents).shape) == videos.shape
    assert vae.latent_num_frames(9) == 3 and vae.pixel_num_frames(3) == 9
    assert vae.latent_num_frames(1) == 1 and vae.pixel_num_frames(1) == 1
    # F = 1: an image batch (B, H, W, C) and a one-frame video both work.
    assert tuple(vae.encode(videos[:, 0]).shape) == (2, 4, 4, 4)
    assert tuple(vae.decode(vae.encode(videos[:, :1])).shape) == (2, 1, 16, 16, 1)


def test_encoder_is_causal(vae, videos):
    """Latent j depends on frames <= k j only, and does depend on frame k j."""
    reference = np_(vae.encode(videos))
    other = np.random.default_rng(1).uniform(-1, 1, videos.shape).astype("float32")
    for j in range(reference.shape[1]):
        future = videos.copy()
        future[:, K * j + 1 :] = other[:, K * j + 1 :]
        changed = np_(vae.encode(future))
        np.testing.assert_allclose(changed[:, : j + 1], reference[:, : j + 1], atol=1e-5)
        if j + 1 < reference.shape[1]:
            assert np.abs(changed[:, j + 1 :] - reference[:, j + 1 :]).max() > 1e-3
        boundary = videos.copy()
        boundary[:, K * j] = other[:, K * j]
        assert np.abs(np_(vae.encode(boundary))[:, j] - reference[:, j]).max() > 1e-3


def test_decoder_is_causal(vae):
    """Decoded frame i depends on latents <= ceil(i / k) only (checked on the unclipped reconstruction)."""
    rng = np.random.default_rng(2)
    latents = rng.standard_normal((1, 3, 4, 4, 4)).astype("float32")
    other = rng.standard_normal(latents.shape).astype("float32")
    reference = np_(vae.reconstruct(keras.ops.convert_to_tensor(latents)))
    needed = np.array([math.ceil(i / K) for i in range(reference.shape[1])])
    for j in range(latents.shape[1]):
        future = latents.copy()
        future[:, j + 1 :] = other[:, j + 1 :]
        changed = np_(vae.reconstruct(keras.ops.convert_to_tensor(future)))
        keep = needed <= j
        np.testing.assert_allclose(changed[:, keep], reference[:, keep], atol=1e-5)
        if not keep.all():
            assert np.abs(changed[:, ~keep] - reference[:, ~keep]).max() > 1e-3
        only = latents.copy()
        only[:, j] = other[:, j]
        first = int(np.argmax(needed == j))  # the first frame that needs latent j
        changed = np_(vae.reconstruct(keras.ops.convert_to_tensor(only)))
        assert np.abs(changed[:, first] - reference[:, first]).max() > 1e-3


def test_an_image_is_encoded_like_the_first_frame_of_a_video(vae, videos):
    np.testing.assert_allclose(np_(vae.encode(videos[:, 0])), np_(vae.encode(videos))[:, 0], atol=1e-5)
    latents = np_(vae.encode(videos))
    np.testing.assert_allclose(np_(vae.decode(latents[:, 0])), np_(vae.decode(latents))[:, 0], atol=1e-5)


def test_temporal_resampling_matches_numpy():
    x = np.random.default_rng(3).standard_normal((2, 5, 3, 3, 2)).astype("float32")
    expected = np.stack([x[:, 0], (x[:, 1] + x[:, 2]) / 2, (x[:, 3] + x[:, 4]) / 2], axis=1)
    np.testing.assert_allclose(np_(causal_temporal_downsample(keras.ops.convert_to_tensor(x))), expected, atol=1e-6)
    up = np_(causal_temporal_upsample(keras.ops.convert_to_tensor(expected)))
    np.testing.assert_allclose(up, expected[:, [0, 1, 1, 2, 2]], atol=1e-6)
    single = x[:, :1]
    np.testing.assert_array_equal(np_(causal_temporal_downsample(keras.ops.convert_to_tensor(single))), single)
    np.testing.assert_array_equal(np_(causal_temporal_upsample(keras.ops.convert_to_tensor(single))), single)


def test_scaling_factor_and_config_round_trip(vae, videos):
    mean, _ = vae.posterior_moments(keras.ops.convert_to_tensor(videos))
    clone = CausalVideoVAE.from_config(dict(vae.get_config(), scaling_factor=2.0, shift_factor=0.25))
    clone.set_weights(vae.get_weights())
    np.testing.assert_allclose(np_(clone.encode(videos)), (np_(mean) - 0.25) * 2.0, atol=1e-5)
    np.testing.assert_allclose(np_(clone.decode(clone.encode(videos))), np_(vae.decode(vae.encode(videos))),
                               atol=1e-5)
    config = vae.get_config()
    assert CausalVideoVAE.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vae))
    assert isinstance(restored, CausalVideoVAE) and restored.temporal_padding == vae.temporal_padding


def test_presets():
    assert {"causal_video_vae_tiny", "causal_video_vae_cogvideox"} <= set(registry.list_presets(kind="autoencoder"))
    record = registry.get_preset("causal_video_vae_cogvideox")["config"]
    assert (record["spatial_downsampling"], record["temporal_downsampling"], record["latent_channels"]) == (8, 4, 16)
    assert CausalVideoVAE.from_preset("causal_video_vae_tiny").get_config()["temporal_downsampling"] == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temporal_downsampling=3), "temporal_downsampling"),
        (dict(temporal_downsampling=8), "must not exceed"),
        (dict(spatial_downsampling=6), "spatial_downsampling"),
        (dict(temporal_padding="reflect"), "temporal_padding"),
        (dict(norm_groups=3), "norm_groups"),
        (dict(base_channels=0), "base_channels"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CausalVideoVAE(**dict(TINY, **kwargs))


def test_bad_inputs_raise(vae):
    with pytest.raises(ValueError, match=r"1 \+ 4 \* m frames"):
        vae.encode(np.zeros((1, 8, 16, 16, 1), "float32"))
    with pytest.raises(ValueError, match="divisible by 4"):
        vae.encode(np.zeros((1, 5, 12, 18, 1), "float32"))
    with pytest.raises(ValueError, match="1 channels"):
        vae.encode(np.zeros((1, 5, 16, 16, 3), "float32"))
    with pytest.raises(ValueError, match="4 channels"):
        vae.decode(np.zeros((1, 2, 4, 4, 2), "float32"))
    with pytest.raises(ValueError, match=r"`num_frames` must be 1 \+ 4 \* m"):
        vae.latent_num_frames(8)


@pytest.mark.slow
def test_fit_lowers_the_loss():
    """Slow-marked: the 3D-convolution train step costs 15-25 s to compile or run on a loaded 2-core CPU."""
    rng = np.random.default_rng(4)
    # Smooth moving blobs: learnable in a few steps.
    t = np.arange(5)[None, :, None, None]
    yy, xx = np.mgrid[:16, :16]
    centres = rng.uniform(4, 12, (8, 1, 1, 1))
    videos = np.exp(-((xx - centres - t) ** 2 + (yy - centres) ** 2) / 8.0)[..., None] * 2 - 1
    model = CausalVideoVAE(**TINY)
    model.compile(optimizer=keras.optimizers.Adam(4e-3))
    history = model.fit(videos.astype("float32"), batch_size=4, epochs=4, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and history[-1] < 0.7 * history[0]
