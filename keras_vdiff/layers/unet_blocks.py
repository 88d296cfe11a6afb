"""U-Net blocks for image and video diffusion: residual blocks, resampling, spatial and temporal attention.

``SpatialAttention(context_dim=...)`` adds LDM's cross-attention to text tokens
(Rombach et al. 2022); ``UNetConditionEmbedding`` sums the timestep embedding
with a label, pooled-text and / or fps embedding.

Every block takes an image ``(B, H, W, C)`` or a video ``(B, F, H, W, C)``.
Spatial layers (group norms, 2D convolutions, spatial attention) run on each
frame on its own, so a video U-Net built from these blocks with its temporal
parts at their initial values computes exactly the image U-Net on every frame
(Make-A-Video's inflation, Singer et al. 2022). Temporal parts:

- ``ResBlock(conv_type="pseudo3d")``: the convolutions are ``PseudoConv3D``.
- ``Downsample(temporal=True)`` / ``Upsample(temporal=True)``: stride-2 / repeat-and-mix
  3-tap convolutions over frames, for U-Nets that also resample time.
- ``TemporalAttention``: attention over the frames of every pixel (VDM, Ho et al.
  2022), with a T5-style relative position bias, a zero-initialised output
  (identity at the start) and optionally Video-LDM's learned mix
  ``alpha * z + (1 - alpha) * z'`` (Blattmann et al. 2023).

``temporal_mask`` ``(B,)`` (1 = video, 0 = independent frames) restricts every
temporal path of a sample to the frame itself (VDM's image-video joint training).
"""

import math

import keras
import numpy as np
from keras import ops

from keras_vdiff.layers.attention import Attention
from keras_vdiff.layers.convolution import (
    PseudoConv3D,
    TemporalMix,
    _from_temporal_sequences,
    _positive_int,
    _temporal_sequences,
    apply_per_frame,
)
from keras_vdiff.layers.embeddings import LabelEmbedding, PooledTextEmbedding, TimestepEmbedding

CONV_TYPES = ("spatial", "pseudo3d")
EMBEDDING_MODES = ("scale_shift", "add")
NEGATIVE_LOGIT = -1e4


def _group_norm(channels, groups, name, dtype):
    return keras.layers.GroupNormalization(
        groups=math.gcd(channels, groups), epsilon=1e-5, name=name, dtype=dtype
    )


def _frame_conv(filters, kernel_size, conv_type, temporal_kernel_size, name, dtype, zero=False):
    init = "zeros" if zero else "glorot_uniform"
    if conv_type == "pseudo3d":
        conv = PseudoConv3D(filters, kernel_size, temporal_kernel_size, name=name, dtype=dtype)
        conv.spatial.kernel_initializer = keras.initializers.get(init)
        return conv
    return keras.layers.Conv2D(filters, kernel_size, padding="same", kernel_initializer=init, name=name, dtype=dtype)


def _apply_conv(conv, x, temporal_mask):
    if isinstance(conv, PseudoConv3D):
        return conv(x, temporal_mask=temporal_mask)
    return apply_per_frame(conv, x)


def copy_image_weights(target, source):
    """Load the weights of an image layer into its video counterpart (same structure, temporal parts kept).

    ``PseudoConv3D`` receives the ``Conv2D``'s weights in its spatial
    convolution; layers with a ``load_image_weights`` method decide themselves;
    every other layer must have identical weight shapes.
    """
    if hasattr(target, "load_image_weights"):
        target.load_image_weights(source)
    elif isinstance(target, PseudoConv3D):
        target.spatial.set_weights(source.get_weights())
    else:
        target.set_weights(source.get_weights())


