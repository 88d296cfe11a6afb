"""``WanVAE``: the Wan 2.1 causal 3D VAE (diffusers' ``AutoencoderKLWan``), channels last, chunk by chunk.

The video autoencoder of Wan (Wan Team 2025, "Wan: Open and Advanced Large-Scale
Video Generative Models", arXiv:2503.20314) as diffusers builds it, layer for
layer, so that ``kv.convert.from_diffusers("Wan2.1-T2V-1.3B-Diffusers/vae")``
reproduces its numbers::

    encoder: conv_in -> [WanResidualBlock x num_res_blocks, resample] per level (no resample on the last)
             -> mid (resblock, per-frame attention, resblock) -> RMS norm -> SiLU -> conv_out (2 z_dim)
             -> quant_conv (1x1x1)
    decoder: post_quant_conv (1x1x1) -> conv_in -> mid
             -> [WanResidualBlock x (num_res_blocks + 1), resample] per level (widths reversed)
             -> RMS norm -> SiLU -> conv_out

Every 3x3x3 convolution is a :class:`keras_vdiff.layers.convolution.CausalConv3D`
(two zero frames before the first, none after) and every norm is an RMS norm
over the channels (``x / ||x|| * sqrt(C) * gamma``), so nothing mixes a frame
with later frames. Time is resampled with the first frame kept apart: the
encoder's ``downsample3d`` passes frame 0 through and convolves the frames
``(2j - 2, 2j - 1, 2j)`` with stride 2 for output ``j``; the decoder's
``upsample3d`` passes frame 0 through and turns each later frame into two
(a causal 3-frame convolution to ``2 C`` channels, over the frames after the first).
``1 + 4 m`` frames become ``1 + m`` latent frames.

Wan codes a video in chunks, as here: the encoder sees the first frame alone,
then chunks of 4 frames, the decoder one latent frame at a time; each causal
layer keeps the frames it needs from the previous chunk in a
:class:`FeatureCache` (diffusers' ``feat_cache``), so the memory is bounded in
the frame count and the chunked result equals the whole video at once.
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.autoencoders.causal_vae import CausalVideoVAE
from keras_vdiff.autoencoders.kl_autoencoder import KLAutoencoder
from keras_vdiff.layers.attention import Attention
from keras_vdiff.layers.convolution import CausalConv3D, apply_per_frame
from keras_vdiff.layers.normalization import normed
from keras_vdiff.validation import check_bool, check_int, is_int

__all__ = ["WanVAE", "FeatureCache", "WanResidualBlock", "WanAttentionBlock", "WanResample", "wan_rms_norm"]

ENCODE_CHUNK_FRAMES = 4  # Wan encodes frame 0 alone, then 4 frames at a time (diffusers' _encode)
RESAMPLE_MODES = ("downsample2d", "downsample3d", "upsample2d", "upsample3d")

# The per-channel statistics of Wan 2.1's latents (diffusers' AutoencoderKLWan defaults, the released config).
WAN_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                   3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


class FeatureCache:
    """What each causal layer keeps from the chunks of one video it has seen (Wan's ``feat_cache``).

    A fresh cache means "the video starts here". Layers store under themselves:
    a ``CausalConv3D`` its ``next_context`` (the last two frames), a temporal
    resample its own state. Make one per encode / decode call.
    """

    def __init__(self):
        self._entries = {}

    def get(self, layer):
        return self._entries.get(id(layer))

    def set(self, layer, value):
        self._entries[id(layer)] = value

    def __contains__(self, layer):
        return id(layer) in self._entries


def cached_conv(conv, x, cache):
    """``conv(x)`` after the frames ``conv`` kept from the previous chunk (zeros at the start); keeps its own."""
    if cache is None:
        return conv(x)
    context = cache.get(conv)
    cache.set(conv, conv.next_context(x, context))
    return conv(x, context=context)


def wan_rms_norm(channels, name):
    """Wan's ``WanRMS_norm``: ``x / max(||x||, 1e-12) * sqrt(C) * gamma`` over the channels, in float32.

    That is an RMS norm (``x / sqrt(mean(x^2) + eps)``) with ``eps = 1e-24 / C``;
    ``gamma`` is the layer's ``scale``.
    """
    return keras.layers.RMSNormalization(axis=-1, epsilon=1e-24 / channels, dtype="float32", name=name)


def _causal(filters, kernel_size, name, dtype):
    return CausalConv3D(filters, kernel_size, temporal_padding="zeros", dtype=dtype, name=name)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class WanResidualBlock(keras.layers.Layer):
    """Wan's residual block: RMS norm -> SiLU -> causal 3x3x3 conv, twice, plus a (1x1x1) skip.

    Args:
        filters: output channels.

    Call: ``x (B, F, H, W, C)``, optional ``cache`` (a :class:`FeatureCache`: ``x`` is a chunk of a longer video).

    Example:
        >>> WanResidualBlock(8)(keras.ops.zeros((1, 3, 8, 8, 4))).shape
        (1, 3, 8, 8, 8)
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int(filters, "filters")
        self.skip = None

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"WanResidualBlock takes videos (B, F, H, W, C), got shape {tuple(input_shape)}.")
        channels, dtype = input_shape[-1], self.dtype_policy
        self.norm_1 = wan_rms_norm(channels, "norm_1")
        self.conv_1 = _causal(self.filters, 3, "conv_1", dtype)
        self.norm_2 = wan_rms_norm(self.filters, "norm_2")
        self.conv_2 = _causal(self.filters, 3, "conv_2", dtype)
        video = (None, None, None, None)
        self.norm_1.build(video + (channels,))
        self.conv_1.build(video + (channels,))
        self.norm_2.build(video + (self.filters,))
        self.conv_2.build(video + (self.filters,))
        if channels != self.filters:
            self.skip = _causal(self.filters, 1, "skip", dtype)
            self.skip.build(video + (channels,))
        self.built = True

    def call(self, x, cache=None):
        h = cached_conv(self.conv_1, ops.silu(normed(self.norm_1, x)), cache)
        h = cached_conv(self.conv_2, ops.silu(normed(self.norm_2, h)), cache)
        return (x if self.skip is None else self.skip(x)) + h

    def compute_output_shape(self, input_shape, cache=None):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class WanAttentionBlock(keras.layers.Layer):
    """Single-head self-attention over the pixels of each frame, with an RMS norm in front and a residual.

    ``x + proj(softmax(q k^T / sqrt(C)) v)``, ``q, k, v`` from the normed frame
    (Wan's ``WanAttentionBlock``: the mid-block attention of its VAE).

    Example:
        >>> WanAttentionBlock()(keras.ops.zeros((1, 2, 4, 4, 8))).shape
        (1, 2, 4, 4, 8)
    """

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"WanAttentionBlock takes videos (B, F, H, W, C), got shape {tuple(input_shape)}.")
        channels = input_shape[-1]
        self.norm = wan_rms_norm(channels, "norm")
        self.norm.build((None, None, None, None, channels))
        self.attention = Attention(num_heads=1, head_dim=channels, name="attention", dtype=self.dtype_policy)
        self.attention.build((None, None, channels))
        self.built = True

    def call(self, x):
        shape = ops.shape(x)
        tokens = ops.reshape(normed(self.norm, x), (-1, shape[2] * shape[3], shape[4]))
        return x + ops.reshape(self.attention(tokens), shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class WanResample(keras.layers.Layer):
    """Wan's resampling layer (``WanResample``): spatial x2 down / up, optionally with time x2.

    - ``downsample2d``: per frame, one zero row and column after, 3x3 conv with stride 2.
    - ``downsample3d``: the same, then time: frame 0 passes, output ``j >= 1`` is a
      ``(3, 1, 1)`` convolution of frames ``2j - 2 .. 2j`` (stride 2, unpadded).
    - ``upsample2d``: per frame, nearest x2 and a 3x3 conv to ``filters`` channels.
    - ``upsample3d``: first time: frame 0 passes, each later frame becomes two (a causal
      ``(3, 1, 1)`` conv over the frames after the first, to ``2 C`` channels, split in two
      frames), then as ``upsample2d``.

    Args:
        mode: one of ``"downsample2d"``, ``"downsample3d"``, ``"upsample2d"``, ``"upsample3d"``.
        filters: output channels of an upsampling layer (Wan: half the input); downsampling keeps them.

    Call: ``x (B, F, H, W, C)``, optional ``cache`` (``x`` is a chunk of a video; a
    ``downsample3d`` chunk after the first has an even number of frames).

    Example:
        >>> WanResample("downsample3d")(keras.ops.zeros((1, 5, 8, 8, 4))).shape
        (1, 3, 4, 4, 4)
    """

    def __init__(self, mode, filters=None, **kwargs):
        super().__init__(**kwargs)
        if mode not in RESAMPLE_MODES:
            raise ValueError(f"`mode` must be one of {RESAMPLE_MODES}, got {mode!r}.")
        if filters is not None:
            check_int(filters, "filters")
        self.mode = mode
        self.filters = filters
        self.time_conv = None

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"WanResample takes videos (B, F, H, W, C), got shape {tuple(input_shape)}.")
        channels, dtype = input_shape[-1], self.dtype_policy
        if self.mode.startswith("down"):
            self.spatial = keras.Sequential(
                [keras.layers.ZeroPadding2D(((0, 1), (0, 1)), dtype=dtype),
                 keras.layers.Conv2D(channels, 3, strides=2, dtype=dtype, name="conv")], name="spatial")
            if self.mode == "downsample3d":
                self.time_conv = keras.layers.Conv3D(channels, (3, 1, 1), strides=(2, 1, 1), dtype=dtype,
                                                     name="time_conv")
        else:
            filters = self.filters or channels // 2
            self.spatial = keras.Sequential(
                [keras.layers.UpSampling2D(2, dtype=dtype),
                 keras.layers.Conv2D(filters, 3, padding="same", dtype=dtype, name="conv")], name="spatial")
            if self.mode == "upsample3d":
                self.time_conv = _causal(2 * channels, (3, 1, 1), "time_conv", dtype)
        self.spatial.build((None, None, None, channels))
        if self.time_conv is not None:
            self.time_conv.build((None, None, None, None, channels))
        self.built = True

    def call(self, x, cache=None):
        cache = FeatureCache() if cache is None else cache  # none: x is a whole video
        if self.mode == "upsample3d":
            x = self._time_upsample(x, cache)
        x = apply_per_frame(self.spatial, x)
        if self.mode == "downsample3d":
            x = self._time_downsample(x, cache)
        return x

    def _time_upsample(self, x, cache):
        parts = []
        if self not in cache:  # the video's first chunk: frame 0 is not upsampled in time
            cache.set(self, True)
            parts, x = [x[:, :1]], x[:, 1:]
        if x.shape[1]:
            y = cached_conv(self.time_conv, x, cache)  # (B, F, H, W, 2C): two frames per frame
            shape = ops.shape(y)
            y = ops.reshape(y, tuple(shape[:4]) + (2, shape[4] // 2))
            y = ops.transpose(y, (0, 1, 4, 2, 3, 5))
            parts.append(ops.reshape(y, (shape[0], 2 * shape[1], shape[2], shape[3], shape[4] // 2)))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=1)

    def _time_downsample(self, x, cache):
        previous = cache.get(self)  # the last frame of the previous chunk
        cache.set(self, x[:, -1:])
        if previous is None:  # the video's first chunk: frame 0 passes, the rest pairs up after it
            head, frames = [x[:, :1]], x
        else:
            head, frames = [], ops.concatenate([previous, x], axis=1)
        if (frames.shape[1] - 1) % 2:
            raise ValueError(
                f"A downsample3d chunk needs an even number of frames after the first chunk's first frame, got "
                f"shape {tuple(x.shape)}."
            )
        parts = head + ([self.time_conv(frames)] if frames.shape[1] >= 3 else [])
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=1)

    def compute_output_shape(self, input_shape, cache=None):
        b, f, h, w, c = input_shape
        if self.mode.startswith("down"):
            return (b, f if self.mode == "downsample2d" or f is None else 1 + (f - 1) // 2,
                    None if h is None else h // 2, None if w is None else w // 2, c)
        frames = f if self.mode == "upsample2d" or f is None else 2 * f - 1
        return (b, frames, None if h is None else 2 * h, None if w is None else 2 * w, self.filters or c // 2)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, filters=self.filters)
        return config


def _multipliers(value):
    if not isinstance(value, (list, tuple)) or not value or not all(is_int(m) and m > 0 for m in value):
        raise ValueError(f"`dim_mult` must be a non-empty list of positive ints (one per level), got {value!r}.")
    return tuple(int(m) for m in value)


def _statistics(value, name, z_dim, positive=False):
    values = np.asarray(value, dtype="float64") if isinstance(value, (list, tuple)) else None
    if values is None or values.shape != (z_dim,) or not np.all(np.isfinite(values)) or (
            positive and not np.all(values > 0)):
        what = "positive numbers" if positive else "numbers"
        raise ValueError(f"`{name}` must be a list of {z_dim} (`z_dim`) {what}, got {value!r}.")
    return tuple(float(v) for v in values)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class WanVAE(KLAutoencoder):
    """The Wan 2.1 video VAE, diffusers' ``AutoencoderKLWan`` (arXiv:2503.20314), coding videos chunk by chunk.

    The defaults are the released Wan 2.1 VAE (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``
    and the 14B models: 126.9M parameters, x8 space, x4 time, 16 latent
    channels). Argument names are diffusers' config fields (``temperal_downsample``
    with its spelling), so its ``config.json`` maps one to one; pretrained
    weights come with ``kv.convert.from_diffusers(folder)``.

    Latents are normalised per channel as diffusers' Wan pipelines do:
    ``encode`` returns ``(mean - latents_mean) / latents_std``, ``decode`` takes
    such latents (``latents * latents_std + latents_mean`` go to the decoder).

    Args:
        base_dim: width of the first level; level ``i`` is ``base_dim * dim_mult[i]`` wide.
        decoder_base_dim: the decoder's base width (None: ``base_dim``).
        z_dim: latent channels.
        dim_mult: width multipliers per level; the spatial factor is ``2 ** (len(dim_mult) - 1)``.
        num_res_blocks: residual blocks per encoder level (the decoder has one more).
        temperal_downsample: per downsampling step (``len(dim_mult) - 1`` bools), whether
            it also halves time (Wan: ``[False, True, True]``, x4); the decoder mirrors it.
            The temporal factor must divide 4 (Wan's encode chunk).
        latents_mean, latents_std: ``z_dim`` per-channel statistics of the latents.
        in_channels, out_channels: pixel channels.
        kl_weight, reconstruction_loss: the ``fit`` loss (see ``KLAutoencoder``).
        **kwargs: ``seed`` and Keras ``name`` / ``dtype`` (policy of the convolutions
            and attention; norms stay float32).

    Input of ``encode``: videos ``(B, 1 + 4 m, H, W, C)`` (``1 + k m`` for the temporal
    factor ``k``) or images ``(B, H, W, C)`` in [-1, 1] (or uint8), ``H`` and ``W``
    divisible by the spatial factor. Layer names follow diffusers' modules:
    ``encoder_down_{k}`` (the ``k``-th entry of diffusers' flat ``down_blocks``),
    ``decoder_up_{i}_resnet_{j}``, ``decoder_up_{i}_upsample``, ``{encoder,decoder}_mid_*``, ...

    Example:
        >>> vae = kv.convert.from_diffusers("Wan2.1-T2V-1.3B-Diffusers/vae")
        >>> latents = vae.encode(videos)                     # (1, 81, 480, 832, 3) -> (1, 21, 60, 104, 16)
        >>> videos = vae.decode(latents)                     # one latent frame at a time, in [-1, 1]
        >>> sampled = vae.encode(videos, sample=True, seed=0)  # a posterior draw instead of the mean
        >>> small = WanVAE(base_dim=8, z_dim=4, dim_mult=(1, 2), num_res_blocks=1, temperal_downsample=(True,),
        ...                latents_mean=[0.0] * 4, latents_std=[1.0] * 4)   # x2 space, x2 time
    """

    def __init__(
        self,
        base_dim=96,
        decoder_base_dim=None,
        z_dim=16,
        dim_mult=(1, 2, 4, 4),
        num_res_blocks=2,
        temperal_downsample=(False, True, True),
        latents_mean=WAN_LATENTS_MEAN,
        latents_std=WAN_LATENTS_STD,
        in_channels=3,
        out_channels=3,
        kl_weight=1e-6,
        reconstruction_loss="l1",
        **kwargs,
    ):
        super().__init__(kl_weight=kl_weight, reconstruction_loss=reconstruction_loss, **kwargs)
        for name, value in (("base_dim", base_dim), ("z_dim", z_dim), ("num_res_blocks", num_res_blocks),
                            ("in_channels", in_channels), ("out_channels", out_channels)):
            check_int(value, name)
        if decoder_base_dim is not None:
            check_int(decoder_base_dim, "decoder_base_dim")
        multipliers = _multipliers(dim_mult)
        temporal = tuple(temperal_downsample) if isinstance(temperal_downsample, (list, tuple)) else None
        if temporal is None or len(temporal) != len(multipliers) - 1:
            raise ValueError(f"`temperal_downsample` must be a list of {len(multipliers) - 1} bools (one per "
                             f"downsampling step of `dim_mult`={list(multipliers)}), got {temperal_downsample!r}.")
        temporal = tuple(check_bool(t, "temperal_downsample") for t in temporal)
        if ENCODE_CHUNK_FRAMES % 2 ** sum(temporal):
            raise ValueError(f"`temperal_downsample`={list(temporal)} halves time {sum(temporal)} times; at most 2 "
                             f"(the temporal factor must divide Wan's {ENCODE_CHUNK_FRAMES}-frame encode chunk).")
        self.base_dim = int(base_dim)
        self.decoder_base_dim = None if decoder_base_dim is None else int(decoder_base_dim)
        self.z_dim = self.latent_channels = int(z_dim)
        self.dim_mult = multipliers
        self.num_res_blocks = int(num_res_blocks)
        self.temperal_downsample = temporal
        self.latents_mean = _statistics(latents_mean, "latents_mean", self.z_dim)
        self.latents_std = _statistics(latents_std, "latents_std", self.z_dim, positive=True)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.spatial_downsampling = 2 ** (len(multipliers) - 1)
        self.temporal_downsampling = 2 ** sum(temporal)
        self._build_encoder()
        self._build_decoder()
        self.built = True

    # --- the two networks --------------------------------------------------------------------------
    def _mid(self, prefix, width):
        dtype = self.dtype_policy
        return [WanResidualBlock(width, dtype=dtype, name=f"{prefix}_mid_resnet_0"),
                WanAttentionBlock(dtype=dtype, name=f"{prefix}_mid_attention"),
                WanResidualBlock(width, dtype=dtype, name=f"{prefix}_mid_resnet_1")]

    @staticmethod
    def _built(layers, channels):
        """Build ``layers`` in order from ``channels`` input channels; returns the output channels."""
        for layer in layers:
            layer.build((None, None, None, None, channels))
            channels = layer.compute_output_shape((None, None, None, None, channels))[-1]
        return channels

    def _build_encoder(self):
        dtype, widths = self.dtype_policy, [self.base_dim * m for m in self.dim_mult]
        self.encoder_conv_in = _causal(self.base_dim, 3, "encoder_conv_in", dtype)
        self.encoder_down = []
        for level, width in enumerate(widths):
            for _ in range(self.num_res_blocks):
                name = f"encoder_down_{len(self.encoder_down)}"
                self.encoder_down.append(WanResidualBlock(width, dtype=dtype, name=name))
            if level < len(widths) - 1:
                mode = "downsample3d" if self.temperal_downsample[level] else "downsample2d"
                self.encoder_down.append(WanResample(mode, dtype=dtype, name=f"encoder_down_{len(self.encoder_down)}"))
        self.encoder_mid = self._mid("encoder", widths[-1])
        self.encoder_norm_out = wan_rms_norm(widths[-1], "encoder_norm_out")
        self.encoder_conv_out = _causal(2 * self.z_dim, 3, "encoder_conv_out", dtype)
        self.quant_conv = _causal(2 * self.z_dim, 1, "quant_conv", dtype)
        channels = self._built([self.encoder_conv_in] + self.encoder_down + self.encoder_mid, self.in_channels)
        self._built([self.encoder_norm_out, self.encoder_conv_out], channels)
        self._built([self.quant_conv], 2 * self.z_dim)

    def _build_decoder(self):
        dtype, base = self.dtype_policy, self.decoder_base_dim or self.base_dim
        widths = [base * m for m in self.dim_mult[::-1]]
        upsample_time = self.temperal_downsample[::-1]
        self.post_quant_conv = _causal(self.z_dim, 1, "post_quant_conv", dtype)
        self.decoder_conv_in = _causal(widths[0], 3, "decoder_conv_in", dtype)
        self.decoder_mid = self._mid("decoder", widths[0])
        self.decoder_up = []
        for i, width in enumerate(widths):
            level = [WanResidualBlock(width, dtype=dtype, name=f"decoder_up_{i}_resnet_{j}")
                     for j in range(self.num_res_blocks + 1)]
            if i < len(widths) - 1:
                mode = "upsample3d" if upsample_time[i] else "upsample2d"
                level.append(WanResample(mode, width // 2, dtype=dtype, name=f"decoder_up_{i}_upsample"))
            self.decoder_up.append(level)
        self.decoder_norm_out = wan_rms_norm(widths[-1], "decoder_norm_out")
        self.decoder_conv_out = _causal(self.out_channels, 3, "decoder_conv_out", dtype)
        self._built([self.post_quant_conv], self.z_dim)
        layers = [self.decoder_conv_in] + self.decoder_mid + [layer for level in self.decoder_up for layer in level]
        self._built(layers + [self.decoder_norm_out, self.decoder_conv_out], self.z_dim)

    def _encode_chunk(self, x, cache):
        h = cached_conv(self.encoder_conv_in, x, cache)
        for layer in self.encoder_down + self.encoder_mid:
            h = layer(h) if isinstance(layer, WanAttentionBlock) else layer(h, cache=cache)
        return cached_conv(self.encoder_conv_out, ops.silu(normed(self.encoder_norm_out, h)), cache)

    def _decode_chunk(self, z, cache):
        h = cached_conv(self.decoder_conv_in, z, cache)
        for layer in self.decoder_mid + [layer for level in self.decoder_up for layer in level]:
            h = layer(h) if isinstance(layer, WanAttentionBlock) else layer(h, cache=cache)
        return cached_conv(self.decoder_conv_out, ops.silu(normed(self.decoder_norm_out, h)), cache)

    # --- the KLAutoencoder interface ----------------------------------------------------------------
    # Images become one-frame videos; frames, size and channels are checked as in CausalVideoVAE.
    _as_video = CausalVideoVAE._as_video

    def posterior_moments(self, x, training=False):
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"`videos` must have {self.in_channels} channels, got shape {tuple(x.shape)}.")
        x, image = self._as_video(ops.cast(x, self.compute_dtype), "videos")
        cache, frames = FeatureCache(), x.shape[1]
        bounds = [(0, 1)] + [(s, min(s + ENCODE_CHUNK_FRAMES, frames)) for s in range(1, frames, ENCODE_CHUNK_FRAMES)]
        chunks = [self._encode_chunk(x[:, start:stop], cache) for start, stop in bounds]
        moments = self.quant_conv(chunks[0] if len(chunks) == 1 else ops.concatenate(chunks, axis=1))
        if image:
            moments = moments[:, 0]
        return moments[..., : self.z_dim], moments[..., self.z_dim:]

    def reconstruct(self, z, training=False):
        if z.shape[-1] != self.z_dim:
            raise ValueError(f"`latents` must have {self.z_dim} channels, got shape {tuple(z.shape)}.")
        z, image = self._as_video(ops.cast(z, self.compute_dtype), "latents")
        z, cache = self.post_quant_conv(z), FeatureCache()
        chunks = [self._decode_chunk(z[:, i: i + 1], cache) for i in range(z.shape[1])]  # one latent frame each
        out = chunks[0] if len(chunks) == 1 else ops.concatenate(chunks, axis=1)
        return out[:, 0] if image else out

    def normalize_latents(self, z):
        """``(z - latents_mean) / latents_std`` per channel (diffusers' Wan pipelines)."""
        mean, std = (ops.convert_to_tensor(values, z.dtype) for values in (self.latents_mean, self.latents_std))
        return (z - mean) / std

    def denormalize_latents(self, latents):
        """``latents * latents_std + latents_mean`` per channel: what the decoder takes."""
        if latents.shape[-1] != self.z_dim:
            raise ValueError(f"`latents` must have {self.z_dim} channels, got shape {tuple(latents.shape)}.")
        mean, std = (ops.convert_to_tensor(values, latents.dtype) for values in (self.latents_mean, self.latents_std))
        return latents * std + mean

    # 1 + k m video frames <-> 1 + m latent frames, and the latent shape, as in CausalVideoVAE (same attributes).
    latent_num_frames = CausalVideoVAE.latent_num_frames
    pixel_num_frames = CausalVideoVAE.pixel_num_frames
    compute_latent_shape = CausalVideoVAE.compute_latent_shape

    def get_config(self):
        config = super().get_config()
        for name in ("scaling_factor", "shift_factor"):  # the per-channel statistics replace them
            config.pop(name)
        config.update(
            base_dim=self.base_dim,
            decoder_base_dim=self.decoder_base_dim,
            z_dim=self.z_dim,
            dim_mult=list(self.dim_mult),
            num_res_blocks=self.num_res_blocks,
            temperal_downsample=list(self.temperal_downsample),
            latents_mean=list(self.latents_mean),
            latents_std=list(self.latents_std),
            in_channels=self.in_channels,
            out_channels=self.out_channels,
        )
        return config
