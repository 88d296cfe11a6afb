"""``KLAutoencoder``: the shared part of every keras_vdiff VAE (Kingma & Welling 2013; Rombach et al. 2022).

A subclass supplies two networks: ``posterior_moments(x)`` (pixels in [-1, 1]
-> Gaussian mean and log-variance, channels last) and ``reconstruct(z)``
(latents -> pixels). This base class adds what the latent-diffusion
``autoencoder`` contract of ``VideoDiffusion`` and ``fit`` need::

    encode(videos)  = (mean - shift_factor) * scaling_factor         deterministic
    decode(latents) = clip(reconstruct(latents / scaling_factor + shift_factor), -1, 1)
    loss            = reconstruction(x, reconstruct(mean + sigma * eps)) + kl_weight * KL(q(z|x) || N(0, I))

Training data: arrays or datasets of videos ``(B, F, H, W, C)`` or images
``(B, H, W, C)``, uint8 in [0, 255] or float in [-1, 1] (a dict with a
``videos`` entry works too), e.g. ``vae.fit(videos, batch_size=16, epochs=5)``.
"""

import numpy as np
import keras
from keras import ops

from keras_vdiff.presets import registry
from keras_vdiff.conventions import batch_loss, videos_to_unit_range

RECONSTRUCTION_LOSSES = ("l1", "mse")

# Log-variance is clipped to this range before exponentiation (as in the LDM
# autoencoders) so an untrained encoder cannot overflow the KL term.
LOGVAR_RANGE = (-30.0, 20.0)


