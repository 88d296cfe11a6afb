"""Frame-wise KL autoencoders: FrameVAE, the KLAutoencoder contract (encode / decode / scaling / loss), presets,
training on MovingMNIST, and the keras-hub SD3 VAE adapter (small random config)."""

import keras
import numpy as np
import pytest

from keras_vdiff.autoencoders.causal_vae import CausalVideoVAE  # noqa: F401 - registers its presets
from keras_vdiff.autoencoders.frame_vae import FrameVAE
from keras_vdiff.autoencoders.kl_autoencoder import KLAutoencoder
from keras_vdiff.autoencoders.residual_block import VAEResidualBlock
from keras_vdiff.autoencoders.sd3_vae import SD3VAEAdapter, build_sd3_vae
from keras_vdiff.data.moving_mnist import moving_mnist
from keras_vdiff.metrics.image_quality import psnr
from keras_vdiff.presets import registry
from keras_vdiff.video_diffusion import unit_range_to_uint8

TINY = dict(in_channels=1, latent_channels=4, downsampling_factor=4, base_channels=8, channel_multipliers=(1, 2, 2),
            norm_groups=8, reconstruction_loss="mse", seed=0)
SD3_TINY = dict(encoder_num_filters=[32, 32], encoder_num_blocks=[1, 1], decoder_num_filters=[32, 32],
                decoder_num_blocks=[1, 1], input_channels=3, sample_channels=8, output_channels=3)


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture(scope="module")
def vae():
    keras.utils.set_random_seed(0)
    return FrameVAE(**TINY)


@pytest.fixture(scope="module")
def videos():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (2, 3, 16, 16, 1)).astype("float32")


@pytest.fixture(scope="module")
def sd3_vae():
    keras.utils.set_random_seed(0)
    return build_sd3_vae(**SD3_TINY)


# --- FrameVAE: shapes, the encode / decode formulas, scaling ---------------------------------------
def test_frame_vae_shapes_for_videos_and_images(vae, videos):
    latents = vae.encode(videos)
    assert tuple(latents.shape) == (2, 3, 4, 4, 4) == vae.compute_latent_shape(videos.shape)
    decoded = np_(vae.decode(latents))
    assert decoded.shape == videos.shape and decoded.dtype == np.float32
    assert decoded.min() >= -1.0 and decoded.max() <= 1.0
    image_latents = vae.encode(videos[:, 0])
    assert tuple(image_latents.shape) == (2, 4, 4, 4)
    assert tuple(vae.decode(image_latents).shape) == (2, 16, 16, 1)
    assert vae.latent_num_frames(7) == 7 and vae.pixel_num_frames(7) == 7


def test_frame_vae_is_frame_wise(vae, videos):
    """Encoding a video equals encoding each frame as an image; the same for decoding."""
    latents = np_(vae.encode(videos))
    for f in range(videos.shape[1]):
        np.testing.assert_allclose(latents[:, f], np_(vae.encode(videos[:, f])), atol=1e-5)
    decoded = np_(vae.decode(latents))
    np.testing.assert_allclose(decoded[:, 1], np_(vae.decode(latents[:, 1])), atol=1e-5)


def test_encode_decode_follow_the_scaling_and_shift_formulas(vae, videos):
    mean, _ = vae.posterior_moments(keras.ops.convert_to_tensor(videos))
    mean = np_(mean)
    vae.scaling_factor, vae.shift_factor = 0.5, 0.1
    try:
        latents = np_(vae.encode(videos))
        np.testing.assert_allclose(latents, (mean - 0.1) * 0.5, atol=1e-5)
        decoded = np_(vae.decode(latents))
        unscaled = np_(vae.reconstruct(keras.ops.convert_to_tensor(latents / 0.5 + 0.1)))
        np.testing.assert_allclose(decoded, np.clip(unscaled, -1, 1), atol=1e-5)
    finally:
        vae.scaling_factor, vae.shift_factor = 1.0, 0.0
    # The round trip does not depend on the scaling factor (decode undoes it).
    np.testing.assert_allclose(np_(vae.decode(vae.encode(videos))), decoded, atol=1e-5)


def test_uint8_videos_are_mapped_to_unit_range(vae):
    pixels = np.random.default_rng(1).integers(0, 256, (1, 2, 16, 16, 1)).astype(np.uint8)
    np.testing.assert_allclose(np_(vae.encode(pixels)), np_(vae.encode(pixels / 127.5 - 1.0)), atol=1e-5)


def test_estimate_scaling_factor_gives_unit_variance_latents(vae, videos):
    factor = vae.estimate_scaling_factor(videos, batch_size=1)
    mean, _ = vae.posterior_moments(keras.ops.convert_to_tensor(videos))
    assert factor == pytest.approx(1.0 / np_(mean).std(), rel=1e-4)
    vae.scaling_factor = factor
    try:
        assert np_(vae.encode(videos)).std() == pytest.approx(1.0, rel=1e-4)
    finally:
        vae.scaling_factor = 1.0


