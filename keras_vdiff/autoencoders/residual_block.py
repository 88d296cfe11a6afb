"""``VAEResidualBlock``: GroupNorm -> SiLU -> conv, twice, plus a skip (the LDM / SD autoencoder block).

The same block serves the frame-wise VAE (images ``(B, H, W, C)``, 3x3
``Conv2D``) and the causal video VAE (videos ``(B, F, H, W, C)``, 3x3x3
``keras_vdiff.layers.convolution.CausalConv3D``). Group normalization runs per frame, so a video
block stays causal in time: no statistic mixes a frame with later frames.
"""

import keras
from keras import ops

from keras_vdiff.layers.convolution import TEMPORAL_PADDINGS, CausalConv3D
from keras_vdiff.validation import check_int


def frame_group_norm(norm, x):
    """Apply a GroupNormalization per frame: videos are folded into the batch first."""
    if len(x.shape) == 4:
        return norm(x)
    shape = ops.shape(x)
    y = norm(ops.reshape(x, (-1,) + tuple(shape[2:])))
    return ops.reshape(y, tuple(shape[:4]) + (ops.shape(y)[-1],))


def check_groups(channels, groups, name):
    if channels % groups:
        raise ValueError(f"`{name}`={channels} channels must be divisible by `norm_groups`={groups}.")


@keras.saving.register_keras_serializable(package="keras_vdiff")
class VAEResidualBlock(keras.layers.Layer):
    """Residual block of a VAE encoder/decoder (Rombach et al. 2022, "High-Resolution Image Synthesis with LDMs").

    Args:
        filters: output channels.
        norm_groups: groups of the group normalizations (divides both channel counts).
        video: 3D causal convolutions over ``(B, F, H, W, C)`` instead of 2D over ``(B, H, W, C)``.
        temporal_padding: ``"replicate"`` or ``"zeros"`` (video blocks only).

    Example:
        >>> block = VAEResidualBlock(16, norm_groups=4)
        >>> block(keras.ops.zeros((2, 8, 8, 8))).shape
        (2, 8, 8, 16)
    """

    def __init__(self, filters, norm_groups=8, video=False, temporal_padding="replicate", **kwargs):
        super().__init__(**kwargs)
        check_int(filters, "filters")
        check_int(norm_groups, "norm_groups")
        check_groups(filters, norm_groups, "filters")
        if temporal_padding not in TEMPORAL_PADDINGS:
            raise ValueError(f"`temporal_padding` must be one of {TEMPORAL_PADDINGS}, got {temporal_padding!r}.")
        self.filters = filters
        self.norm_groups = norm_groups
        self.video = bool(video)
        self.temporal_padding = temporal_padding
        self.norm_1 = keras.layers.GroupNormalization(norm_groups, epsilon=1e-6, dtype="float32", name="norm_1")
        self.norm_2 = keras.layers.GroupNormalization(norm_groups, epsilon=1e-6, dtype="float32", name="norm_2")
        self.conv_1 = self._conv(filters, 3, "conv_1")
        self.conv_2 = self._conv(filters, 3, "conv_2")
        self.skip = None

    def _conv(self, filters, kernel_size, name):
        if self.video:
            return CausalConv3D(
                filters, kernel_size, temporal_padding=self.temporal_padding, dtype=self.dtype_policy, name=name
            )
        return keras.layers.Conv2D(filters, kernel_size, padding="same", dtype=self.dtype_policy, name=name)

    def build(self, input_shape):
        expected = 5 if self.video else 4
        if len(input_shape) != expected:
            kind = "videos (B, F, H, W, C)" if self.video else "images (B, H, W, C)"
            raise ValueError(f"VAEResidualBlock(video={self.video}) takes {kind}, got shape {tuple(input_shape)}.")
        channels = input_shape[-1]
        check_groups(channels, self.norm_groups, "input channels")
        spatial = (None,) * (expected - 1)
        self.norm_1.build((None, None, None, channels))
        self.conv_1.build(spatial + (channels,))
        self.norm_2.build((None, None, None, self.filters))
        self.conv_2.build(spatial + (self.filters,))
        if channels != self.filters:
            self.skip = self._conv(self.filters, 1, "skip")
            self.skip.build(spatial + (channels,))

    def call(self, x):
        h = self.conv_1(ops.silu(ops.cast(frame_group_norm(self.norm_1, x), self.compute_dtype)))
        h = self.conv_2(ops.silu(ops.cast(frame_group_norm(self.norm_2, h), self.compute_dtype)))
        return (x if self.skip is None else self.skip(x)) + h

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, norm_groups=self.norm_groups, video=self.video, temporal_padding=self.temporal_padding
        )
        return config
