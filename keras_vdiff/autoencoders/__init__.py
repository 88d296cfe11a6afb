"""Autoencoders for latent video diffusion: ``encode(videos in [-1, 1]) -> latents``, ``decode(latents) -> videos``.

- ``FrameVAE``: frame-wise convolutional KL-VAE (LDM KL-f4 / KL-f8 layout).
- ``CausalVideoVAE``: causal 3D convolutional KL-VAE (CogVideoX): ``1 + k m`` frames <-> ``1 + m`` latents.
- ``SD3VAEAdapter``: keras-hub's Stable Diffusion 3 VAE applied frame by frame.
- ``AutoencoderKL``: the Stable Diffusion 1/2 VAE (diffusers' layout, ``kv.convert.from_diffusers``), frame by frame.
- ``CogVideoXVAE``: CogVideoX's 3D causal VAE (diffusers' ``AutoencoderKLCogVideoX``), coded in frame batches.
- ``WanVAE``: the Wan 2.1 causal 3D VAE (diffusers' ``AutoencoderKLWan``), chunk by chunk with a feature cache.

All are ``KLAutoencoder`` models trainable with ``fit`` (reconstruction + beta KL).
Importing this package registers the autoencoder presets.
"""

from keras_vdiff.autoencoders.kl_autoencoder import KLAutoencoder
from keras_vdiff.autoencoders.residual_block import VAEResidualBlock
from keras_vdiff.autoencoders.frame_vae import FRAME_VAE_PRESETS, FrameVAE
from keras_vdiff.autoencoders.causal_vae import CAUSAL_VIDEO_VAE_PRESETS, CausalVideoVAE
from keras_vdiff.autoencoders.sd3_vae import SD3VAEAdapter, build_sd3_vae
from keras_vdiff.autoencoders.autoencoder_kl import AutoencoderKL, VAEAttentionBlock
from keras_vdiff.autoencoders.cogvideox_vae import CogVideoXVAE
from keras_vdiff.autoencoders.wan_vae import WanVAE
from keras_vdiff.presets.registry import register_preset

for _class_name, _presets in (("FrameVAE", FRAME_VAE_PRESETS), ("CausalVideoVAE", CAUSAL_VIDEO_VAE_PRESETS)):
    for _name, _preset in _presets.items():
        register_preset(_name, _class_name, kind="autoencoder", **_preset)