def test_loss_is_reconstruction_plus_weighted_kl(vae, videos):
    """compute_loss against the formula written out in numpy (per-example means, then batch mean)."""
    rng = np.random.default_rng(2)
    y_pred = {
        "reconstruction": rng.uniform(-1, 1, videos.shape).astype("float32"),
        "mean": rng.standard_normal((2, 3, 4, 4, 4)).astype("float32"),
        "logvar": rng.uniform(-2, 1, (2, 3, 4, 4, 4)).astype("float32"),
    }
    kl = 0.5 * (y_pred["mean"] ** 2 + np.exp(y_pred["logvar"]) - 1 - y_pred["logvar"])
    for loss_name, error in (("mse", np.square), ("l1", np.abs)):
        model = FrameVAE(**dict(TINY, reconstruction_loss=loss_name, kl_weight=0.3))
        expected = error(y_pred["reconstruction"] - videos).mean() + 0.3 * kl.mean()
        got = float(np_(model.compute_loss(videos, y_pred={k: keras.ops.convert_to_tensor(v)
                                                           for k, v in y_pred.items()})))
        assert got == pytest.approx(expected, rel=1e-5)


def test_call_samples_the_posterior_only_when_training(vae, videos):
    out = vae(videos)
    np.testing.assert_allclose(np_(out["reconstruction"]), np_(vae.reconstruct(out["mean"])), atol=1e-5)
    trained = vae({"videos": videos}, training=True)
    assert not np.allclose(np_(trained["reconstruction"]), np_(out["reconstruction"]), atol=1e-4)


# --- configs, presets, errors -------------------------------------------------------------------------------
def test_frame_vae_config_round_trip(vae, videos):
    config = vae.get_config()
    clone = FrameVAE.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(vae.get_weights())
    np.testing.assert_allclose(np_(clone.encode(videos)), np_(vae.encode(videos)), atol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vae))
    assert isinstance(restored, FrameVAE) and restored.get_config() == config


def test_residual_block_config_round_trip_and_projection_skip():
    block = VAEResidualBlock(16, norm_groups=4)
    x = np.random.default_rng(3).standard_normal((2, 4, 4, 8)).astype("float32")
    assert tuple(block(x).shape) == (2, 4, 4, 16) and block.skip is not None
    clone = VAEResidualBlock.from_config(block.get_config())
    clone(x)
    clone.set_weights(block.get_weights())
    np.testing.assert_allclose(np_(clone(x)), np_(block(x)), atol=1e-6)


def test_presets_build_their_configs():
    for name in ("frame_vae_tiny", "frame_vae_moving_mnist", "frame_vae_kl_f8"):
        assert name in registry.list_presets(kind="autoencoder")
    model = FrameVAE.from_preset("frame_vae_tiny", seed=3)
    assert model.downsampling_factor == 4 and model.latent_channels == 4 and model.seed == 3
    assert model.get_config()["base_channels"] == registry.get_preset("frame_vae_tiny")["config"]["base_channels"]
    assert isinstance(KLAutoencoder.from_preset("frame_vae_tiny"), FrameVAE)
    with pytest.raises(ValueError, match="autoencoder preset"):
        FrameVAE.from_preset("no_such_vae")
    with pytest.raises(ValueError, match="Close matches: frame_vae_tiny"):  # a typo gets a suggestion
        FrameVAE.from_preset("frame_vae_tiyn")
    with pytest.raises(ValueError, match="not a FrameVAE"):
        FrameVAE.from_preset("causal_video_vae_tiny")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(downsampling_factor=3), "downsampling_factor"),
        (dict(channel_multipliers=(1, 2)), "channel_multipliers"),
        (dict(norm_groups=3), "norm_groups"),
        (dict(reconstruction_loss="l3"), "reconstruction_loss"),
        (dict(scaling_factor=0.0), "scaling_factor"),
        (dict(kl_weight=-1.0), "kl_weight"),
        (dict(latent_channels=0), "latent_channels"),
    ],
)
def test_frame_vae_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FrameVAE(**dict(TINY, **kwargs))


