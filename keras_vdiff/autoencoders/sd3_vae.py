"""``SD3VAEAdapter``: keras-hub's Stable Diffusion 3 VAE applied frame by frame (Esser et al. 2024).

keras-hub ships the SD3 autoencoder as ``VAEBackbone`` (the ``vae`` of
``keras_hub.models.StableDiffusion3Backbone``): an image KL-VAE with spatial
factor 8 and 16 latent channels whose encoder outputs the Gaussian mean and
log-variance concatenated on the channel axis. This adapter puts it behind the
``autoencoder`` contract of ``VideoDiffusion``::

    videos (B, F, H, W, 3) in [-1, 1]  --fold frames-->  (B*F, H, W, 3)
    encode:  (mean - shift) * scale                       (B, F, H/8, W/8, 16)
    decode:  vae.decoder(latents / scale + shift)         (B, F, H, W, 3), clipped to [-1, 1]

with ``scale`` and ``shift`` taken from the VAE (SD3: 1.5305 and 0.0609), the
same rescaling as keras-hub's ``ImageRescaling`` / ``LatentRescaling``. Every
frame is encoded on its own, so a video latent is the stack of its frames'
image latents (what Latte and the frame-wise latent video models use).
``encode`` returns the posterior mean (deterministic), not a sample as
``VAEBackbone.encode`` with ``sampler_method="sample"`` would.

Being a ``KLAutoencoder``, the adapter can be fine-tuned with ``fit``
(reconstruction + beta * KL), though usually it is frozen.

Pretrained weights: ``SD3VAEAdapter.from_preset("stable_diffusion_3_medium")``
loads them through keras-hub (the whole SD3 backbone is downloaded, then its
VAE kept); without network access it raises a ``RuntimeError`` that says so.
Tests build the VAE from a small random config instead.
"""

import json
import os

import keras
import keras_hub

from keras_vdiff.autoencoders.kl_autoencoder import KLAutoencoder, check_frames, fold_frames

try:  # keras-hub does not export the class in every release
    from keras_hub.src.models.vae.vae_backbone import VAEBackbone
except ImportError:  # pragma: no cover - depends on the installed keras-hub
    VAEBackbone = getattr(keras_hub.models, "VAEBackbone", None)

__all__ = ["SD3VAEAdapter", "build_sd3_vae"]


def build_sd3_vae(**config):
    """A keras-hub ``VAEBackbone`` (random init) from constructor arguments, e.g. a small test config.

    Example:
        >>> vae = build_sd3_vae(encoder_num_filters=[32, 32], encoder_num_blocks=[1, 1],
        ...                     decoder_num_filters=[32, 32], decoder_num_blocks=[1, 1], sample_channels=8)
    """
    if VAEBackbone is None:  # pragma: no cover
        raise RuntimeError("This keras-hub release has no VAEBackbone; install keras-hub >= 0.18.")
    return VAEBackbone(**config)


def _load_error(preset, error):
    return RuntimeError(
        f"Could not load the keras-hub VAE preset {preset!r}: {error}. Pretrained SD3 weights need network "
        "access (and accepted Kaggle terms) the first time, or a local preset directory; offline, build the "
        "adapter from a VAEBackbone you already have (SD3VAEAdapter(vae)) or train a keras_vdiff FrameVAE."
    )


