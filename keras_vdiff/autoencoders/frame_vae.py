"""``FrameVAE``: a frame-wise KL autoencoder for latent video diffusion (the LDM "KL-f4 / KL-f8" design).

Every frame is encoded on its own (frames are folded into the batch)::

    encoder: Conv3x3 -> [ResBlock x n, stride-2 Conv] per level -> ResBlock -> GN -> SiLU -> Conv3x3 (2 * latent)
    decoder: Conv3x3 -> ResBlock -> [ResBlock x n, nearest x2 + Conv] per level -> GN -> SiLU -> Conv3x3

``downsampling_factor`` = 2^(levels - 1). Trained with ``fit`` on the
reconstruction + beta * KL loss of ``KLAutoencoder`` (no discriminator, no
perceptual loss), it is the ``autoencoder`` of ``VideoDiffusion``.
"""

import keras

from keras_vdiff.autoencoders.kl_autoencoder import KLAutoencoder, check_power_of_two, fold_frames
from keras_vdiff.autoencoders.residual_block import VAEResidualBlock, check_groups
from keras_vdiff.validation import check_int

DOWNSAMPLING_FACTORS = (1, 2, 4, 8, 16)
DEFAULT_MULTIPLIERS = (1, 2, 4, 4, 4)


def check_layout_ints(**values):
    """Each keyword (``in_channels=3``, ...) must be a positive integer; the error names it."""
    for name, value in values.items():
        check_int(value, name)


def channel_widths(base_channels, channel_multipliers, levels, norm_groups):
    """Per-level widths ``base * multiplier``, validated against the number of levels and the norm groups."""
    check_int(base_channels, "base_channels")
    multipliers = DEFAULT_MULTIPLIERS[:levels] if channel_multipliers is None else tuple(channel_multipliers)
    if len(multipliers) != levels or not all(isinstance(m, int) and m > 0 for m in multipliers):
        raise ValueError(
            f"`channel_multipliers` must hold {levels} positive ints (one per resolution level of the "
            f"downsampling factor), got {channel_multipliers!r}."
        )
    widths = tuple(base_channels * m for m in multipliers)
    for width in widths:
        check_groups(width, norm_groups, "channel width")
    return multipliers, widths


def output_head(channels, norm_groups, dtype, prefix):
    """GroupNorm -> SiLU -> Conv3x3: the last layers of an encoder or decoder."""
    return [
        keras.layers.GroupNormalization(norm_groups, epsilon=1e-6, dtype="float32", name=f"{prefix}_norm"),
        keras.layers.Activation("silu", dtype=dtype, name=f"{prefix}_silu"),
        keras.layers.Conv2D(channels, 3, padding="same", dtype=dtype, name=f"{prefix}_conv"),
    ]