def test_frame_vae_rejects_bad_inputs(vae):
    with pytest.raises(ValueError, match="divisible by downsampling_factor=4"):
        vae.encode(np.zeros((1, 2, 18, 16, 1), "float32"))
    with pytest.raises(ValueError, match="1 channels"):
        vae.encode(np.zeros((1, 2, 16, 16, 3), "float32"))
    with pytest.raises(ValueError, match="videos"):
        vae.encode(np.zeros((16, 16, 1), "float32"))
    with pytest.raises(ValueError, match="4 channels"):
        vae.decode(np.zeros((1, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match="`videos` entry"):
        vae({"frames": np.zeros((1, 16, 16, 1), "float32")})
    with pytest.raises(ValueError, match="num_frames"):
        vae.latent_num_frames(0)


# --- training on MovingMNIST --------------------------------------------------------------------------------
# Slow (100 s on TensorFlow): the held-out reconstruction test below trains the same model further and asserts more.
@pytest.mark.slow
def test_fit_on_moving_mnist_lowers_the_loss():
    videos = moving_mnist(16, frame_size=16, num_frames=4, seed=0, digits_source="sklearn")["videos"]
    model = FrameVAE(**TINY)
    model.compile(optimizer=keras.optimizers.Adam(4e-3))
    history = model.fit(videos, batch_size=8, epochs=4, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    assert history[-1] < 0.6 * history[0]


@pytest.mark.slow
def test_trained_frame_vae_reconstructs_held_out_moving_mnist():
    """320 Adam steps of 64 frames (frame_vae_tiny, 16x16 frames) on held-out test-split digits: measured
    19.41 dB (JAX), 19.06 dB (TensorFlow), 19.09 dB (PyTorch); 23 dB after 1,280 steps (JAX). An all-black
    reconstruction scores 13.8 dB. Threshold 17.5 dB."""
    keras.utils.set_random_seed(0)
    train = moving_mnist(64, frame_size=16, num_frames=4, seed=0)["videos"]
    test = moving_mnist(16, frame_size=16, num_frames=4, seed=1, split="test")["videos"]
    model = FrameVAE(**TINY)
    model.compile(optimizer=keras.optimizers.Adam(4e-3))
    model.fit(train, batch_size=16, epochs=20, verbose=0)
    reconstruction = unit_range_to_uint8(np_(model.decode(model.encode(test))))
    assert psnr(np.zeros_like(test), test) < 15.0
    value = psnr(reconstruction, test)
    print(f"held-out PSNR {value:.2f} dB")
    assert value > 17.5, value


# --- the keras-hub SD3 VAE adapter --------------------------------------------------------------------------
def test_sd3_adapter_shapes_and_frame_wise_reference(sd3_vae):
    adapter = SD3VAEAdapter(sd3_vae)
    assert adapter.scaling_factor == pytest.approx(1.5305) and adapter.shift_factor == pytest.approx(0.0609)
    assert adapter.latent_channels == 4 and adapter.downsampling_factor == 2
    videos = np.random.default_rng(4).uniform(-1, 1, (2, 3, 8, 8, 3)).astype("float32")
    latents = np_(adapter.encode(videos))
    assert latents.shape == (2, 3, 4, 4, 4) == adapter.compute_latent_shape(videos.shape)
    decoded = np_(adapter.decode(latents))
    assert decoded.shape == videos.shape
    # Reference: keras-hub's own encoder / decoder on each frame, with SD3's rescaling formulas
    # (ImageRescaling: (z - shift) * scale; LatentRescaling: z / scale + shift).
    for f in range(3):
        moments = np_(sd3_vae.encoder(videos[:, f]))
        expected = (moments[..., :4] - 0.0609) * 1.5305
        np.testing.assert_allclose(latents[:, f], expected, atol=1e-5)
        image = np_(sd3_vae.decoder(latents[:, f] / 1.5305 + 0.0609))
        np.testing.assert_allclose(decoded[:, f], np.clip(image, -1, 1), atol=1e-5)
    np.testing.assert_allclose(np_(adapter.encode(videos[:, 1])), latents[:, 1], atol=1e-5)


def test_sd3_adapter_config_round_trip_and_local_preset(sd3_vae, tmp_path):
    adapter = SD3VAEAdapter(sd3_vae, kl_weight=1e-5)
    images = np.random.default_rng(5).uniform(-1, 1, (1, 8, 8, 3)).astype("float32")
    clone = SD3VAEAdapter.from_config(adapter.get_config())
    clone.set_weights(adapter.get_weights())
    assert clone.kl_weight == 1e-5 and clone.vae.sample_channels == 8
    np.testing.assert_allclose(np_(clone.encode(images)), np_(adapter.encode(images)), atol=1e-6)
    sd3_vae.save_to_preset(str(tmp_path / "vae"))
    loaded = SD3VAEAdapter.from_preset(str(tmp_path / "vae"))
    np.testing.assert_allclose(np_(loaded.encode(images)), np_(adapter.encode(images)), atol=1e-6)


def test_sd3_adapter_fails_clearly_offline_and_on_bad_input(sd3_vae, monkeypatch):
    import keras_hub

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(RuntimeError, match="network access.*stable_diffusion_3_medium|stable_diffusion_3_medium.*"
                                           "network access"):
        SD3VAEAdapter.from_preset("stable_diffusion_3_medium")
    with pytest.raises(TypeError, match="VAEBackbone"):
        SD3VAEAdapter(FrameVAE(**TINY))
    with pytest.raises(ValueError, match="divisible by 2"):
        SD3VAEAdapter(sd3_vae).encode(np.zeros((1, 7, 8, 3), "float32"))
