"""Video convolutions: per-frame 2D, pseudo-3D (2D + 1D) and temporally causal 3D.

- ``apply_per_frame(layer, x)`` runs an image layer on every frame of a video
  ``(B, F, H, W, C)`` by folding the frames into the batch; images pass through.
- ``PseudoConv3D`` (Make-A-Video, Singer et al. 2022, §3.2; the (2+1)D convolution
  of Tran et al. 2018): a ``Conv2D`` over ``(h, w)`` of every frame, then a
  ``Conv1D`` over the frames of every pixel. The temporal kernel starts as the
  identity (a Dirac kernel, zero bias), so a freshly inflated layer computes
  exactly the 2D convolution it was inflated from.
- ``CausalConv3D`` (CogVideoX 3D causal VAE, Yang et al. 2024): pads ``k_t - 1``
  frames before the first frame and none after, so output frame ``t`` depends
  only on input frames ``<= t``.
- ``TemporalMix`` (Video-LDM, Blattmann et al. 2023, eq. 2): the learned blend
  ``alpha * z_spatial + (1 - alpha) * z_temporal`` of a frozen image layer's
  output and the temporal layer that follows it.

Video-image joint training (VDM, Ho et al. 2022): ``PseudoConv3D`` takes a
``temporal_mask`` ``(B,)``; where it is 0 the temporal convolution sees only the
frame itself (its centre tap), so the frames of that sample stay independent.
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.validation import check_int, is_int

TEMPORAL_PADDINGS = ("zeros", "replicate")


def _kernel_triple(value, name):
    if is_int(value):
        value = (value, value, value)
    value = tuple(value)
    if len(value) != 3:
        raise ValueError(f"`{name}` must be an int or 3 ints (time, height, width), got {value!r}.")
    return tuple(check_int(v, name) for v in value)


def apply_per_frame(layer, x, *args, **kwargs):
    """``layer`` applied to every frame: ``(B, F, H, W, C)`` is folded to ``(B*F, H, W, C)`` and back.

    Images ``(B, H, W, C)`` are passed to ``layer`` unchanged.

    Example:
        >>> conv = keras.layers.Conv2D(8, 3, padding="same")
        >>> apply_per_frame(conv, keras.ops.zeros((2, 4, 16, 16, 3))).shape
        (2, 4, 16, 16, 8)
    """
    if len(x.shape) == 4:
        return layer(x, *args, **kwargs)
    if len(x.shape) != 5:
        raise ValueError(f"Expected an image (B, H, W, C) or a video (B, F, H, W, C), got shape {x.shape}.")
    frames = x.shape[1]
    y = layer(ops.reshape(x, (-1,) + tuple(x.shape[2:])), *args, **kwargs)
    return ops.reshape(y, (-1, frames) + tuple(y.shape[1:]))


def temporal_sequences(x):
    """``(B, F, H, W, C) -> (B*H*W, F, C)``: one sequence over time per pixel."""
    f, h, w, c = x.shape[1:]
    x = ops.transpose(x, (0, 2, 3, 1, 4))
    return ops.reshape(x, (-1, f, c))


def from_temporal_sequences(x, height, width):
    """``(B*H*W, F, C) -> (B, F, H, W, C)``."""
    f, c = x.shape[1:]
    x = ops.reshape(x, (-1, height, width, f, c))
    return ops.transpose(x, (0, 3, 1, 2, 4))


def per_sample_gate(temporal_mask, x):
    """A ``(B,)`` temporal mask as a float tensor broadcastable against ``x`` (B, ...)."""
    mask = ops.cast(ops.reshape(temporal_mask, (-1,)), x.dtype)
    return ops.reshape(mask, (-1,) + (1,) * (len(x.shape) - 1))


@keras.saving.register_keras_serializable(package="keras_vdiff")
class PseudoConv3D(keras.layers.Layer):
    """Pseudo-3D convolution: per-frame ``Conv2D`` then per-pixel ``Conv1D`` over frames (Make-A-Video).

    ``Conv_P3D(h) = Conv_1D(Conv_2D(h) o T) o T`` (Singer et al. 2022, eq. 4). The
    temporal convolution is initialised to the identity, so at initialisation
    the layer equals its 2D convolution on every frame; the 2D convolution can be
    loaded from an image model (``inflate_unet``).

    Args:
        filters: output channels.
        kernel_size: spatial kernel size (int).
        temporal_kernel_size: odd number of frames the temporal convolution spans.
        strides: spatial stride of the 2D convolution.
        use_bias: biases on both convolutions.
        temporal: build the temporal convolution (False: per-frame 2D only).

    Call:
        ``x`` video ``(B, F, H, W, C)`` (an image ``(B, H, W, C)`` gets only the
        2D convolution); optional ``temporal_mask`` ``(B,)``, 1 = the frames of the
        sample interact, 0 = they stay independent (image-video joint training).

    Example:
        >>> conv = PseudoConv3D(8, kernel_size=3, temporal_kernel_size=3)
        >>> conv(keras.ops.zeros((2, 5, 16, 16, 3))).shape
        (2, 5, 16, 16, 8)
    """

    def __init__(self, filters, kernel_size=3, temporal_kernel_size=3, strides=1, use_bias=True, temporal=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int(filters, "filters")
        self.kernel_size = check_int(kernel_size, "kernel_size")
        self.temporal_kernel_size = check_int(temporal_kernel_size, "temporal_kernel_size")
        if self.temporal_kernel_size % 2 == 0:
            raise ValueError(f"`temporal_kernel_size` must be odd (centred identity init), got {temporal_kernel_size}.")
        self.strides = check_int(strides, "strides")
        self.use_bias = use_bias
        self.temporal = temporal
        self.spatial = keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding="same", use_bias=use_bias, name="spatial",
            dtype=self.dtype_policy,
        )
        self.temporal_conv = None
        if temporal:
            self.temporal_conv = keras.layers.Conv1D(
                filters,
                temporal_kernel_size,
                padding="same",
                use_bias=use_bias,
                kernel_initializer=_DiracInitializer(),
                bias_initializer="zeros",
                name="temporal",
                dtype=self.dtype_policy,
            )

    def build(self, input_shape, temporal_mask_shape=None):
        self.spatial.build((None,) + tuple(input_shape[-3:]))
        if self.temporal_conv is not None:
            self.temporal_conv.build((None, None, self.filters))
        self.built = True

    def call(self, x, temporal_mask=None):
        y = apply_per_frame(self.spatial, x)
        if self.temporal_conv is None or len(x.shape) == 4:
            return y
        height, width = y.shape[2], y.shape[3]
        sequences = temporal_sequences(y)
        mixed = from_temporal_sequences(self.temporal_conv(sequences), height, width)
        if temporal_mask is None:
            return mixed
        # Masked samples: only the centre tap, i.e. each frame sees itself only.
        centre = ops.matmul(y, self.temporal_conv.kernel[self.temporal_kernel_size // 2])
        if self.use_bias:
            centre = centre + self.temporal_conv.bias
        gate = per_sample_gate(temporal_mask, mixed)
        return gate * mixed + (1.0 - gate) * centre

    def compute_output_shape(self, input_shape, temporal_mask_shape=None):
        spatial = self.spatial.compute_output_shape((None,) + tuple(input_shape[-3:]))
        return tuple(input_shape[:-3]) + tuple(spatial[1:])

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            temporal_kernel_size=self.temporal_kernel_size,
            strides=self.strides,
            use_bias=self.use_bias,
            temporal=self.temporal,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class _DiracInitializer(keras.initializers.Initializer):
    """Identity kernel for a ``Conv1D`` ``(k, C_in, C_out)``: the centre tap is the identity matrix."""

    def __call__(self, shape, dtype=None):
        taps, c_in, c_out = shape
        kernel = np.zeros(shape, dtype="float32")
        kernel[taps // 2, :, :] = np.eye(c_in, c_out, dtype="float32")
        return ops.convert_to_tensor(kernel, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class CausalConv3D(keras.layers.Layer):
    """3D convolution that never looks at future frames (CogVideoX causal VAE, Yang et al. 2024).

    Time is padded with ``k_t - 1`` frames before the first frame (zeros, or
    copies of the first frame with ``temporal_padding="replicate"``) and none
    after; height and width are padded "same"-style. Output frame ``t`` is a
    function of input frames ``0..t`` only, so a single image is encoded on its
    own and a video can be processed frame-by-frame with a cache.

    Args:
        filters: output channels.
        kernel_size: int or ``(k_t, k_h, k_w)``.
        strides: spatial stride (time is never strided here).
        dilation_rate: temporal dilation (padding becomes ``dilation * (k_t - 1)``);
            only with ``strides=1``.
        temporal_padding: ``"zeros"`` or ``"replicate"``.
        use_bias: add a bias.

    Example:
        >>> conv = CausalConv3D(8, kernel_size=3)
        >>> conv(keras.ops.zeros((2, 5, 16, 16, 3))).shape
        (2, 5, 16, 16, 8)
    """

    def __init__(self, filters, kernel_size=3, strides=1, dilation_rate=1, temporal_padding="zeros", use_bias=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int(filters, "filters")
        self.kernel_size = _kernel_triple(kernel_size, "kernel_size")
        self.strides = check_int(strides, "strides")
        self.dilation_rate = check_int(dilation_rate, "dilation_rate")
        if self.strides > 1 and self.dilation_rate > 1:
            raise ValueError(
                f"`strides`={strides} > 1 cannot be combined with `dilation_rate`={dilation_rate} > 1 "
                "(Keras convolutions refuse it); use one of them."
            )
        if temporal_padding not in TEMPORAL_PADDINGS:
            raise ValueError(f"`temporal_padding` must be one of {TEMPORAL_PADDINGS}, got {temporal_padding!r}.")
        self.temporal_padding = temporal_padding
        self.use_bias = use_bias
        self.conv = keras.layers.Conv3D(
            filters,
            self.kernel_size,
            strides=(1, self.strides, self.strides),
            dilation_rate=(self.dilation_rate, 1, 1),
            padding="valid",
            use_bias=use_bias,
            name="conv",
            dtype=self.dtype_policy,
        )

    def _paddings(self):
        kt, kh, kw = self.kernel_size
        spatial = []
        for k in (kh, kw):
            total = max(k - self.strides, 0)
            spatial.append((total // 2, total - total // 2))
        return (self.dilation_rate * (kt - 1), 0), spatial[0], spatial[1]

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"CausalConv3D expects a video (B, F, H, W, C), got shape {input_shape}.")
        self.conv.build((None, None, None, None, input_shape[-1]))
        self.built = True

    def _time_padding(self, x, frames):
        if self.temporal_padding == "replicate":
            return ops.repeat(x[:, :1], frames, axis=1)
        return ops.zeros_like(ops.repeat(x[:, :1], frames, axis=1))

    def call(self, x, context=None):
        """``context``: the ``dilation * (k_t - 1)`` frames that precede ``x`` (``next_context`` of the previous
        chunk), used instead of the padding, so a video convolved chunk by chunk equals the video convolved whole."""
        time_pad, height_pad, width_pad = self._paddings()
        if time_pad[0] > 0 and (context is not None or self.temporal_padding == "replicate"):
            before = self._time_padding(x, time_pad[0]) if context is None else ops.cast(context, x.dtype)
            x = ops.concatenate([before, x], axis=1)
            time_pad = (0, 0)
        x = ops.pad(x, ((0, 0), time_pad, height_pad, width_pad, (0, 0)))
        return self.conv(x)

    def next_context(self, x, context=None):
        """The ``context`` of the chunk after ``x`` (its last ``dilation * (k_t - 1)`` frames, padding or
        ``context`` in front where ``x`` is shorter); None for a kernel one frame long."""
        frames = self._paddings()[0][0]
        if frames == 0:
            return None
        if x.shape[1] is None or x.shape[1] < frames:
            before = self._time_padding(x, frames) if context is None else ops.cast(context, x.dtype)
            x = ops.concatenate([before, x], axis=1)
        return x[:, -frames:]

    def compute_output_shape(self, input_shape):
        b, f, h, w, _ = input_shape

        def out(size):
            return None if size is None else -(-size // self.strides)

        return (b, f, out(h), out(w), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            temporal_padding=self.temporal_padding,
            use_bias=self.use_bias,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class TemporalMix(keras.layers.Layer):
    """Video-LDM's learned skip: ``alpha * z + (1 - alpha) * z'`` with ``alpha = sigmoid(mix_logit)``.

    ``z`` is the output of a (frozen) spatial layer and ``z'`` that of the
    temporal layer applied to it (Blattmann et al. 2023, "Align your Latents",
    eq. 2). ``mix_logit`` is one trainable scalar; a large initial value keeps
    the model close to the image model at the start. Samples whose
    ``temporal_mask`` is 0 (images in image-video joint training) get ``z``.

    Args:
        mix_init: initial ``mix_logit`` (0 gives ``alpha = 0.5``).

    Call: ``spatial``, ``temporal`` of the same shape ``(B, ...)``, optional ``temporal_mask (B,)``.

    Example:
        >>> mix = TemporalMix(mix_init=2.0)
        >>> mix(keras.ops.ones((2, 4, 8, 8, 16)), keras.ops.zeros((2, 4, 8, 8, 16))).shape
        (2, 4, 8, 8, 16)
    """

    def __init__(self, mix_init=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mix_init = float(mix_init)

    def build(self, spatial_shape, temporal_shape=None, temporal_mask_shape=None):
        self.mix_logit = self.add_weight(
            name="mix_logit", shape=(), initializer=keras.initializers.Constant(self.mix_init)
        )
        self.built = True

    @property
    def alpha(self):
        """The spatial weight ``sigmoid(mix_logit)``."""
        return ops.sigmoid(self.mix_logit)

    def call(self, spatial, temporal, temporal_mask=None):
        alpha = ops.cast(self.alpha, spatial.dtype)
        if temporal_mask is not None:
            gate = per_sample_gate(temporal_mask, spatial)
            alpha = 1.0 - gate * (1.0 - alpha)
        # = alpha * spatial + (1 - alpha) * temporal, exact where the two agree (an identity temporal layer)
        return temporal + alpha * (spatial - temporal)

    def compute_output_shape(self, spatial_shape, temporal_shape=None, temporal_mask_shape=None):
        return tuple(spatial_shape)

    def get_config(self):
        config = super().get_config()
        config.update(mix_init=self.mix_init)
        return config