@keras.saving.register_keras_serializable(package="keras_vdiff")
class ResBlock(keras.layers.Layer):
    """Residual block of a diffusion U-Net: ``GroupNorm-SiLU-conv``, condition, ``GroupNorm-SiLU-dropout-conv``, skip.

    ::

        h = conv_1(SiLU(GroupNorm(x)))
        "scale_shift" (ADM, Dhariwal & Nichol 2021): [s, b] = Dense(SiLU(emb));
                      h = GroupNorm(h) * (1 + s) + b
        "add" (DDPM, Ho et al. 2020; the broadcast-add of the MNIST lab):
                      h = GroupNorm(h + Dense(SiLU(emb)))
        out = skip(x) + conv_2(dropout(SiLU(h)))

    The embedding ``(B, D)`` is broadcast over frames and pixels. The second
    convolution is zero-initialised, so the block starts as its (projected)
    skip connection; ``skip`` is a 1x1 convolution when the width changes.

    Args:
        filters: output channels.
        norm_groups: group-norm groups (the gcd with the channel count is used).
        dropout: dropout rate before the second convolution.
        conv_type: ``"spatial"`` (per-frame 3x3, VDM's 1x3x3 convolution) or
            ``"pseudo3d"`` (3x3 then 3-frame temporal convolution, identity-initialised).
        temporal_kernel_size: frames of the pseudo-3D temporal convolution.
        embedding_mode: ``"scale_shift"`` or ``"add"`` (see above).

    Call: ``x`` image or video, ``emb`` ``(B, D)``, optional ``temporal_mask`` ``(B,)``.

    Example:
        >>> block = ResBlock(32, conv_type="pseudo3d")
        >>> block(keras.ops.zeros((2, 4, 8, 8, 16)), keras.ops.zeros((2, 64))).shape
        (2, 4, 8, 8, 32)
    """

    def __init__(self, filters, norm_groups=32, dropout=0.0, conv_type="spatial", temporal_kernel_size=3,
                 embedding_mode="scale_shift", **kwargs):
        super().__init__(**kwargs)
        self.filters = _positive_int(filters, "filters")
        self.norm_groups = _positive_int(norm_groups, "norm_groups")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1), got {dropout!r}.")
        if conv_type not in CONV_TYPES:
            raise ValueError(f"`conv_type` must be one of {CONV_TYPES}, got {conv_type!r}.")
        if embedding_mode not in EMBEDDING_MODES:
            raise ValueError(f"`embedding_mode` must be one of {EMBEDDING_MODES}, got {embedding_mode!r}.")
        self.embedding_mode = embedding_mode
        self.dropout = dropout
        self.conv_type = conv_type
        self.temporal_kernel_size = temporal_kernel_size
        dtype = self.dtype_policy
        self.conv_1 = _frame_conv(filters, 3, conv_type, temporal_kernel_size, "conv_1", dtype)
        self.conv_2 = _frame_conv(filters, 3, conv_type, temporal_kernel_size, "conv_2", dtype, zero=True)
        projection_width = 2 * filters if embedding_mode == "scale_shift" else filters
        self.embedding_projection = keras.layers.Dense(projection_width, name="embedding_projection", dtype=dtype)
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=dtype)
        self.norm_1 = None
        self.skip = None

    def build(self, x_shape, emb_shape, temporal_mask_shape=None):
        channels = x_shape[-1]
        frame_shape = (None,) + tuple(x_shape[-3:])
        self.norm_1 = _group_norm(channels, self.norm_groups, "norm_1", self.dtype_policy)
        self.norm_2 = _group_norm(self.filters, self.norm_groups, "norm_2", self.dtype_policy)
        self.norm_1.build(frame_shape)
        self.norm_2.build(frame_shape[:-1] + (self.filters,))
        conv_shape = tuple(x_shape) if self.conv_type == "pseudo3d" else frame_shape
        self.conv_1.build(conv_shape)
        self.conv_2.build(tuple(conv_shape[:-1]) + (self.filters,))
        self.embedding_projection.build(emb_shape)
        if channels != self.filters:
            self.skip = keras.layers.Conv2D(self.filters, 1, name="skip", dtype=self.dtype_policy)
            self.skip.build(frame_shape)
        self.built = True

    def call(self, x, emb, temporal_mask=None, training=None):
        h = ops.silu(apply_per_frame(self.norm_1, x))
        h = _apply_conv(self.conv_1, h, temporal_mask)
        e = self.embedding_projection(ops.silu(emb))
        e = ops.reshape(e, (-1,) + (1,) * (len(h.shape) - 2) + (e.shape[-1],))
        if self.embedding_mode == "scale_shift":
            scale, shift = ops.split(e, 2, axis=-1)
            h = apply_per_frame(self.norm_2, h) * (1.0 + scale) + shift
        else:
            h = apply_per_frame(self.norm_2, h + e)
        h = ops.silu(h)
        h = self.dropout_layer(h, training=training)
        h = _apply_conv(self.conv_2, h, temporal_mask)
        skip = x if self.skip is None else apply_per_frame(self.skip, x)
        return skip + h

    def load_image_weights(self, source):
        """Copy a 2D ``ResBlock``'s weights (temporal convolutions keep their values)."""
        for name in ("norm_1", "norm_2", "conv_1", "conv_2", "embedding_projection", "skip"):
            target_layer, source_layer = getattr(self, name), getattr(source, name)
            if (target_layer is None) != (source_layer is None):
                raise ValueError(f"Cannot load {source.name}: `{name}` exists in only one of the two blocks.")
            if target_layer is not None:
                copy_image_weights(target_layer, source_layer)

    def compute_output_shape(self, x_shape, emb_shape, temporal_mask_shape=None):
        return tuple(x_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            norm_groups=self.norm_groups,
            dropout=self.dropout,
            conv_type=self.conv_type,
            temporal_kernel_size=self.temporal_kernel_size,
            embedding_mode=self.embedding_mode,
        )
        return config


