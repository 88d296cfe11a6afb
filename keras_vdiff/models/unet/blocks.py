"""U-Net blocks for image and video diffusion: residual blocks and resampling.

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
from keras import ops

from keras_vdiff.layers.convolution import (
    PseudoConv3D,
    apply_per_frame,
    from_temporal_sequences,
    temporal_sequences,
)
from keras_vdiff.layers.core import Dense
from keras_vdiff.validation import check_int

CONV_TYPES = ("spatial", "pseudo3d")
EMBEDDING_MODES = ("scale_shift", "add")


def group_norm(channels, groups, name, dtype):
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
        self.filters = check_int(filters, "filters")
        self.norm_groups = check_int(norm_groups, "norm_groups")
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
        self.embedding_projection = Dense(projection_width, name="embedding_projection", dtype=dtype)
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=dtype)
        self.norm_1 = None
        self.skip = None

    def build(self, x_shape, emb_shape, temporal_mask_shape=None):
        channels = x_shape[-1]
        frame_shape = (None,) + tuple(x_shape[-3:])
        self.norm_1 = group_norm(channels, self.norm_groups, "norm_1", self.dtype_policy)
        self.norm_2 = group_norm(self.filters, self.norm_groups, "norm_2", self.dtype_policy)
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
    return from_temporal_sequences(conv(temporal_sequences(x)), height, width)


class Resample(keras.layers.Layer):
    """The shared part of :class:`Downsample` and :class:`Upsample`: the axes, the convolutions, the config.

    A subclass sets ``stride`` (of its convolutions), ``resized(size)`` (an axis' new length) and
    what comes before each convolution (``spatial_step``, ``before_temporal``).

    Args:
        filters: output channels (default: the input's).
        spatial: resample height and width.
        temporal: resample the frames.
    """

    stride = 1

    def __init__(self, filters=None, spatial=True, temporal=False, **kwargs):
        super().__init__(**kwargs)
        _check_resample_axes(spatial, temporal)
        self.filters = filters
        self.spatial = bool(spatial)
        self.temporal = bool(temporal)

    def resized(self, size):
        raise NotImplementedError

    def spatial_step(self, frames):
        """The spatial part on frames ``(N, H, W, C)``."""
        return self.conv(frames)

    def before_temporal(self, x):
        """What the temporal convolution sees of the video ``(B, F, H, W, C)``."""
        return x

    def call(self, x):
        if self.conv is not None:
            x = apply_per_frame(self.spatial_step, x)
        if self.temporal_conv is not None and len(x.shape) == 5:
            x = _apply_temporal(self.temporal_conv, self.before_temporal(x))
        return x

    def build(self, x_shape):
        filters = self.filters or x_shape[-1]
        self.conv = self.temporal_conv = None
        if self.spatial:
            self.conv = keras.layers.Conv2D(
                filters, 3, strides=self.stride, padding="same", name="conv", dtype=self.dtype_policy
            )
            self.conv.build((None, None, None, x_shape[-1]))
        if self.temporal:
            self.temporal_conv = _temporal_conv(filters, self.stride, "temporal_conv", self.dtype_policy)
            self.temporal_conv.build((None, None, filters if self.spatial else x_shape[-1]))
        self.built = True

    def compute_output_shape(self, x_shape):
        h, w = x_shape[-3], x_shape[-2]
        if self.spatial:
            h, w = (None if h is None else self.resized(h)), (None if w is None else self.resized(w))
        lead = tuple(x_shape[:-3])
        if self.temporal and len(x_shape) == 5:
            lead = (lead[0], None if lead[1] is None else self.resized(lead[1]))
        return lead + (h, w, self.filters or x_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, spatial=self.spatial, temporal=self.temporal)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class Downsample(Resample):
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

    stride = 2

    def resized(self, size):
        return (size + 1) // 2


@keras.saving.register_keras_serializable(package="keras_vdiff")
class Upsample(Resample):
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
        super().__init__(filters, spatial, temporal, **kwargs)
        self.resize = keras.layers.UpSampling2D(2, interpolation="nearest", dtype=self.dtype_policy)

    def resized(self, size):
        return 2 * size

    def spatial_step(self, frames):
        return self.conv(self.resize(frames))

    def before_temporal(self, x):
        return ops.repeat(x, 2, axis=1)  # every frame twice (nearest neighbour in time), then the 3-tap mix
