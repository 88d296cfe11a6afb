"""``CausalVideoVAE``: a 3D causal convolutional KL-VAE with temporal compression (CogVideoX, Yang et al. 2024).

Every convolution is a ``keras_vdiff.layers.convolution.CausalConv3D`` (padding only before the
first frame) and every normalization runs per frame, so latent frame ``j``
depends only on input frames ``<= k * j`` (``k`` = ``temporal_downsampling``)
and decoded frame ``i`` only on latent frames ``<= ceil(i / k)``. Time is
compressed with the first frame kept apart::

    down (x2): (x_0, x_1, x_2, ..., x_2n) -> (x_0, mean(x_1, x_2), ..., mean(x_2n-1, x_2n))
    up   (x2): (z_0, z_1, ..., z_n)       -> (z_0, z_1, z_1, ..., z_n, z_n)

so ``1 + k * m`` frames become ``1 + m`` latent frames, and a single image
(``F = 1``) is a valid input: the same model tokenizes images and videos
(image-video co-training). CogVideoX uses ``k = 4`` and spatial ``8``; the
presets here are small.
"""

import keras
from keras import ops

from keras_vdiff.autoencoders.frame_vae import DOWNSAMPLING_FACTORS, channel_widths, check_layout_ints
from keras_vdiff.autoencoders.kl_autoencoder import KLAutoencoder, check_power_of_two
from keras_vdiff.autoencoders.residual_block import VAEResidualBlock, frame_group_norm
from keras_vdiff.layers.convolution import TEMPORAL_PADDINGS, CausalConv3D

TEMPORAL_FACTORS = (1, 2, 4, 8)