def _check_resample_axes(spatial, temporal):
    if not (spatial or temporal):
        raise ValueError("Resampling needs `spatial=True`, `temporal=True` or both; got both False.")


def _temporal_conv(filters, strides, name, dtype):
    """A 3-tap convolution over the frames of every pixel (``(B*H*W, F, C)`` sequences)."""
    return keras.layers.Conv1D(filters, 3, strides=strides, padding="same", name=name, dtype=dtype)


def _apply_temporal(conv, x):
    height, width = x.shape[2], x.shape[3]
    return _from_temporal_sequences(conv(_temporal_sequences(x)), height, width)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class Downsample(keras.layers.Layer):
    """Halve height and width (stride-2 3x3 convolution per frame, DDPM) and/or the frames.

    Temporal downsampling is a stride-2, 3-tap convolution over the frames of
    every pixel (``F -> ceil(F / 2)``), run after the spatial one; used by
    video U-Nets that also compress time (e.g. Imagen Video's / Lumiere's
    space-time U-Nets). An image ``(B, H, W, C)`` gets only the spatial part.

    Args:
        filters: output channels (default: the input's).
        spatial: halve height and width.
        temporal: halve the frames.

    Example:
        >>> Downsample()(keras.ops.zeros((2, 4, 8, 8, 16))).shape
        (2, 4, 4, 4, 16)
        >>> Downsample(temporal=True)(keras.ops.zeros((2, 4, 8, 8, 16))).shape
        (2, 2, 4, 4, 16)
    """

    def __init__(self, filters=None, spatial=True, temporal=False, **kwargs):
        super().__init__(**kwargs)
        _check_resample_axes(spatial, temporal)
        self.filters = filters
        self.spatial = bool(spatial)
        self.temporal = bool(temporal)

    def build(self, x_shape):
        filters = self.filters or x_shape[-1]
        self.conv = self.temporal_conv = None
        if self.spatial:
            self.conv = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name="conv", dtype=self.dtype_policy)
            self.conv.build((None,) + tuple(x_shape[-3:]))
        if self.temporal:
            self.temporal_conv = _temporal_conv(filters, 2, "temporal_conv", self.dtype_policy)
            self.temporal_conv.build((None, None, filters if self.spatial else x_shape[-1]))
        self.built = True

    def call(self, x):
        if self.conv is not None:
            x = apply_per_frame(self.conv, x)
        if self.temporal_conv is not None and len(x.shape) == 5:
            x = _apply_temporal(self.temporal_conv, x)
        return x

    def compute_output_shape(self, x_shape):
        h, w = x_shape[-3], x_shape[-2]
        if self.spatial:
            h, w = (None if h is None else (h + 1) // 2), (None if w is None else (w + 1) // 2)
        lead = tuple(x_shape[:-3])
        if self.temporal and len(x_shape) == 5:
            lead = (lead[0], None if lead[1] is None else (lead[1] + 1) // 2)
        return lead + (h, w, self.filters or x_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, spatial=self.spatial, temporal=self.temporal)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class Upsample(keras.layers.Layer):
    """Double height and width (nearest neighbour + 3x3 convolution per frame, DDPM) and/or the frames.

    Temporal upsampling repeats every frame twice (nearest neighbour in time)
    and mixes with a 3-tap convolution over frames, run after the spatial part.

    Args:
        filters: output channels (default: the input's).
        spatial: double height and width.
        temporal: double the frames.

    Example:
        >>> Upsample()(keras.ops.zeros((2, 4, 4, 4, 16))).shape
        (2, 4, 8, 8, 16)
        >>> Upsample(spatial=False, temporal=True)(keras.ops.zeros((2, 4, 4, 4, 16))).shape
        (2, 8, 4, 4, 16)
    """

    def __init__(self, filters=None, spatial=True, temporal=False, **kwargs):
        super().__init__(**kwargs)
        _check_resample_axes(spatial, temporal)
        self.filters = filters
        self.spatial = bool(spatial)
        self.temporal = bool(temporal)
        self.resize = keras.layers.UpSampling2D(2, interpolation="nearest", dtype=self.dtype_policy)

    def build(self, x_shape):
        filters = self.filters or x_shape[-1]
        self.conv = self.temporal_conv = None
        if self.spatial:
            self.conv = keras.layers.Conv2D(filters, 3, padding="same", name="conv", dtype=self.dtype_policy)
            h, w = x_shape[-3], x_shape[-2]
            self.conv.build((None, None if h is None else 2 * h, None if w is None else 2 * w, x_shape[-1]))
        if self.temporal:
            self.temporal_conv = _temporal_conv(filters, 1, "temporal_conv", self.dtype_policy)
            self.temporal_conv.build((None, None, filters if self.spatial else x_shape[-1]))
        self.built = True

    def call(self, x):
        if self.conv is not None:
            x = apply_per_frame(lambda frames: self.conv(self.resize(frames)), x)
        if self.temporal_conv is not None and len(x.shape) == 5:
            x = _apply_temporal(self.temporal_conv, ops.repeat(x, 2, axis=1))
        return x

    def compute_output_shape(self, x_shape):
        h, w = x_shape[-3], x_shape[-2]
        if self.spatial:
            h, w = (None if h is None else 2 * h), (None if w is None else 2 * w)
        lead = tuple(x_shape[:-3])
        if self.temporal and len(x_shape) == 5:
            lead = (lead[0], None if lead[1] is None else 2 * lead[1])
        return lead + (h, w, self.filters or x_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, spatial=self.spatial, temporal=self.temporal)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class SpatialAttention(keras.layers.Layer):
    """Self-attention over the pixels of every frame, optionally followed by cross-attention to text.

    ::

        x = x + SelfAttn(GroupNorm(x))                       (DDPM / ADM U-Net)
        x = x + CrossAttn(LayerNorm(x), text, text_mask)     (with context_dim; LDM, Rombach et al. 2022)

    on the ``(B*F, H*W, C)`` tokens of every frame; a video's text ``(B, L, Dt)``
    is shared by its frames. Both output projections start at zero (ADM), so
    the block starts as the identity. Padded text tokens (``text_mask == 0``)
    are never attended to; a sample whose mask is all zero gets no text.

    Args:
        num_heads: attention heads.
        head_dim: width per head (default: channels / heads).
        norm_groups: group-norm groups.
        context_dim: width of the text tokens for cross-attention, or None (self-attention only).

    Call: ``x`` image or video, optional ``context (B, L, context_dim)`` and ``context_mask (B, L)``.

    Example:
        >>> SpatialAttention(num_heads=2)(keras.ops.zeros((2, 4, 8, 8, 16))).shape
        (2, 4, 8, 8, 16)
        >>> attn = SpatialAttention(num_heads=2, context_dim=32)
        >>> attn(keras.ops.zeros((2, 4, 8, 8, 16)), keras.ops.ones((2, 7, 32)), keras.ops.ones((2, 7))).shape
        (2, 4, 8, 8, 16)
    """

    def __init__(self, num_heads=4, head_dim=None, norm_groups=32, context_dim=None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = _positive_int(num_heads, "num_heads")
        self.head_dim = head_dim
        self.norm_groups = _positive_int(norm_groups, "norm_groups")
        self.context_dim = None if context_dim is None else _positive_int(context_dim, "context_dim")

    def build(self, x_shape, context_shape=None, context_mask_shape=None):
        channels = x_shape[-1]
        head_dim = self.head_dim or channels // self.num_heads
        if head_dim < 1 or (self.head_dim is None and channels % self.num_heads):
            raise ValueError(f"{channels} channels cannot be split into `num_heads`={self.num_heads} heads.")
        self.norm = _group_norm(channels, self.norm_groups, "norm", self.dtype_policy)
        self.norm.build((None,) + tuple(x_shape[-3:]))
        self.attention = Attention(
            self.num_heads, head_dim, zero_init_output=True, name="attention", dtype=self.dtype_policy
        )
        self.attention.build((None, None, channels))
        self.cross_norm = self.cross_attention = None
        if self.context_dim is not None:
            self.cross_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="cross_norm", dtype=self.dtype_policy)
            self.cross_norm.build((None, None, channels))
            self.cross_attention = Attention(
                self.num_heads, head_dim, zero_init_output=True, name="cross_attention", dtype=self.dtype_policy
            )
            self.cross_attention.build((None, None, channels), (None, None, self.context_dim))
        self.built = True

    def call(self, x, context=None, context_mask=None):
        if self.cross_attention is not None and context is None:
            raise ValueError("This SpatialAttention has cross-attention (`context_dim` set) and needs `context`.")
        video = len(x.shape) == 5
        frames = x.shape[1] if video else 1
        height, width, channels = x.shape[-3:]
        images = ops.reshape(x, (-1, height, width, channels)) if video else x
        tokens = ops.reshape(images, (-1, height * width, channels))
        tokens = tokens + self.attention(ops.reshape(self.norm(images), (-1, height * width, channels)))
        if self.cross_attention is not None:
            if video:  # every frame of a video reads the same text
                context = ops.repeat(context, frames, axis=0)
                context_mask = None if context_mask is None else ops.repeat(context_mask, frames, axis=0)
            tokens = tokens + self.cross_attention(self.cross_norm(tokens), context=context, mask=context_mask)
        return ops.reshape(tokens, tuple(-1 if i == 0 else d for i, d in enumerate(x.shape)))

    def compute_output_shape(self, x_shape, context_shape=None, context_mask_shape=None):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads, head_dim=self.head_dim, norm_groups=self.norm_groups,
            context_dim=self.context_dim,
        )
        return config


def relative_position_buckets(num_frames, num_buckets=32, max_distance=32):
    """T5 bidirectional relative-position buckets ``(F, F)`` for query frame ``i`` and key frame ``j``.

    Half the buckets hold keys before the query, half keys after; within each
    half, distances below ``num_buckets // 4`` get their own bucket and larger
    ones share logarithmically spaced buckets up to ``max_distance`` (Raffel et
    al. 2020; used for VDM's temporal attention).

    Example:
        >>> relative_position_buckets(4, num_buckets=8, max_distance=8)[0]
        array([0, 5, 6, 7])
    """
    positions = np.arange(num_frames)
    relative = positions[None, :] - positions[:, None]  # key - query
    half = num_buckets // 2
    buckets = np.where(relative > 0, half, 0)
    distance = np.abs(relative)
    exact = half // 2
    with np.errstate(divide="ignore"):
        log_scaled = np.log(np.maximum(distance, 1) / exact) / np.log(max_distance / exact) * (half - exact)
    large = np.minimum(exact + log_scaled.astype(np.int64), half - 1)
    return (buckets + np.where(distance < exact, distance, large)).astype("int32")


@keras.saving.register_keras_serializable(package="keras_vdiff")
class TemporalAttention(keras.layers.Layer):
    """Attention over the frames of every pixel, as a residual branch that starts as the identity.

    ``x + Out(Attn(LN(x)))`` on ``(B*H*W, F, C)`` sequences (VDM, Ho et al. 2022;
    Make-A-Video's pseudo-3D attention, Singer et al. 2022). The output
    projection is zero-initialised, so a freshly inserted layer changes
    nothing. Options:

    - ``relative_position_bias``: learned per-head bias of the T5 bucket of
      ``j - i`` added to the logits (VDM); otherwise frames are unordered sets
      unless position enters elsewhere.
    - ``learned_mix``: Video-LDM's ``alpha * z + (1 - alpha) * z'`` with
      ``alpha = sigmoid(mix_logit)`` learnable, ``z`` the input and ``z'`` the
      temporal branch's output.

    Args:
        num_heads: attention heads.
        head_dim: width per head (default: channels / heads).
        relative_position_bias: add the T5 relative position bias.
        num_buckets, max_distance: T5 bucket parameters (lucidrains' VDM: 32, 32).
        learned_mix: Video-LDM learned mixing.
        mix_init: initial ``mix_logit`` (alpha = sigmoid of it).

    Call: ``x`` video ``(B, F, H, W, C)`` (images pass through unchanged),
    ``temporal_mask`` ``(B,)``: where 0 every frame attends only to itself.

    Example:
        >>> attn = TemporalAttention(num_heads=2)
        >>> attn(keras.ops.zeros((2, 4, 8, 8, 16))).shape
        (2, 4, 8, 8, 16)
    """

    def __init__(self, num_heads=4, head_dim=None, relative_position_bias=True, num_buckets=32, max_distance=32,
                 learned_mix=False, mix_init=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = _positive_int(num_heads, "num_heads")
        self.head_dim = head_dim
        self.relative_position_bias = relative_position_bias
        self.num_buckets = _positive_int(num_buckets, "num_buckets")
        if num_buckets < 4:
            raise ValueError(f"`num_buckets` must be at least 4, got {num_buckets}.")
        self.max_distance = _positive_int(max_distance, "max_distance")
        self.learned_mix = learned_mix
        self.mix_init = float(mix_init)

    def build(self, x_shape, temporal_mask_shape=None):
        channels = x_shape[-1]
        self.inner_head_dim = self.head_dim or channels // self.num_heads
        if self.inner_head_dim < 1 or (self.head_dim is None and channels % self.num_heads):
            raise ValueError(f"{channels} channels cannot be split into `num_heads`={self.num_heads} heads.")
        inner = self.num_heads * self.inner_head_dim
        dtype = self.dtype_policy
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm", dtype=dtype)
        self.norm.build((None, None, channels))
        self.qkv = keras.layers.Dense(3 * inner, use_bias=False, name="qkv", dtype=dtype)
        self.qkv.build((None, None, channels))
        self.output_projection = keras.layers.Dense(
            channels, kernel_initializer="zeros", name="output_projection", dtype=dtype
        )
        self.output_projection.build((None, None, inner))
        if self.relative_position_bias:
            self.bias_table = self.add_weight(
                name="relative_position_bias", shape=(self.num_buckets, self.num_heads), initializer="zeros"
            )
        self.mix = None
        if self.learned_mix:
            self.mix = TemporalMix(self.mix_init, name="mix", dtype=self.dtype_policy)
            self.mix.build(x_shape)
        self.built = True

    @property
    def alpha(self):
        """Video-LDM's spatial weight ``sigmoid(mix_logit)`` (learned_mix only)."""
        return self.mix.alpha

    def position_bias(self, num_frames):
        """``(1, heads, F, F)`` float32 relative position bias, or None."""
        if not self.relative_position_bias:
            return None
        buckets = relative_position_buckets(num_frames, self.num_buckets, self.max_distance)
        bias = ops.take(ops.cast(self.bias_table, "float32"), ops.convert_to_tensor(buckets), axis=0)
        return ops.transpose(bias, (2, 0, 1))[None]

    def call(self, x, temporal_mask=None):
        if len(x.shape) == 4:
            return x
        frames, height, width, _ = x.shape[1:]
        sequences = _temporal_sequences(x)  # (B*H*W, F, C)
        q, k, v = ops.split(self.qkv(self.norm(sequences)), 3, axis=-1)
        shape = (-1, frames, self.num_heads, self.inner_head_dim)
        q, k, v = (ops.reshape(t, shape) for t in (q, k, v))
        bias = self.position_bias(frames)
        if temporal_mask is not None:
            # Per sample: all frames (mask 1) or only the frame itself (mask 0), as an additive bias.
            allowed = ops.maximum(
                ops.reshape(ops.cast(temporal_mask, "float32"), (-1, 1, 1)),
                ops.convert_to_tensor(np.eye(frames, dtype="float32"))[None],
            )
            mask_bias = ops.repeat((1.0 - allowed) * NEGATIVE_LOGIT, height * width, axis=0)[:, None]
            bias = mask_bias if bias is None else bias + mask_bias
        if bias is not None:
            bias = ops.cast(bias, q.dtype)
        out = ops.dot_product_attention(q, k, v, bias=bias)
        out = self.output_projection(ops.reshape(out, (-1, frames, self.num_heads * self.inner_head_dim)))
        branch = _from_temporal_sequences(out, height, width)
        if self.mix is not None:  # alpha * z + (1 - alpha) * z', z' = z + branch
            return self.mix(x, x + branch)
        return x + branch

    def compute_output_shape(self, x_shape, temporal_mask_shape=None):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            relative_position_bias=self.relative_position_bias,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
            learned_mix=self.learned_mix,
            mix_init=self.mix_init,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class UNetConditionEmbedding(keras.layers.Layer):
    """The U-Net's conditioning vector: ``TimestepEmbedding(t) (+ label | + pooled text) (+ fps)``, width ``4 * dim``.

    The sum is what every ``ResBlock`` broadcast-adds (or turns into scale and
    shift) over its feature maps (DDPM; the MNIST lab's broadcast-add conditioning).

    Args:
        hidden_dim: embedding width.
        frequency_dim: sinusoid features of the timestep (even).
        num_classes: class count for class conditioning (label ``num_classes``
            is the null class), or None.
        text_dim: width of ``pooled_text`` for text conditioning (a
            ``PooledTextEmbedding``, learned null for an all-zero ``text_mask``), or None.
        fps_conditioning: add an embedding of the frame rate (Make-A-Video); its
            last layer starts at zero, so a model without fps training ignores it.

    Call: ``timesteps (B,)``, ``class_labels (B,)`` int or None, ``fps (B,)`` or None,
    ``pooled_text (B, text_dim)`` and ``text_mask (B, L)`` or None.

    Example:
        >>> emb = UNetConditionEmbedding(64, num_classes=10)
        >>> emb(keras.ops.array([1.0, 5.0]), keras.ops.array([3, 10])).shape
        (2, 64)
    """

    def __init__(self, hidden_dim, frequency_dim=64, num_classes=None, fps_conditioning=False, text_dim=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = _positive_int(hidden_dim, "hidden_dim")
        self.frequency_dim = _positive_int(frequency_dim, "frequency_dim")
        self.num_classes = num_classes
        self.text_dim = None if text_dim is None else _positive_int(text_dim, "text_dim")
        if num_classes is not None and text_dim is not None:
            raise ValueError("Pass `num_classes` (class conditioning) or `text_dim` (text conditioning), not both.")
        self.fps_conditioning = fps_conditioning
        dtype = self.dtype_policy
        self.time_embedding = TimestepEmbedding(hidden_dim, frequency_dim=frequency_dim, name="time", dtype=dtype)
        self.label_embedding = None
        if num_classes is not None:
            self.label_embedding = LabelEmbedding(num_classes, hidden_dim, dropout_prob=0.0, name="label", dtype=dtype)
        self.text_embedding = None
        if text_dim is not None:
            self.text_embedding = PooledTextEmbedding(hidden_dim, name="pooled_text", dtype=dtype)
        self.fps_embedding = None
        if fps_conditioning:
            self.fps_embedding = TimestepEmbedding(hidden_dim, frequency_dim=frequency_dim, name="fps", dtype=dtype)
            # The last layer starts at zero: the fps embedding adds nothing until trained.
            self.fps_embedding.dense_2.kernel_initializer = keras.initializers.Zeros()

    def build(self, timesteps_shape, class_labels_shape=None, fps_shape=None, pooled_text_shape=None,
              text_mask_shape=None):
        self.time_embedding.build(timesteps_shape)
        if self.label_embedding is not None:
            self.label_embedding.build(timesteps_shape)
        if self.text_embedding is not None:
            self.text_embedding.build((None, self.text_dim), text_mask_shape)
        if self.fps_embedding is not None:
            self.fps_embedding.build(timesteps_shape)
        self.built = True

    def call(self, timesteps, class_labels=None, fps=None, pooled_text=None, text_mask=None):
        emb = self.time_embedding(timesteps)
        if self.label_embedding is not None:
            if class_labels is None:
                raise ValueError("A class-conditional U-Net needs `class_labels`.")
            emb = emb + self.label_embedding(class_labels)
        if self.text_embedding is not None:
            if pooled_text is None:
                raise ValueError("A text-conditional U-Net needs `pooled_text`.")
            emb = emb + self.text_embedding(pooled_text, text_mask)
        if self.fps_embedding is not None and fps is not None:
            emb = emb + self.fps_embedding(fps)
        return emb

    def load_image_weights(self, source):
        """Copy the timestep and label embeddings of an image U-Net (the fps embedding stays at zero)."""
        self.time_embedding.set_weights(source.time_embedding.get_weights())
        if (self.label_embedding is None) != (source.label_embedding is None):
            raise ValueError("Cannot load the condition embedding: class conditioning differs.")
        if self.label_embedding is not None:
            self.label_embedding.set_weights(source.label_embedding.get_weights())
        if (self.text_embedding is None) != (source.text_embedding is None):
            raise ValueError("Cannot load the condition embedding: text conditioning differs.")
        if self.text_embedding is not None:
            self.text_embedding.set_weights(source.text_embedding.get_weights())

    def compute_output_shape(self, timesteps_shape, class_labels_shape=None, fps_shape=None, pooled_text_shape=None,
                             text_mask_shape=None):
        return (timesteps_shape[0], self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            frequency_dim=self.frequency_dim,
            num_classes=self.num_classes,
            fps_conditioning=self.fps_conditioning,
            text_dim=self.text_dim,
        )
        return config
