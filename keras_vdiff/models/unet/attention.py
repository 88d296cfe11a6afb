"""The U-Net's attention blocks: spatial attention per frame (with LDM's text cross-attention) and VDM's
temporal attention over the frames of every pixel (T5 relative position bias, zero-initialised output,
optional Video-LDM learned mix; ``temporal_mask`` restricts image samples to their own frame).
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.layers.attention import Attention
from keras_vdiff.layers.convolution import TemporalMix, from_temporal_sequences, temporal_sequences
from keras_vdiff.layers.core import Dense, LayerNormalization
from keras_vdiff.models.unet.blocks import group_norm
from keras_vdiff.validation import check_int

NEGATIVE_LOGIT = -1e4


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
        self.num_heads = check_int(num_heads, "num_heads")
        self.head_dim = head_dim
        self.norm_groups = check_int(norm_groups, "norm_groups")
        self.context_dim = None if context_dim is None else check_int(context_dim, "context_dim")

    def build(self, x_shape, context_shape=None, context_mask_shape=None):
        channels = x_shape[-1]
        head_dim = self.head_dim or channels // self.num_heads
        if head_dim < 1 or (self.head_dim is None and channels % self.num_heads):
            raise ValueError(f"{channels} channels cannot be split into `num_heads`={self.num_heads} heads.")
        self.norm = group_norm(channels, self.norm_groups, "norm", self.dtype_policy)
        self.norm.build((None,) + tuple(x_shape[-3:]))
        self.attention = Attention(
            self.num_heads, head_dim, zero_init_output=True, name="attention", dtype=self.dtype_policy
        )
        self.attention.build((None, None, channels))
        self.cross_norm = self.cross_attention = None
        if self.context_dim is not None:
            self.cross_norm = LayerNormalization(epsilon=1e-5, name="cross_norm", dtype=self.dtype_policy)
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
        self.num_heads = check_int(num_heads, "num_heads")
        self.head_dim = head_dim
        self.relative_position_bias = relative_position_bias
        self.num_buckets = check_int(num_buckets, "num_buckets")
        if num_buckets < 4:
            raise ValueError(f"`num_buckets` must be at least 4, got {num_buckets}.")
        self.max_distance = check_int(max_distance, "max_distance")
        self.learned_mix = learned_mix
        self.mix_init = float(mix_init)

    def build(self, x_shape, temporal_mask_shape=None):
        channels = x_shape[-1]
        self.inner_head_dim = self.head_dim or channels // self.num_heads
        if self.inner_head_dim < 1 or (self.head_dim is None and channels % self.num_heads):
            raise ValueError(f"{channels} channels cannot be split into `num_heads`={self.num_heads} heads.")
        inner = self.num_heads * self.inner_head_dim
        dtype = self.dtype_policy
        self.norm = LayerNormalization(epsilon=1e-5, name="norm", dtype=dtype)
        self.norm.build((None, None, channels))
        self.qkv = Dense(3 * inner, use_bias=False, name="qkv", dtype=dtype)
        self.qkv.build((None, None, channels))
        self.output_projection = Dense(
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
        sequences = temporal_sequences(x)  # (B*H*W, F, C)
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
        branch = from_temporal_sequences(out, height, width)
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
