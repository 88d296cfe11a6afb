"""``CogVideoXVAE``: the 3D causal VAE of CogVideoX (diffusers' ``AutoencoderKLCogVideoX``), channels last.

Yang et al. 2024, "CogVideoX: Text-to-Video Diffusion Models with An Expert
Transformer" (arXiv:2408.06072), as diffusers builds it, so that
``kv.convert.from_diffusers("CogVideoX-2b/vae")`` reproduces its numbers::

    encoder: conv_in -> [ResBlock x layers_per_block, (time / 2) + stride-2 conv] per level (no down on the last)
             -> mid (ResBlock x 2) -> GroupNorm -> SiLU -> conv_out (2 * latent)
    decoder: conv_in -> mid (ResBlock x 2) -> [ResBlock x (layers_per_block + 1), (time x 2) + nearest x2 + conv]
             per level, widths reversed (no up on the last) -> SpatialNorm -> SiLU -> conv_out

Every 3x3x3 convolution is a ``CausalConv3D`` with the first frame repeated
in front (``temporal_padding="replicate"``). GroupNorms normalise each group
over all frames, height and width at once (not frame by frame), and the
decoder's norms are spatial norms conditioned on the latents
(``SpatialNorm3D``: ``GroupNorm(h) * conv_y(z) + conv_b(z)``, ``z`` resized
to ``h`` by nearest neighbour, its first frame kept apart). Time is halved in
the first ``log2(temporal_compression_ratio)`` levels, with the first frame
of an odd-length clip kept apart::

    down: odd  (x_0, x_1, ..., x_2n) -> (x_0, mean(x_1, x_2), ..., mean(x_2n-1, x_2n));  even: mean of pairs
    up:   odd  (z_0, z_1, ..., z_n)  -> (z_0, z_1, z_1, ..., z_n, z_n);                  even: every frame twice

Frame batches (as diffusers codes): videos are encoded ``num_sample_frames_batch_size``
frames at a time (the first batch takes the remainder: 49 frames -> 9, 8, 8,
8, 8, 8) and latents decoded ``num_latent_frames_batch_size`` at a time (13 ->
3, 2, 2, 2, 2, 2); each causal convolution hands the last two frames of its
input to the next batch (diffusers' ``conv_cache``), while the GroupNorm
statistics and time resampling are those of each batch, so the batch sizes
are part of the model's numbers (diffusers' defaults, 8 and 2, are this
class's). Memory then grows with the batch, not the clip. Spatial tiling
(diffusers' ``enable_tiling``) further bounds it by the tile size.
"""

import math

import numpy as np
import keras
from keras import ops

from keras_vdiff.autoencoders.frame_vae import check_layout_ints
from keras_vdiff.autoencoders.kl_autoencoder import KLAutoencoder, check_frames
from keras_vdiff.autoencoders.residual_block import check_groups
from keras_vdiff.layers.convolution import CausalConv3D
from keras_vdiff.validation import check_bool, check_optional_int, is_int

__all__ = ["CogVideoXVAE", "CogVideoXResnetBlock", "SpatialNorm3D", "frame_batches"]

COGVIDEOX_BLOCK_OUT_CHANNELS = (128, 256, 256, 512)
COGVIDEOX_2B_SCALING_FACTOR = 1.15258426


