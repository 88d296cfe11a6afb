"""Latent video diffusion end to end: VideoDiffusion(Latte on the latent shape, GaussianDiffusion, autoencoder=VAE)
trains with fit in the VAE's latent space and generate returns uint8 videos of the pixel shape."""

import keras
import numpy as np
import pytest

from keras_vdiff.autoencoders.causal_vae import CausalVideoVAE
from keras_vdiff.autoencoders.frame_vae import FrameVAE
from keras_vdiff.data.moving_mnist import moving_mnist
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.models.latte import Latte
from keras_vdiff.video_diffusion import VideoDiffusion, unit_range_to_uint8

LATTE = dict(patch_size=2, hidden_dim=32, num_layers=2, num_heads=4, variant=1, learn_sigma=False)


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture(scope="module")
def data():
    return moving_mnist(16, frame_size=16, num_frames=5, seed=0, digits_source="sklearn")


def latent_model(autoencoder, latent_shape, **latte):
    backbone = Latte(input_shape=latent_shape, **dict(LATTE, **latte))
    model = VideoDiffusion(backbone, GaussianDiffusion("cosine", prediction="epsilon"), autoencoder=autoencoder,
                           seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    return model


def test_latent_diffusion_with_a_frame_vae(data):
    videos = data["videos"][:, :4]  # (16, 4, 16, 16, 1) uint8
    vae = FrameVAE.from_preset("frame_vae_tiny", seed=0)  # untrained: the contract, not the quality, is tested here
    vae.scaling_factor = vae.estimate_scaling_factor(videos, batch_size=8)
    assert np_(vae.encode(videos)).std() == pytest.approx(1.0, rel=1e-3)
    vae.trainable = False
    vae_weights = [w.copy() for w in vae.get_weights()]

    model = latent_model(vae, vae.compute_latent_shape(videos.shape)[1:], conditioning="class", num_classes=10)
    history = model.fit({"videos": videos, "labels": data["digits"]}, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for before, after in zip(vae_weights, vae.get_weights()):  # the frozen autoencoder is left alone
        np.testing.assert_array_equal(before, after)

    generated = model.generate(labels=[1, 7], steps=3, sampler="ddim", guidance_scale=2.0, seed=0)
    assert generated.dtype == np.uint8 and generated.shape == (2, 4, 16, 16, 1)
    latents = model.generate(labels=[1, 7], steps=3, sampler="ddim", guidance_scale=2.0, seed=0,
                             return_latents=True)
    assert latents.shape == (2, 4, 4, 4, 4)
    np.testing.assert_array_equal(unit_range_to_uint8(np_(vae.decode(latents))), generated)

    restored = VideoDiffusion.from_config(model.get_config())
    assert isinstance(restored.autoencoder, FrameVAE)
    assert restored.autoencoder.scaling_factor == pytest.approx(vae.scaling_factor)


@pytest.mark.slow
def test_latent_diffusion_with_a_causal_vae_maps_4f_plus_1_frames_to_f_plus_1_latents(data):
    videos = data["videos"]  # 5 = 1 + 4 * 1 frames -> 2 latent frames
    vae = CausalVideoVAE.from_preset("causal_video_vae_tiny", seed=0)
    vae.trainable = False
    latent_shape = vae.compute_latent_shape(videos.shape)[1:]
    assert latent_shape == (2, 4, 4, 4)
    model = latent_model(vae, latent_shape, conditioning=None)
    history = model.fit({"videos": videos}, batch_size=8, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    generated = model.generate(batch_size=2, steps=2, sampler="ddim", seed=0)
    assert generated.dtype == np.uint8 and generated.shape == (2, vae.pixel_num_frames(2), 16, 16, 1) == (
        2, 5, 16, 16, 1)