@keras.saving.register_keras_serializable(package="keras_vdiff")
class FrameVAE(KLAutoencoder):
    """Frame-wise convolutional KL-VAE (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
    Diffusion Models", autoencoders KL-f4 / KL-f8, here without attention and discriminator).

    Args:
        in_channels: pixel channels (1 for MovingMNIST, 3 for RGB).
        latent_channels: channels of the latent (4 in SD).
        downsampling_factor: spatial reduction, a power of two (4 or 8 in LDM).
        base_channels: width of the first resolution level.
        channel_multipliers: width multiplier per level (``log2(factor) + 1`` of
            them; default ``(1, 2, 4, 4, 4)`` truncated).
        num_res_blocks: residual blocks per level.
        norm_groups: group-normalization groups (divides every width).
        **kwargs: ``scaling_factor``, ``shift_factor``, ``kl_weight``, ``reconstruction_loss``, ``seed``
            (see ``KLAutoencoder``), and Keras ``name`` / ``dtype``.
        dtype: dtype policy of the convolutions (norms stay float32).

    Input of ``encode``/``fit``: ``(B, F, H, W, C)`` or ``(B, H, W, C)`` with
    ``H`` and ``W`` divisible by ``downsampling_factor``, in [-1, 1] or uint8.

    Example:
        >>> vae = FrameVAE(in_channels=1, latent_channels=4, downsampling_factor=4, base_channels=16)
        >>> vae.compile(optimizer="adam")
        >>> vae.fit(videos_uint8, batch_size=16, epochs=5)          # (N, F, 16, 16, 1)
        >>> latents = vae.encode(videos_uint8[:2])                     # (2, F, 4, 4, 4)
        >>> videos = vae.decode(latents)                               # (2, F, 16, 16, 1) in [-1, 1]
    """

    def __init__(
        self,
        in_channels=3,
        latent_channels=4,
        downsampling_factor=8,
        base_channels=64,
        channel_multipliers=None,
        num_res_blocks=1,
        norm_groups=8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_layout_ints(in_channels=in_channels, latent_channels=latent_channels, num_res_blocks=num_res_blocks,
                          norm_groups=norm_groups)
        levels = check_power_of_two(downsampling_factor, "downsampling_factor", DOWNSAMPLING_FACTORS) + 1
        multipliers, widths = channel_widths(base_channels, channel_multipliers, levels, norm_groups)
        dtype = self.dtype_policy

        def block(width, name):
            return VAEResidualBlock(width, norm_groups, dtype=dtype, name=name)

        encoder = [keras.layers.Conv2D(widths[0], 3, padding="same", dtype=dtype, name="encoder_conv_in")]
        for level, width in enumerate(widths):
            encoder += [block(width, f"encoder_block_{level}_{i}") for i in range(num_res_blocks)]
            if level < levels - 1:
                encoder.append(
                    keras.layers.Conv2D(width, 3, strides=2, padding="same", dtype=dtype, name=f"encoder_down_{level}")
                )
        encoder.append(block(widths[-1], "encoder_mid"))
        encoder += output_head(2 * latent_channels, norm_groups, dtype, "encoder_out")

        decoder = [keras.layers.Conv2D(widths[-1], 3, padding="same", dtype=dtype, name="decoder_conv_in")]
        decoder.append(block(widths[-1], "decoder_mid"))
        for level in reversed(range(levels)):
            decoder += [block(widths[level], f"decoder_block_{level}_{i}") for i in range(num_res_blocks)]
            if level > 0:
                decoder += [
                    keras.layers.UpSampling2D(2, dtype=dtype, name=f"decoder_up_{level}"),
                    keras.layers.Conv2D(widths[level - 1], 3, padding="same", dtype=dtype,
                                        name=f"decoder_up_conv_{level}"),
                ]
        decoder += output_head(in_channels, norm_groups, dtype, "decoder_out")

        self.encoder = keras.Sequential(encoder, name="encoder")
        self.decoder = keras.Sequential(decoder, name="decoder")
        self.encoder.build((None, None, None, in_channels))
        self.decoder.build((None, None, None, latent_channels))

        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.downsampling_factor = downsampling_factor
        self.base_channels = base_channels
        self.channel_multipliers = multipliers
        self.num_res_blocks = num_res_blocks
        self.norm_groups = norm_groups
        self.built = True

    def _check_frames(self, x, name):
        height, width, channels = x.shape[-3:]
        for size in (height, width):
            if size is not None and size % self.downsampling_factor:
                raise ValueError(
                    f"`{name}` height and width must be divisible by downsampling_factor="
                    f"{self.downsampling_factor}, got shape {tuple(x.shape)}."
                )
        if channels is not None and channels != self.in_channels:
            raise ValueError(f"`{name}` must have {self.in_channels} channels, got shape {tuple(x.shape)}.")

    def posterior_moments(self, x, training=False):
        self._check_frames(x, "videos")
        folded, unfold = fold_frames(x)
        moments = unfold(self.encoder(folded, training=training))
        return moments[..., : self.latent_channels], moments[..., self.latent_channels :]

    def reconstruct(self, z, training=False):
        if z.shape[-1] != self.latent_channels:
            raise ValueError(f"`latents` must have {self.latent_channels} channels, got shape {tuple(z.shape)}.")
        folded, unfold = fold_frames(z)
        return unfold(self.decoder(folded, training=training))

    def compute_latent_shape(self, input_shape):
        """``(..., H, W, C)`` -> ``(..., H / f, W / f, latent_channels)``."""
        *leading, height, width, _ = input_shape
        f = self.downsampling_factor
        return tuple(leading) + (height // f, width // f, self.latent_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            in_channels=self.in_channels,
            latent_channels=self.latent_channels,
            downsampling_factor=self.downsampling_factor,
            base_channels=self.base_channels,
            channel_multipliers=self.channel_multipliers,
            num_res_blocks=self.num_res_blocks,
            norm_groups=self.norm_groups,
        )
        return config


# === Presets === (data; registered by keras_vdiff.autoencoders)
_LDM = dict(paper="arXiv:2112.10752")
FRAME_VAE_PRESETS = {
    "frame_vae_tiny": dict(
        config=dict(in_channels=1, latent_channels=4, downsampling_factor=4, base_channels=8,
                    channel_multipliers=(1, 2, 2), num_res_blocks=1, norm_groups=8, kl_weight=1e-4,
                    reconstruction_loss="mse"),
        description="Tiny frame-wise KL-VAE (38k parameters; 1 channel, factor 4: 16x16 frames -> 4x4x4 latents) "
                    "for tests and CPU latent-diffusion demos on MovingMNIST; random init.",
        metadata=_LDM,
    ),
    "frame_vae_moving_mnist": dict(
        config=dict(in_channels=1, latent_channels=4, downsampling_factor=4, base_channels=16,
                    channel_multipliers=(1, 2, 2), num_res_blocks=1, norm_groups=8, kl_weight=1e-4,
                    reconstruction_loss="mse"),
        description="Small frame-wise KL-VAE for MovingMNIST (146k parameters; 1 channel, factor 4: 32x32 frames "
                    "-> 8x8x4 latents); random init.",
        metadata=_LDM,
    ),
    "frame_vae_kl_f8": dict(
        config=dict(in_channels=3, latent_channels=4, downsampling_factor=8, base_channels=128,
                    channel_multipliers=(1, 2, 4, 4), num_res_blocks=2, norm_groups=32, kl_weight=1e-6,
                    reconstruction_loss="l1"),
        description="The LDM / Stable Diffusion KL-f8 layout (RGB, factor 8, 4 latent channels; without attention "
                    "and discriminator); random init.",
        metadata=_LDM,
    ),
}