def causal_temporal_downsample(x):
    """``(B, 1 + 2n, ...)`` -> ``(B, 1 + n, ...)``: keep the first frame, average the following pairs."""
    frames = x.shape[1]
    if frames == 1:
        return x
    rest = x[:, 1:]
    shape = ops.shape(rest)
    pairs = ops.reshape(rest, (shape[0], (frames - 1) // 2, 2) + tuple(shape[2:]))
    return ops.concatenate([x[:, :1], ops.mean(pairs, axis=2)], axis=1)


def causal_temporal_upsample(x):
    """``(B, 1 + n, ...)`` -> ``(B, 1 + 2n, ...)``: keep the first frame, repeat each following frame."""
    if x.shape[1] == 1:
        return x
    return ops.concatenate([x[:, :1], ops.repeat(x[:, 1:], 2, axis=1)], axis=1)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class CausalVideoVAE(KLAutoencoder):
    """Causal 3D convolutional VAE (CogVideoX 3D causal VAE, arXiv:2408.06072; here without attention and GAN loss).

    Args:
        in_channels: pixel channels.
        latent_channels: latent channels (16 in CogVideoX).
        spatial_downsampling: spatial reduction, a power of two (8 in CogVideoX).
        temporal_downsampling: temporal reduction ``k`` (1, 2, 4 or 8, at most the
            spatial one; 4 in CogVideoX): ``F = 1 + k * m`` frames -> ``1 + m``.
        base_channels, channel_multipliers, num_res_blocks, norm_groups: widths as in ``FrameVAE``.
        temporal_padding: ``"replicate"`` (repeat the first frame) or ``"zeros"``.
        **kwargs: ``scaling_factor``, ``shift_factor``, ``kl_weight``, ``reconstruction_loss``, ``seed``
            (see ``KLAutoencoder``), and Keras ``name`` / ``dtype``.

    Input of ``encode``/``fit``: videos ``(B, 1 + k * m, H, W, C)`` or images
    ``(B, H, W, C)`` (one frame), ``H`` and ``W`` divisible by ``spatial_downsampling``.

    Example:
        >>> vae = CausalVideoVAE(in_channels=1, latent_channels=4, spatial_downsampling=4,
        ...                      temporal_downsampling=4, base_channels=8)
        >>> vae.encode(keras.ops.zeros((2, 9, 16, 16, 1))).shape
        (2, 3, 4, 4, 4)
    """

    def __init__(
        self,
        in_channels=3,
        latent_channels=16,
        spatial_downsampling=8,
        temporal_downsampling=4,
        base_channels=64,
        channel_multipliers=None,
        num_res_blocks=1,
        norm_groups=8,
        temporal_padding="replicate",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_layout_ints(in_channels=in_channels, latent_channels=latent_channels, num_res_blocks=num_res_blocks,
                          norm_groups=norm_groups)
        levels = check_power_of_two(spatial_downsampling, "spatial_downsampling", DOWNSAMPLING_FACTORS) + 1
        temporal_levels = check_power_of_two(temporal_downsampling, "temporal_downsampling", TEMPORAL_FACTORS)
        if temporal_downsampling > spatial_downsampling:
            raise ValueError(
                f"`temporal_downsampling`={temporal_downsampling} must not exceed "
                f"`spatial_downsampling`={spatial_downsampling} (time is compressed at the spatial steps)."
            )
        if temporal_padding not in TEMPORAL_PADDINGS:
            raise ValueError(f"`temporal_padding` must be one of {TEMPORAL_PADDINGS}, got {temporal_padding!r}.")
        multipliers, widths = channel_widths(base_channels, channel_multipliers, levels, norm_groups)
        dtype = self.dtype_policy

        def conv(filters, kernel, name, stride=1):
            return CausalConv3D(filters, kernel, strides=stride, temporal_padding=temporal_padding, dtype=dtype,
                                name=name)

        def blocks(width, prefix):
            return [
                VAEResidualBlock(width, norm_groups, video=True, temporal_padding=temporal_padding, dtype=dtype,
                                 name=f"{prefix}_{i}")
                for i in range(num_res_blocks)
            ]

        # Encoder: (layers of the level, downsampling conv or None, temporal downsampling?) per level.
        self.encoder_in = conv(widths[0], 3, "encoder_conv_in")
        self.encoder_levels = []
        for level, width in enumerate(widths):
            down = conv(width, (1, 3, 3), f"encoder_down_{level}", stride=2) if level < levels - 1 else None
            self.encoder_levels.append((blocks(width, f"encoder_block_{level}"), down, level < temporal_levels))
        self.encoder_mid = VAEResidualBlock(widths[-1], norm_groups, video=True, temporal_padding=temporal_padding,
                                            dtype=dtype, name="encoder_mid")
        self.encoder_norm = keras.layers.GroupNormalization(norm_groups, epsilon=1e-6, dtype="float32",
                                                            name="encoder_out_norm")
        self.encoder_out = conv(2 * latent_channels, 3, "encoder_out_conv")

        # Decoder, mirrored: (layers of the level, upsampling conv or None, temporal upsampling?).
        self.decoder_in = conv(widths[-1], 3, "decoder_conv_in")
        self.decoder_mid = VAEResidualBlock(widths[-1], norm_groups, video=True, temporal_padding=temporal_padding,
                                            dtype=dtype, name="decoder_mid")
        self.decoder_levels = []
        for level in reversed(range(levels)):
            up = conv(widths[level - 1], 3, f"decoder_up_conv_{level}") if level > 0 else None
            self.decoder_levels.append(
                (blocks(widths[level], f"decoder_block_{level}"), up, level > 0 and level - 1 < temporal_levels)
            )
        self.decoder_norm = keras.layers.GroupNormalization(norm_groups, epsilon=1e-6, dtype="float32",
                                                            name="decoder_out_norm")
        self.decoder_out = conv(in_channels, 3, "decoder_out_conv")

        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.spatial_downsampling = spatial_downsampling
        self.temporal_downsampling = temporal_downsampling
        self.base_channels = base_channels
        self.channel_multipliers = multipliers
        self.num_res_blocks = num_res_blocks
        self.norm_groups = norm_groups
        self.temporal_padding = temporal_padding
        self._build_layers(widths)
        self.built = True

    def _build_layers(self, widths):
        def video(channels):
            return (None, None, None, None, channels)

        self.encoder_in.build(video(self.in_channels))
        channels = widths[0]
        for (level_blocks, down, _), width in zip(self.encoder_levels, widths):
            for block in level_blocks:
                block.build(video(channels))
                channels = width
            if down is not None:
                down.build(video(channels))
        self.encoder_mid.build(video(channels))
        self.encoder_norm.build((None, None, None, channels))
        self.encoder_out.build(video(channels))
        self.decoder_in.build(video(self.latent_channels))
        channels = widths[-1]
        self.decoder_mid.build(video(channels))
        for (level_blocks, up, _), width in zip(self.decoder_levels, reversed(widths)):
            for block in level_blocks:
                block.build(video(channels))
                channels = width
            if up is not None:
                up.build(video(channels))
                channels = up.filters
        self.decoder_norm.build((None, None, None, channels))
        self.decoder_out.build(video(channels))

    def _as_video(self, x, name):
        """Images become one-frame videos; checks frames, size and channels; returns (video, was_image)."""
        image = len(x.shape) == 4
        if image:
            x = ops.expand_dims(x, 1)
        frames = x.shape[1]
        k = self.temporal_downsampling if name == "videos" else 1
        if frames is None or (frames - 1) % k:
            raise ValueError(
                f"`{name}` must have 1 + {k} * m frames (temporal_downsampling={self.temporal_downsampling}), "
                f"got shape {tuple(x.shape)}."
            )
        f = self.spatial_downsampling if name == "videos" else 1
        for size in x.shape[2:4]:
            if size is not None and size % f:
                raise ValueError(f"`{name}` height and width must be divisible by {f}, got shape {tuple(x.shape)}.")
        return x, image

    def posterior_moments(self, x, training=False):
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"`videos` must have {self.in_channels} channels, got shape {tuple(x.shape)}.")
        x, image = self._as_video(x, "videos")
        h = self.encoder_in(x)
        for level_blocks, down, temporal in self.encoder_levels:
            for block in level_blocks:
                h = block(h)
            if down is not None:
                if temporal:
                    h = causal_temporal_downsample(h)
                h = down(h)
        h = self.encoder_mid(h)
        h = ops.silu(ops.cast(frame_group_norm(self.encoder_norm, h), self.compute_dtype))
        moments = self.encoder_out(h)
        if image:
            moments = moments[:, 0]
        return moments[..., : self.latent_channels], moments[..., self.latent_channels :]

    def reconstruct(self, z, training=False):
        if z.shape[-1] != self.latent_channels:
            raise ValueError(f"`latents` must have {self.latent_channels} channels, got shape {tuple(z.shape)}.")
        z, image = self._as_video(z, "latents")
        h = self.decoder_mid(self.decoder_in(ops.cast(z, self.compute_dtype)))
        for level_blocks, up, temporal in self.decoder_levels:
            for block in level_blocks:
                h = block(h)
            if up is not None:
                if temporal:
                    h = causal_temporal_upsample(h)
                h = up(ops.repeat(ops.repeat(h, 2, axis=2), 2, axis=3))
        h = ops.silu(ops.cast(frame_group_norm(self.decoder_norm, h), self.compute_dtype))
        out = self.decoder_out(h)
        return out[:, 0] if image else out

    def latent_num_frames(self, num_frames):
        """``1 + k * m`` video frames -> ``1 + m`` latent frames (a clear error for other counts)."""
        num_frames = KLAutoencoder.latent_num_frames(self, num_frames)  # not super(): WanVAE shares this
        k = self.temporal_downsampling
        if (num_frames - 1) % k:
            raise ValueError(
                f"`num_frames` must be 1 + {k} * m for temporal_downsampling={k} "
                f"(e.g. {1 + k * ((num_frames - 1) // k)} or {1 + k * ((num_frames - 1) // k + 1)}), got {num_frames}."
            )
        return 1 + (num_frames - 1) // k

    def pixel_num_frames(self, latent_frames):
        """``1 + m`` latent frames decode to ``1 + k * m`` video frames."""
        return 1 + self.temporal_downsampling * (KLAutoencoder.pixel_num_frames(self, latent_frames) - 1)

    def compute_latent_shape(self, input_shape):
        """Batched ``(B, F, H, W, C)`` -> ``(B, 1 + (F - 1) / k, H / s, W / s, latent)``; images ``(B, H, W, C)`` too."""
        s, k = self.spatial_downsampling, self.temporal_downsampling
        spatial = (input_shape[-3] // s, input_shape[-2] // s, self.latent_channels)
        if len(input_shape) == 5:
            return (input_shape[0], 1 + (input_shape[1] - 1) // k) + spatial
        return (input_shape[0],) + spatial

    def get_config(self):
        config = super().get_config()
        config.update(
            in_channels=self.in_channels,
            latent_channels=self.latent_channels,
            spatial_downsampling=self.spatial_downsampling,
            temporal_downsampling=self.temporal_downsampling,
            base_channels=self.base_channels,
            channel_multipliers=self.channel_multipliers,
            num_res_blocks=self.num_res_blocks,
            norm_groups=self.norm_groups,
            temporal_padding=self.temporal_padding,
        )
        return config


# === Presets === (data; registered by keras_vdiff.autoencoders)
CAUSAL_VIDEO_VAE_PRESETS = {
    "causal_video_vae_tiny": dict(
        config=dict(in_channels=1, latent_channels=4, spatial_downsampling=4, temporal_downsampling=4,
                    base_channels=8, channel_multipliers=(1, 2, 2), norm_groups=4, reconstruction_loss="mse"),
        description="Tiny causal 3D VAE for tests and MovingMNIST (1 channel, x4 space, x4 time: 9x16x16 -> "
                    "3x4x4x4); random init.",
        metadata=dict(paper="arXiv:2408.06072"),
    ),
    "causal_video_vae_cogvideox": dict(
        config=dict(in_channels=3, latent_channels=16, spatial_downsampling=8, temporal_downsampling=4,
                    base_channels=128, channel_multipliers=(1, 2, 2, 4), num_res_blocks=2, norm_groups=32),
        description="CogVideoX-sized causal 3D VAE layout (x8 space, x4 time, 16 latent channels; no attention); "
                    "random init.",
        metadata=dict(paper="arXiv:2408.06072"),
    ),
}