def gaussian_kl(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, 1)) per element: 0.5 * (mean^2 + var - 1 - logvar)."""
    return 0.5 * (ops.square(mean) + ops.exp(logvar) - 1.0 - logvar)


def check_power_of_two(value, name, valid):
    if value not in valid:
        raise ValueError(f"`{name}` must be one of {valid}, got {value!r}.")
    return int(np.log2(value))


class KLAutoencoder(keras.Model):
    """Base class of the Gaussian (KL-regularised) autoencoders; not used directly.

    Subclasses define ``posterior_moments(x, training)`` (pixels in [-1, 1] ->
    mean and log-variance of q(z|x)), ``reconstruct(z, training)`` (unscaled
    latents -> unclipped pixels) and ``compute_latent_shape(input_shape)``.

    Args:
        scaling_factor: latents are multiplied by it after the shift, so the
            diffusion model sees roughly unit variance (SD: 0.18215; use
            ``estimate_scaling_factor`` for a trained model).
        shift_factor: subtracted from the posterior mean before scaling (SD3: 0.0609).
        kl_weight: weight of the KL term (mean over latent elements) against the
            reconstruction loss (mean over pixels).
        reconstruction_loss: ``"l1"`` or ``"mse"``.
        seed: seed of the posterior samples drawn during training.

    Example (with the ``FrameVAE`` subclass):
        >>> vae = FrameVAE.from_preset("frame_vae_tiny")
        >>> vae.compile(optimizer="adam"); vae.fit(videos_uint8, batch_size=16, epochs=20)
        >>> vae.scaling_factor = vae.estimate_scaling_factor(videos_uint8)
        >>> vae.trainable = False          # then: VideoDiffusion(backbone, process, autoencoder=vae)
    """

    def __init__(
        self,
        scaling_factor=1.0,
        shift_factor=0.0,
        kl_weight=1e-4,
        reconstruction_loss="l1",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(scaling_factor, (int, float)) or isinstance(scaling_factor, bool) or scaling_factor <= 0:
            raise ValueError(f"`scaling_factor` must be a positive number, got {scaling_factor!r}.")
        if not isinstance(shift_factor, (int, float)) or isinstance(shift_factor, bool):
            raise ValueError(f"`shift_factor` must be a number, got {shift_factor!r}.")
        if not isinstance(kl_weight, (int, float)) or isinstance(kl_weight, bool) or kl_weight < 0:
            raise ValueError(f"`kl_weight` must be a number >= 0, got {kl_weight!r}.")
        if reconstruction_loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(
                f"`reconstruction_loss` must be one of {RECONSTRUCTION_LOSSES}, got {reconstruction_loss!r}."
            )
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor)
        self.kl_weight = float(kl_weight)
        self.reconstruction_loss = reconstruction_loss
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    # --- the autoencoder contract ----------------------------------------------------------------
    def _moments(self, x, training=False):
        mean, logvar = self.posterior_moments(x, training=training)
        mean = ops.cast(mean, "float32")
        logvar = ops.clip(ops.cast(logvar, "float32"), *LOGVAR_RANGE)
        return mean, logvar

    def encode(self, videos, sample=False, seed=None):
        """Videos or images in [-1, 1] (or uint8) -> scaled latents: ``(mean - shift) * scaling``.

        Deterministic (the posterior mean) unless ``sample``. Gradients do not flow into the
        encoder from here (it is the inference path; training uses ``fit``),
        but freeze the autoencoder (``vae.trainable = False``) before handing it
        to ``VideoDiffusion`` so the optimizer leaves its weights alone.

        Args:
            videos: ``(B, F, H, W, C)`` or ``(B, H, W, C)``.
            sample: scale a draw ``mean + sigma * eps`` of the posterior instead of its mean
                (diffusers' ``latent_dist.sample()``).
            seed: seed of ``eps`` (an int or a ``keras.random.SeedGenerator``); None: the model's generator.

        Returns: float32 latents, ``(B, F', h, w, latent_channels)`` or ``(B, h, w, latent_channels)``.
        """
        x = videos_to_unit_range(self._checked_pixels(videos))
        mean, logvar = self._moments(x)
        if sample:
            noise = keras.random.normal(ops.shape(mean), seed=self.seed_generator if seed is None else seed)
            mean = mean + ops.exp(0.5 * logvar) * noise
        return ops.stop_gradient(self.normalize_latents(mean))

    def decode(self, latents):
        """Scaled latents -> videos (or images) in [-1, 1], float32 (clipped)."""
        latents = ops.convert_to_tensor(latents)
        self._check_rank(latents, "latents")
        z = self.denormalize_latents(ops.cast(latents, "float32"))
        return ops.clip(ops.cast(self.reconstruct(z), "float32"), -1.0, 1.0)

    def normalize_latents(self, z):
        """Posterior latents -> the diffusion model's latents, ``(z - shift_factor) * scaling_factor``
        (a subclass with per-channel statistics overrides this and :meth:`denormalize_latents`)."""
        return (z - self.shift_factor) * self.scaling_factor

    def denormalize_latents(self, latents):
        """The inverse of :meth:`normalize_latents`: ``latents / scaling_factor + shift_factor``."""
        return latents / self.scaling_factor + self.shift_factor

    def latent_num_frames(self, num_frames):
        """Frames of the latent of a ``num_frames``-frame video (frame-wise autoencoders keep them)."""
        if not isinstance(num_frames, (int, np.integer)) or isinstance(num_frames, bool) or num_frames < 1:
            raise ValueError(f"`num_frames` must be a positive integer, got {num_frames!r}.")
        return int(num_frames)

    def pixel_num_frames(self, latent_frames):
        """Frames that ``decode`` returns for ``latent_frames`` latent frames (the inverse of ``latent_num_frames``)."""
        if not isinstance(latent_frames, (int, np.integer)) or isinstance(latent_frames, bool) or latent_frames < 1:
            raise ValueError(f"`latent_frames` must be a positive integer, got {latent_frames!r}.")
        return int(latent_frames)

    def _checked_pixels(self, videos):
        videos = ops.convert_to_tensor(videos)
        self._check_rank(videos, "videos")
        return videos

    @staticmethod
    def _check_rank(x, name):
        if len(x.shape) not in (4, 5):
            raise ValueError(
                f"`{name}` must be a video (B, F, H, W, C) or an image batch (B, H, W, C), got shape {tuple(x.shape)}."
            )

    # --- training ----------------------------------------------------------------------------------
    def call(self, inputs, training=False):
        """Forward pass: ``{"reconstruction", "mean", "logvar"}`` (reconstruction from a posterior sample
        when training, from the mean otherwise)."""
        x = videos_to_unit_range(self._checked_pixels(_videos_of(inputs)))
        mean, logvar = self._moments(x, training=training)
        z = mean
        if training:
            z = mean + ops.exp(0.5 * logvar) * keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        reconstruction = ops.cast(self.reconstruct(z, training=training), "float32")
        return {"reconstruction": reconstruction, "mean": mean, "logvar": logvar}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Reconstruction loss (mean over pixels) + ``kl_weight`` x KL (mean over latent elements)."""
        if y_pred is None:
            y_pred = self(x, training=training)
        target = videos_to_unit_range(_videos_of(x))
        error = y_pred["reconstruction"] - target
        per_pixel = ops.abs(error) if self.reconstruction_loss == "l1" else ops.square(error)
        axes = tuple(range(1, len(per_pixel.shape)))
        reconstruction = ops.mean(per_pixel, axis=axes)
        kl = ops.mean(gaussian_kl(y_pred["mean"], y_pred["logvar"]), axis=axes)
        per_example = reconstruction + self.kl_weight * kl
        return batch_loss(per_example, sample_weight, self.losses)

    def estimate_scaling_factor(self, videos, batch_size=32):
        """``1 / std`` of the shifted posterior means of ``videos`` (Rombach et al. 2022, Sec. G).

        Set it with ``vae.scaling_factor = vae.estimate_scaling_factor(videos)``
        so that latent diffusion sees latents of unit variance.
        """
        previous = self.scaling_factor
        self.scaling_factor = 1.0
        try:
            latents = [
                np.asarray(ops.convert_to_numpy(self.encode(videos[i : i + batch_size])))
                for i in range(0, len(videos), batch_size)
            ]
        finally:
            self.scaling_factor = previous
        std = float(np.concatenate(latents).std())
        if not np.isfinite(std) or std <= 0:
            raise ValueError(f"The latents of `videos` have standard deviation {std}; cannot scale them.")
        return 1.0 / std

    # --- serialization and presets -----------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            scaling_factor=self.scaling_factor,
            shift_factor=self.shift_factor,
            kl_weight=self.kl_weight,
            reconstruction_loss=self.reconstruction_loss,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Build a registered autoencoder preset (``keras_vdiff.presets.list(kind="autoencoder")``).

        Args:
            preset: the preset name, e.g. ``"frame_vae_moving_mnist"``.
            load_weights: load shipped weights where the preset has them.
            **kwargs: config overrides.
        """
        if not registry.has_preset(preset):
            names, matches = registry.list_presets(kind="autoencoder"), registry.close_matches(preset, "autoencoder")
            hint = f" Close matches: {', '.join(matches)}." if matches else ""
            raise ValueError(f"`preset` must be an autoencoder preset, got {preset!r}.{hint} "
                             f"Valid names: {', '.join(names) or 'none'}.")
        record = registry.get_preset(preset)
        model_cls = keras.saving.get_registered_object(f"keras_vdiff>{record['class_name']}")
        if record["kind"] != "autoencoder" or model_cls is None or not issubclass(model_cls, cls):
            raise ValueError(f"Preset {preset!r} builds a {record['class_name']} ({record['kind']}), not a {cls.__name__}.")
        model = model_cls(**dict(record["config"], **kwargs))
        path = registry.weights_path(record)
        if load_weights and path is not None:
            model.load_weights(path)
        return model


def _videos_of(inputs):
    if isinstance(inputs, dict):
        if "videos" not in inputs:
            raise ValueError(f"Autoencoder batches given as dicts need a `videos` entry, got keys {sorted(inputs)}.")
        return inputs["videos"]
    if isinstance(inputs, (tuple, list)):
        return inputs[0]
    return inputs


def check_frames(x, name, channels, factor):
    """Raise unless ``x`` ends in ``(H, W, channels)`` with ``H`` and ``W`` divisible by ``factor`` (static axes)."""
    for size in x.shape[-3:-1]:
        if size is not None and size % factor:
            raise ValueError(f"`{name}` height and width must be divisible by {factor}, got shape {tuple(x.shape)}.")
    if x.shape[-1] is not None and x.shape[-1] != channels:
        raise ValueError(f"`{name}` must have {channels} channels, got shape {tuple(x.shape)}.")


def fold_frames(x):
    """``(B, F, H, W, C)`` -> ``(B*F, H, W, C)`` and a function that unfolds results; images pass through."""
    if len(x.shape) == 4:
        return x, lambda y: y
    shape = ops.shape(x)
    batch, frames = shape[0], shape[1]
    folded = ops.reshape(x, (-1,) + tuple(shape[2:]))

    def unfold(y):
        return ops.reshape(y, (batch, frames) + tuple(ops.shape(y)[1:]))

    return folded, unfold