@keras.saving.register_keras_serializable(package="keras_vdiff")
class SD3VAEAdapter(KLAutoencoder):
    """keras-hub's SD3 ``VAEBackbone`` as a frame-wise ``KLAutoencoder`` (Esser et al. 2024, arXiv:2403.03206).

    Args:
        vae: a ``keras_hub`` ``VAEBackbone`` (channels last), or its serialized
            config (``keras.saving.serialize_keras_object``).
        scaling_factor: latent scale (default: ``vae.scale``, 1.5305 for SD3).
        shift_factor: latent shift (default: ``vae.shift``, 0.0609 for SD3).
        kl_weight, reconstruction_loss, seed: see ``KLAutoencoder`` (for fine-tuning with ``fit``).

    Input of ``encode``: ``(B, F, H, W, C)`` or ``(B, H, W, C)`` in [-1, 1] (or
    uint8) with ``H``, ``W`` divisible by ``downsampling_factor``.

    Example:
        >>> ae = SD3VAEAdapter.from_preset("stable_diffusion_3_medium")   # downloads once
        >>> ae.trainable = False
        >>> latents = ae.encode(videos)            # (B, F, H/8, W/8, 16)
        >>> model = VideoDiffusion(latte_backbone, process, autoencoder=ae)
    """

    def __init__(self, vae, scaling_factor=None, shift_factor=None, kl_weight=1e-6, reconstruction_loss="l1",
                 seed=None, **kwargs):
        if isinstance(vae, dict):
            vae = keras.saving.deserialize_keras_object(vae)
        if VAEBackbone is None or not isinstance(vae, VAEBackbone):
            raise TypeError(f"`vae` must be a keras_hub VAEBackbone (or its config), got {type(vae).__name__}.")
        if vae.encoder.data_format != "channels_last":
            raise ValueError("`vae` must be built with data_format='channels_last' (keras_vdiff is channels last).")
        if vae.sample_channels % 2:
            raise ValueError(f"`vae.sample_channels` must be even (mean and log-variance), got {vae.sample_channels}.")
        super().__init__(
            scaling_factor=float(vae.scale) if scaling_factor is None else scaling_factor,
            shift_factor=float(vae.shift) if shift_factor is None else shift_factor,
            kl_weight=kl_weight,
            reconstruction_loss=reconstruction_loss,
            seed=seed,
            **kwargs,
        )
        self.vae = vae
        self.in_channels = int(vae.input_channels)
        self.out_channels = int(vae.output_channels)
        self.latent_channels = int(vae.sample_channels) // 2
        self.downsampling_factor = 2 ** (len(vae.encoder_num_filters) - 1)
        if len(vae.decoder_num_filters) != len(vae.encoder_num_filters):
            raise ValueError(
                "`vae` must upsample as much as it downsamples (as many decoder as encoder stacks), got "
                f"{len(vae.encoder_num_filters)} encoder and {len(vae.decoder_num_filters)} decoder stacks."
            )
        self.built = True

    def posterior_moments(self, x, training=False):
        check_frames(x, "videos", self.in_channels, self.downsampling_factor)
        folded, unfold = fold_frames(x)
        moments = unfold(self.vae.encoder(folded, training=training))
        return moments[..., : self.latent_channels], moments[..., self.latent_channels :]

    def reconstruct(self, z, training=False):
        check_frames(z, "latents", self.latent_channels, 1)
        folded, unfold = fold_frames(z)
        return unfold(self.vae.decoder(folded, training=training))

    def compute_latent_shape(self, input_shape):
        """``(..., H, W, C)`` -> ``(..., H / 8, W / 8, 16)`` for SD3 (its factor and latent channels in general)."""
        *leading, height, width, _ = input_shape
        f = self.downsampling_factor
        return tuple(leading) + (height // f, width // f, self.latent_channels)

    def get_config(self):
        config = super().get_config()
        config.update(vae=keras.saving.serialize_keras_object(self.vae))
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """The VAE of a keras-hub Stable Diffusion 3 preset, or of a local ``VAEBackbone`` preset directory.

        Args:
            preset: a keras-hub preset name (``"stable_diffusion_3_medium"``,
                ``"stable_diffusion_3.5_medium"``, ...), a ``kaggle://`` / ``hf://``
                handle, or a directory written by ``VAEBackbone.save_to_preset``.
            load_weights: load the pretrained weights (else random init of that config).
            **kwargs: adapter arguments (``scaling_factor``, ``kl_weight``, ...).

        Raises: ``RuntimeError`` when keras-hub cannot load the preset (offline, unknown name).
        """
        if not isinstance(preset, str) or not preset:
            raise ValueError(f"`preset` must be a keras-hub preset name or directory, got {preset!r}.")
        config_file = os.path.join(preset, "config.json")
        if os.path.isdir(preset) and os.path.exists(config_file):
            with open(config_file) as f:
                record = json.load(f)
            if record.get("class_name") == "VAEBackbone":
                vae = VAEBackbone.from_config(record["config"])
                weights = os.path.join(preset, "model.weights.h5")
                if load_weights and os.path.exists(weights):
                    vae.load_weights(weights)
                return cls(vae, **kwargs)
        try:
            backbone = keras_hub.models.Backbone.from_preset(preset, load_weights=load_weights)
        except Exception as error:  # noqa: BLE001 - download and lookup errors come in many types
            raise _load_error(preset, error) from error
        vae = backbone if isinstance(backbone, VAEBackbone) else getattr(backbone, "vae", None)
        if vae is None:
            raise ValueError(f"keras-hub preset {preset!r} builds a {type(backbone).__name__}, which has no VAE.")
        return cls(vae, **kwargs)