def frame_batches(frames, batch_size):
    """diffusers' frame batches of a clip: ``[(start, end), ...]``, the first batch also taking ``frames % batch_size``.

    Example:
        >>> frame_batches(13, 2)
        [(0, 3), (3, 5), (5, 7), (7, 9), (9, 11), (11, 13)]
    """
    if batch_size is None or frames is None:
        return [(0, frames)]
    remainder = frames % batch_size
    return [(0 if i == 0 else batch_size * i + remainder, min(batch_size * (i + 1) + remainder, frames))
            for i in range(max(frames // batch_size, 1))]


def temporal_downsample(x):
    """Halve the frames ``(B, F, H, W, C)``: an odd clip keeps its first frame and averages the following pairs,
    an even clip averages pairs (diffusers' ``compress_time`` average pool)."""
    frames = x.shape[1]
    if frames == 1:
        return x
    first, rest = (x[:, :1], x[:, 1:]) if frames % 2 else (None, x)
    shape = ops.shape(rest)
    pairs = ops.reshape(rest[:, : 2 * (rest.shape[1] // 2)], (shape[0], rest.shape[1] // 2, 2) + tuple(shape[2:]))
    rest = ops.mean(pairs, axis=2)
    return rest if first is None else ops.concatenate([first, rest], axis=1)


def temporal_upsample(x):
    """Double the frames: an odd clip (> 1 frame) keeps its first frame once and repeats the others, an even clip
    repeats every frame, a single frame stays one (diffusers' ``compress_time`` nearest interpolation)."""
    frames = x.shape[1]
    if frames == 1:
        return x
    if frames % 2:
        return ops.concatenate([x[:, :1], ops.repeat(x[:, 1:], 2, axis=1)], axis=1)
    return ops.repeat(x, 2, axis=1)


def _downsampled_frames(frames, levels):
    for _ in range(levels):
        frames = frames if frames == 1 else (1 + (frames - 1) // 2 if frames % 2 else frames // 2)
    return frames


def _upsampled_frames(frames, levels):
    for _ in range(levels):
        frames = frames if frames == 1 else (2 * frames - 1 if frames % 2 else 2 * frames)
    return frames


def _nearest_indices(size_in, size_out):
    """PyTorch's ``interpolate(mode="nearest", size=...)`` source indices: ``floor(i * in / out)`` in float32."""
    scale = np.float32(size_in) / np.float32(size_out)
    return np.minimum(np.floor(np.arange(size_out, dtype=np.float32) * scale).astype("int32"), size_in - 1)


def nearest_resize(z, frames, height, width):
    """``z`` ``(B, f, h, w, C)`` resized to ``(B, frames, height, width, C)`` by nearest neighbour (PyTorch's rule)."""
    for axis, size in ((1, frames), (2, height), (3, width)):
        if z.shape[axis] != size:
            z = ops.take(z, _nearest_indices(z.shape[axis], size), axis=axis)
    return z


def _blend(a, b, extent, axis):
    """``b`` with its first ``extent`` rows (``axis`` 2) or columns (3) faded in from the last ones of ``a``:
    ``a * (1 - k / extent) + b * (k / extent)`` at offset ``k`` (diffusers' ``blend_v`` / ``blend_h``)."""
    extent = min(a.shape[axis], b.shape[axis], extent)
    if extent == 0:
        return b
    shape = [1] * len(b.shape)
    shape[axis] = extent
    weight = ops.cast(np.arange(extent).reshape(shape) / extent, b.dtype)
    head = ops.take(a, np.arange(a.shape[axis] - extent, a.shape[axis]), axis=axis) * (1 - weight)
    head = head + ops.take(b, np.arange(extent), axis=axis) * weight
    return ops.concatenate([head, ops.take(b, np.arange(extent, b.shape[axis]), axis=axis)], axis=axis)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class SpatialNorm3D(keras.layers.Layer):
    """``GroupNorm(h) * conv_y(z) + conv_b(z)``: a GroupNorm whose scale and shift come from the latents
    (Zheng et al. 2022, MoVQ, arXiv:2209.09002; diffusers' ``CogVideoXSpatialNorm3D``).

    The latents ``z`` are resized to ``h`` by nearest neighbour; for an odd
    number of frames above one, the first frame of ``z`` is resized to the first
    frame of ``h`` and the rest to the rest. ``conv_y`` and ``conv_b`` are 1x1x1.

    Args:
        channels: channels of ``h``.
        latent_channels: channels of ``z``.
        norm_groups: GroupNorm groups (over frames, height and width).
        epsilon: GroupNorm epsilon.

    Example:
        >>> norm = SpatialNorm3D(8, 4, norm_groups=2)
        >>> norm(keras.ops.zeros((1, 5, 8, 8, 8)), keras.ops.zeros((1, 3, 4, 4, 4))).shape
        (1, 5, 8, 8, 8)
    """

    def __init__(self, channels, latent_channels, norm_groups=32, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        check_layout_ints(channels=channels, latent_channels=latent_channels, norm_groups=norm_groups)
        check_groups(channels, norm_groups, "channels")
        self.channels, self.latent_channels = int(channels), int(latent_channels)
        self.norm_groups, self.epsilon = int(norm_groups), float(epsilon)
        self.norm = keras.layers.GroupNormalization(norm_groups, epsilon=epsilon, dtype="float32", name="norm")
        self.conv_y = CausalConv3D(channels, 1, dtype=self.dtype_policy, name="conv_y")
        self.conv_b = CausalConv3D(channels, 1, dtype=self.dtype_policy, name="conv_b")
        self.norm.build((None, None, None, None, channels))
        self.conv_y.build((None, None, None, None, latent_channels))
        self.conv_b.build((None, None, None, None, latent_channels))
        self.built = True

    def call(self, h, z):
        frames, height, width = h.shape[1:4]
        z = ops.cast(z, self.compute_dtype)
        if frames > 1 and frames % 2:
            z = ops.concatenate([nearest_resize(z[:, :1], 1, height, width),
                                 nearest_resize(z[:, 1:], frames - 1, height, width)], axis=1)
        else:
            z = nearest_resize(z, frames, height, width)
        normed = ops.cast(self.norm(h), self.compute_dtype)
        return normed * self.conv_y(z) + self.conv_b(z)

    def compute_output_shape(self, h_shape, z_shape=None):
        return tuple(h_shape)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, latent_channels=self.latent_channels, norm_groups=self.norm_groups,
                      epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class CogVideoXResnetBlock(keras.layers.Layer):
    """norm -> SiLU -> causal 3x3x3 conv, twice, plus a skip (a 1x1x1 conv where the width changes):
    diffusers' ``CogVideoXResnetBlock3D``.

    The norms are GroupNorms over ``(F, H, W)`` per group, or ``SpatialNorm3D``
    conditioned on the latents when ``latent_channels`` is given (the decoder).
    ``call(x, z=None, context=None)`` returns ``(y, context)``: the two
    convolutions' ``context`` for the next frame batch (see ``CausalConv3D``).

    Args:
        in_channels: input channels.
        filters: output channels.
        norm_groups: GroupNorm groups (divides both widths).
        epsilon: GroupNorm epsilon.
        latent_channels: channels of the latents of spatial norms; None: plain GroupNorms.

    Example:
        >>> block = CogVideoXResnetBlock(8, 16, norm_groups=4)
        >>> y, context = block(keras.ops.zeros((1, 5, 8, 8, 8)))
        >>> y.shape, context["conv_2"].shape
        ((1, 5, 8, 8, 16), (1, 2, 8, 8, 16))
    """

    def __init__(self, in_channels, filters, norm_groups=32, epsilon=1e-6, latent_channels=None, **kwargs):
        super().__init__(**kwargs)
        check_layout_ints(in_channels=in_channels, filters=filters, norm_groups=norm_groups)
        self.in_channels, self.filters = int(in_channels), int(filters)
        self.norm_groups, self.epsilon = int(norm_groups), float(epsilon)
        self.latent_channels = check_optional_int(latent_channels, "latent_channels")
        dtype = self.dtype_policy
        self.norm_1, self.norm_2 = (self._norm(width, f"norm_{i}") for i, width in ((1, in_channels), (2, filters)))
        self.conv_1 = CausalConv3D(filters, 3, temporal_padding="replicate", dtype=dtype, name="conv_1")
        self.conv_2 = CausalConv3D(filters, 3, temporal_padding="replicate", dtype=dtype, name="conv_2")
        self.skip = CausalConv3D(filters, 1, dtype=dtype, name="skip") if in_channels != filters else None
        self.conv_1.build((None, None, None, None, in_channels))
        self.conv_2.build((None, None, None, None, filters))
        if self.skip is not None:
            self.skip.build((None, None, None, None, in_channels))
        self.built = True

    def _norm(self, channels, name):
        if self.latent_channels is not None:
            return SpatialNorm3D(channels, self.latent_channels, self.norm_groups, self.epsilon,
                                 dtype=self.dtype_policy, name=name)
        check_groups(channels, self.norm_groups, name)
        norm = keras.layers.GroupNormalization(self.norm_groups, epsilon=self.epsilon, dtype="float32", name=name)
        norm.build((None, None, None, None, channels))
        return norm

    def _normed(self, norm, x, z):
        return norm(x, z) if self.latent_channels is not None else ops.cast(norm(x), self.compute_dtype)

    def call(self, x, z=None, context=None):
        context = context or {}
        h = ops.silu(self._normed(self.norm_1, x, z))
        after = {"conv_1": self.conv_1.next_context(h, context.get("conv_1"))}
        h = self.conv_1(h, context=context.get("conv_1"))
        h = ops.silu(self._normed(self.norm_2, h, z))
        after["conv_2"] = self.conv_2.next_context(h, context.get("conv_2"))
        h = self.conv_2(h, context=context.get("conv_2"))
        return (x if self.skip is None else self.skip(x)) + h, after

    def get_config(self):
        config = super().get_config()
        config.update(in_channels=self.in_channels, filters=self.filters, norm_groups=self.norm_groups,
                      epsilon=self.epsilon, latent_channels=self.latent_channels)
        return config


def _block_out_channels(value, norm_num_groups):
    widths = tuple(value) if isinstance(value, (list, tuple)) else None
    if not widths or not all(is_int(w) and w > 0 for w in widths):
        raise ValueError(f"`block_out_channels` must be a non-empty list of positive ints (one width per level), "
                         f"got {value!r}.")
    for width in widths:
        if width % norm_num_groups:
            raise ValueError(f"`block_out_channels`={list(widths)}: every width must be divisible by "
                             f"`norm_num_groups`={norm_num_groups}.")
    return tuple(int(w) for w in widths)


def _temporal_levels(ratio, levels):
    valid = [2 ** i for i in range(levels)]
    if not is_int(ratio) and not (isinstance(ratio, float) and ratio.is_integer()) or int(ratio) not in valid:
        raise ValueError(f"`temporal_compression_ratio` must be one of {valid} (a power of two, at most the spatial "
                         f"factor of the {levels} levels), got {ratio!r}.")
    return int(math.log2(int(ratio)))


def _tile_overlap(value, name):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.")
    return float(value)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class CogVideoXVAE(KLAutoencoder):
    """The CogVideoX 3D causal VAE, diffusers' ``AutoencoderKLCogVideoX`` (Yang et al. 2024, arXiv:2408.06072).

    ``1 + 4m`` frames of ``H x W`` become ``1 + m`` latent frames of ``H/8 x
    W/8 x 16`` at the released size. The defaults are the released
    ``THUDM/CogVideoX-2b`` VAE (215.6M parameters; the 5b one differs only in
    ``scaling_factor`` 0.7). Argument names are diffusers' config fields;
    pretrained weights come with ``kv.convert.from_diffusers(folder)``.

    Args:
        in_channels, out_channels: pixel channels of the input and output.
        block_out_channels: width per level; the spatial factor is ``2 ** (len - 1)``.
        latent_channels: latent channels.
        layers_per_block: residual blocks per encoder level (the decoder has one more).
        norm_num_groups, norm_eps: GroupNorm groups (divides every width) and epsilon.
        temporal_compression_ratio: time factor, a power of two: the first
            ``log2`` levels also halve time.
        sample_height, sample_width: the size the VAE was trained at; the default tiles are half of it.
        scaling_factor, shift_factor: latents are ``(mean - shift) * scaling`` (2b: 1.15258426).
        invert_scale_latents: diffusers' flag for image-to-video pipelines that
            divide image latents by the scaling factor; kept as read, ``encode``
            always multiplies (the text-to-video convention).
        num_sample_frames_batch_size: frames per encoder batch (diffusers: 8); None: the whole clip at once.
        num_latent_frames_batch_size: latent frames per decoder batch (diffusers: 2); None: all at once.
            Both change the numbers a little (see the module docstring) and bound the memory.
        use_tiling: code frames larger than the tiles tile by tile, blended (diffusers' ``enable_tiling``).
        tile_sample_min_height, tile_sample_min_width: tile size in pixels (None: half of ``sample_*``).
        tile_overlap_factor_height, tile_overlap_factor_width: overlap of neighbouring tiles (1/6, 1/5).
        kl_weight, reconstruction_loss: the ``fit`` loss (see ``KLAutoencoder``).
        **kwargs: ``seed`` and Keras ``name`` / ``dtype`` (convolutions; norms stay float32).

    The batch and tile settings are attributes: set them on a loaded model.

    Example:
        >>> vae = kv.convert.from_diffusers("CogVideoX-2b/vae", dtype="bfloat16")
        >>> latents = vae.encode(videos)                      # (1, 49, 480, 720, 3) -> (1, 13, 60, 90, 16)
        >>> vae.use_tiling = True                             # a 49 x 480 x 720 decode in bounded memory
        >>> videos = vae.decode(latents)                      # (1, 49, 480, 720, 3) in [-1, 1]
        >>> tiny = CogVideoXVAE(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1,
        ...                     norm_num_groups=2)
    """

    def __init__(
        self,
        in_channels=3,
        out_channels=3,
        block_out_channels=COGVIDEOX_BLOCK_OUT_CHANNELS,
        latent_channels=16,
        layers_per_block=3,
        norm_num_groups=32,
        norm_eps=1e-6,
        temporal_compression_ratio=4,
        sample_height=480,
        sample_width=720,
        scaling_factor=COGVIDEOX_2B_SCALING_FACTOR,
        shift_factor=0.0,
        invert_scale_latents=False,
        num_sample_frames_batch_size=8,
        num_latent_frames_batch_size=2,
        use_tiling=False,
        tile_sample_min_height=None,
        tile_sample_min_width=None,
        tile_overlap_factor_height=1 / 6,
        tile_overlap_factor_width=1 / 5,
        kl_weight=1e-6,
        reconstruction_loss="l1",
        **kwargs,
    ):
        super().__init__(scaling_factor=scaling_factor, shift_factor=shift_factor, kl_weight=kl_weight,
                         reconstruction_loss=reconstruction_loss, **kwargs)
        check_layout_ints(in_channels=in_channels, out_channels=out_channels, latent_channels=latent_channels,
                          layers_per_block=layers_per_block, norm_num_groups=norm_num_groups,
                          sample_height=sample_height, sample_width=sample_width)
        if not isinstance(norm_eps, (int, float)) or isinstance(norm_eps, bool) or norm_eps <= 0:
            raise ValueError(f"`norm_eps` must be a positive number, got {norm_eps!r}.")
        widths = _block_out_channels(block_out_channels, norm_num_groups)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.block_out_channels = widths
        self.latent_channels = int(latent_channels)
        self.layers_per_block = int(layers_per_block)
        self.norm_num_groups, self.norm_eps = int(norm_num_groups), float(norm_eps)
        self.temporal_levels = _temporal_levels(temporal_compression_ratio, len(widths))
        self.temporal_compression_ratio = 2 ** self.temporal_levels
        self.sample_height, self.sample_width = int(sample_height), int(sample_width)
        self.invert_scale_latents = check_bool(invert_scale_latents, "invert_scale_latents")
        self.num_sample_frames_batch_size = check_optional_int(num_sample_frames_batch_size,
                                                               "num_sample_frames_batch_size")
        self.num_latent_frames_batch_size = check_optional_int(num_latent_frames_batch_size,
                                                               "num_latent_frames_batch_size")
        self.use_tiling = check_bool(use_tiling, "use_tiling")
        self.tile_sample_min_height = check_optional_int(tile_sample_min_height, "tile_sample_min_height")
        self.tile_sample_min_width = check_optional_int(tile_sample_min_width, "tile_sample_min_width")
        self.tile_overlap_factor_height = _tile_overlap(tile_overlap_factor_height, "tile_overlap_factor_height")
        self.tile_overlap_factor_width = _tile_overlap(tile_overlap_factor_width, "tile_overlap_factor_width")
        self.downsampling_factor = 2 ** (len(widths) - 1)
        self._build_encoder()
        self._build_decoder()
        self.built = True

    # --- the two networks --------------------------------------------------------------------------
    def _conv(self, filters, kernel_size, name, channels, **options):
        conv = CausalConv3D(filters, kernel_size, temporal_padding="replicate", dtype=self.dtype_policy, name=name,
                            **options)
        conv.build((None, None, None, None, channels))
        return conv

    def _resnet(self, channels, filters, name, latent=False):
        # diffusers' spatial norms keep GroupNorm's epsilon at 1e-6 whatever norm_eps says
        return CogVideoXResnetBlock(channels, filters, self.norm_num_groups, 1e-6 if latent else self.norm_eps,
                                    latent_channels=self.latent_channels if latent else None,
                                    dtype=self.dtype_policy, name=name)

    def _build_encoder(self):
        widths = self.block_out_channels
        self.encoder_conv_in = self._conv(widths[0], 3, "encoder_conv_in", self.in_channels)
        self.encoder_levels, channels = [], widths[0]
        for i, width in enumerate(widths):
            blocks = []
            for j in range(self.layers_per_block):
                blocks.append(self._resnet(channels, width, f"encoder_down_{i}_resnet_{j}"))
                channels = width
            down = None
            if i < len(widths) - 1:  # diffusers pads one zero row / column after, then a stride-2 3x3
                down = self._conv(width, (1, 3, 3), f"encoder_down_{i}_downsample", width, strides=2)
            self.encoder_levels.append((blocks, down, i < self.temporal_levels))
        self.encoder_mid = [self._resnet(channels, channels, f"encoder_mid_resnet_{j}") for j in (0, 1)]
        self.encoder_norm_out = keras.layers.GroupNormalization(self.norm_num_groups, epsilon=1e-6, dtype="float32",
                                                                name="encoder_norm_out")
        self.encoder_norm_out.build((None, None, None, None, channels))
        self.encoder_conv_out = self._conv(2 * self.latent_channels, 3, "encoder_conv_out", channels)

    def _build_decoder(self):
        widths = self.block_out_channels[::-1]
        self.decoder_conv_in = self._conv(widths[0], 3, "decoder_conv_in", self.latent_channels)
        self.decoder_mid = [self._resnet(widths[0], widths[0], f"decoder_mid_resnet_{j}", latent=True) for j in (0, 1)]
        self.decoder_levels, channels = [], widths[0]
        for i, width in enumerate(widths):
            blocks = []
            for j in range(self.layers_per_block + 1):
                blocks.append(self._resnet(channels, width, f"decoder_up_{i}_resnet_{j}", latent=True))
                channels = width
            up = self._conv(width, (1, 3, 3), f"decoder_up_{i}_upsample", width) if i < len(widths) - 1 else None
            self.decoder_levels.append((blocks, up, i < self.temporal_levels))
        self.decoder_norm_out = SpatialNorm3D(channels, self.latent_channels, self.norm_num_groups, 1e-6,
                                              dtype=self.dtype_policy, name="decoder_norm_out")
        self.decoder_conv_out = self._conv(self.out_channels, 3, "decoder_conv_out", channels)

    @staticmethod
    def _cached_conv(conv, x, cache):
        context = cache.get(conv.name)
        cache[conv.name] = conv.next_context(x, context)
        return conv(x, context=context)

    @staticmethod
    def _cached_block(block, x, z, cache):
        x, cache[block.name] = block(x, z, context=cache.get(block.name))
        return x

    def _encode_batch(self, x, cache):
        """One frame batch ``(B, f, H, W, C)`` -> its moments; ``cache`` (a dict) carries the causal context."""
        h = self._cached_conv(self.encoder_conv_in, ops.cast(x, self.compute_dtype), cache)
        for blocks, down, temporal in self.encoder_levels:
            for block in blocks:
                h = self._cached_block(block, h, None, cache)
            if down is not None:
                h = down(temporal_downsample(h) if temporal else h)
        for block in self.encoder_mid:
            h = self._cached_block(block, h, None, cache)
        h = ops.silu(ops.cast(self.encoder_norm_out(h), self.compute_dtype))
        return self._cached_conv(self.encoder_conv_out, h, cache)

    def _decode_batch(self, z, cache):
        """One batch of latent frames -> its pixels; the latents also condition every spatial norm."""
        z = ops.cast(z, self.compute_dtype)
        h = self._cached_conv(self.decoder_conv_in, z, cache)
        for block in self.decoder_mid:
            h = self._cached_block(block, h, z, cache)
        for blocks, up, temporal in self.decoder_levels:
            for block in blocks:
                h = self._cached_block(block, h, z, cache)
            if up is not None:
                h = temporal_upsample(h) if temporal else h
                h = up(ops.repeat(ops.repeat(h, 2, axis=2), 2, axis=3))
        h = ops.silu(self.decoder_norm_out(h, z))
        return self._cached_conv(self.decoder_conv_out, h, cache)

    def _in_frame_batches(self, code, x, batch_size):
        """``code`` over diffusers' frame batches of ``x``, the causal context handed from one to the next."""
        cache = {}
        parts = [code(x[:, start:end], cache) for start, end in frame_batches(x.shape[1], batch_size)]
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=1)

    def tile_sizes(self):
        """``((pixel height, pixel width), (latent height, latent width))`` of a tile (diffusers' rule)."""
        height = self.tile_sample_min_height or self.sample_height // 2
        width = self.tile_sample_min_width or self.sample_width // 2
        f = self.downsampling_factor
        return (height, width), (int(height / f), int(width / f))

    def _tiled(self, code, x, batch_size, tile_in, tile_out):
        """``code`` (in frame batches) on overlapping tiles of ``x``, each blended linearly into the tiles above and
        to its left over ``tile_out * overlap`` rows / columns, then cropped (diffusers' ``tiled_encode`` /
        ``tiled_decode``, the same order, so the same numbers)."""
        factors = (self.tile_overlap_factor_height, self.tile_overlap_factor_width)
        steps = [int(size * (1 - f)) for size, f in zip(tile_in, factors)]
        blends = [int(size * f) for size, f in zip(tile_out, factors)]
        limits = [size - blend for size, blend in zip(tile_out, blends)]
        rows = [[self._in_frame_batches(code, x[:, :, i : i + tile_in[0], j : j + tile_in[1]], batch_size)
                 for j in range(0, x.shape[3], steps[1])] for i in range(0, x.shape[2], steps[0])]
        out = []
        for i, row in enumerate(rows):
            for j, tile in enumerate(row):
                if i > 0:
                    tile = _blend(rows[i - 1][j], tile, blends[0], axis=2)
                if j > 0:
                    tile = _blend(row[j - 1], tile, blends[1], axis=3)
                row[j] = tile  # the blended tile is what its neighbours blend with
            out.append(ops.concatenate([tile[:, :, : limits[0], : limits[1]] for tile in row], axis=3))
        return ops.concatenate(out, axis=2)

    # --- the KLAutoencoder interface ----------------------------------------------------------------
    def posterior_moments(self, x, training=False):
        check_frames(x, "videos", self.in_channels, self.downsampling_factor)
        image = len(x.shape) == 4
        video = ops.expand_dims(x, 1) if image else x
        pixels, latents = self.tile_sizes()
        if self.use_tiling and (video.shape[2] > pixels[0] or video.shape[3] > pixels[1]):
            moments = self._tiled(self._encode_batch, video, self.num_sample_frames_batch_size, pixels, latents)
        else:
            moments = self._in_frame_batches(self._encode_batch, video, self.num_sample_frames_batch_size)
        if image:
            moments = moments[:, 0]
        return moments[..., : self.latent_channels], moments[..., self.latent_channels :]

    def reconstruct(self, z, training=False):
        check_frames(z, "latents", self.latent_channels, 1)
        image = len(z.shape) == 4
        video = ops.expand_dims(z, 1) if image else z
        pixels, latents = self.tile_sizes()
        if self.use_tiling and (video.shape[2] > latents[0] or video.shape[3] > latents[1]):
            out = self._tiled(self._decode_batch, video, self.num_latent_frames_batch_size, latents, pixels)
        else:
            out = self._in_frame_batches(self._decode_batch, video, self.num_latent_frames_batch_size)
        return out[:, 0] if image else out

    def latent_num_frames(self, num_frames):
        """Latent frames of a ``num_frames``-frame clip, batch by batch as ``encode`` codes it (49 -> 13)."""
        num_frames = super().latent_num_frames(num_frames)
        return sum(_downsampled_frames(end - start, self.temporal_levels)
                   for start, end in frame_batches(num_frames, self.num_sample_frames_batch_size))

    def pixel_num_frames(self, latent_frames):
        """Frames ``decode`` returns for ``latent_frames`` latent frames, batch by batch (13 -> 49, 4 -> 16)."""
        latent_frames = super().pixel_num_frames(latent_frames)
        return sum(_upsampled_frames(end - start, self.temporal_levels)
                   for start, end in frame_batches(latent_frames, self.num_latent_frames_batch_size))

    def compute_latent_shape(self, input_shape):
        """``(B, F, H, W, C)`` -> ``(B, latent_num_frames(F), H / 8, W / 8, latent)``; images ``(B, H, W, C)`` too."""
        f = self.downsampling_factor
        spatial = (input_shape[-3] // f, input_shape[-2] // f, self.latent_channels)
        if len(input_shape) == 5:
            return (input_shape[0], self.latent_num_frames(input_shape[1])) + spatial
        return (input_shape[0],) + spatial

    def get_config(self):
        config = super().get_config()
        config.update(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            block_out_channels=list(self.block_out_channels),
            latent_channels=self.latent_channels,
            layers_per_block=self.layers_per_block,
            norm_num_groups=self.norm_num_groups,
            norm_eps=self.norm_eps,
            temporal_compression_ratio=self.temporal_compression_ratio,
            sample_height=self.sample_height,
            sample_width=self.sample_width,
            invert_scale_latents=self.invert_scale_latents,
            num_sample_frames_batch_size=self.num_sample_frames_batch_size,
            num_latent_frames_batch_size=self.num_latent_frames_batch_size,
            use_tiling=self.use_tiling,
            tile_sample_min_height=self.tile_sample_min_height,
            tile_sample_min_width=self.tile_sample_min_width,
            tile_overlap_factor_height=self.tile_overlap_factor_height,
            tile_overlap_factor_width=self.tile_overlap_factor_width,
        )
        return config
