"""Adaptive layer norm (adaLN / adaLN-Zero) and DiT's final layer."""

import keras
from keras import ops

from keras_vdiff.layers.core import Dense, LeanTorchCall
from keras_vdiff.layers.normalization import layer_norm
from keras_vdiff.layers.patching import Unpatchify


def modulate(x, shift, scale):
    """``x * (1 + scale) + shift`` with ``shift``/``scale`` ``(B, D)`` broadcast over tokens.

    ``x`` may be ``(B, D)``, ``(B, N, D)``, ``(B, F, N, D)`` ...: the conditioning
    vectors get singleton axes inserted after the batch axis.
    """
    extra = len(x.shape) - len(shift.shape)
    for _ in range(extra):
        shift = ops.expand_dims(shift, 1)
        scale = ops.expand_dims(scale, 1)
    return ops.add(ops.multiply(x, ops.add(scale, 1.0)), shift)


def expand_to(vector, x):
    """Insert singleton axes after the batch axis of ``vector (B, D)`` to broadcast against ``x``."""
    for _ in range(len(x.shape) - len(vector.shape)):
        vector = ops.expand_dims(vector, 1)
    return vector


@keras.saving.register_keras_serializable(package="keras_vdiff")
class AdaLNModulation(LeanTorchCall, keras.layers.Layer):
    """Condition vector to ``n`` modulation vectors: ``SiLU -> Dense(n * D)``, split.

    With ``zero_init=True`` (adaLN-Zero, DiT) the Dense starts at zero, so every
    shift, scale and gate is 0 at initialisation and a gated residual branch
    starts as the identity. A DiT block uses ``num_modulations=6``
    (shift/scale/gate for attention and MLP), the final layer 2 (shift, scale),
    SnapVideo v2's latent adaLN 3.

    Args:
        hidden_dim: width ``D`` of each modulation vector.
        num_modulations: number of vectors ``n``.
        zero_init: zero-initialise the projection (adaLN-Zero).

    Returns:
        list of ``n`` tensors ``(B, D)``.

    Example:
        >>> mod = AdaLNModulation(64, num_modulations=6)
        >>> shift, scale, gate, *_ = mod(keras.ops.ones((2, 64)))
    """

    def __init__(self, hidden_dim, num_modulations=6, zero_init=True, **kwargs):
        super().__init__(**kwargs)
        if num_modulations < 1:
            raise ValueError(f"`num_modulations` must be >= 1, got {num_modulations}.")
        self.hidden_dim = hidden_dim
        self.num_modulations = num_modulations
        self.zero_init = zero_init
        init = "zeros" if zero_init else "glorot_uniform"
        self.projection = Dense(
            num_modulations * hidden_dim,
            kernel_initializer=init,
            bias_initializer="zeros",
            name="projection",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.built = True

    def call(self, condition):
        out = self.projection(ops.silu(condition))
        return ops.split(out, self.num_modulations, axis=-1)

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], self.hidden_dim)] * self.num_modulations

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_modulations=self.num_modulations,
            zero_init=self.zero_init,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class TableModulation(LeanTorchCall, keras.layers.Layer):
    """adaLN-single (PixArt-alpha, Chen et al. 2023; Latte-1): a learned table plus a shared condition.

    Where adaLN-Zero gives every block its own ``SiLU -> Dense(n * D)`` of the
    condition, adaLN-single computes one ``(B, n * D)`` projection for the whole
    network (``AdaLNModulation(n * D, 1)``, shared) and every block adds its own
    learned ``(n, D)`` table to it::

        shift, scale, gate, ... = table + condition.reshape(B, n, D)

    Given a ``(B, D)`` condition instead, it is added to every row of the
    table (PixArt's final layer: ``shift, scale = table + t_emb``).

    Args:
        hidden_dim: width ``D`` of each modulation vector.
        num_modulations: rows ``n`` of the table.

    Returns:
        list of ``n`` tensors ``(B, D)``.

    Example:
        >>> mod = TableModulation(64, num_modulations=6)
        >>> shift, scale, gate, *_ = mod(keras.ops.ones((2, 6 * 64)))
    """

    def __init__(self, hidden_dim, num_modulations=6, **kwargs):
        super().__init__(**kwargs)
        if num_modulations < 1:
            raise ValueError(f"`num_modulations` must be >= 1, got {num_modulations}.")
        self.hidden_dim = hidden_dim
        self.num_modulations = num_modulations

    def build(self, input_shape):
        width = input_shape[-1]
        if width not in (self.hidden_dim, self.num_modulations * self.hidden_dim):
            raise ValueError(
                f"TableModulation({self.hidden_dim}, {self.num_modulations}) takes conditions of width "
                f"{self.hidden_dim} or {self.num_modulations * self.hidden_dim}, got {width}."
            )
        self.table = self.add_weight(
            shape=(self.num_modulations, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=self.hidden_dim**-0.5),
            name="table",
        )
        self.built = True

    def call(self, condition):
        n, d = self.num_modulations, self.hidden_dim
        if condition.shape[-1] == n * d:
            condition = ops.reshape(condition, (-1, n, d))
        else:
            condition = ops.expand_dims(condition, 1)
        rows = ops.cast(self.table, condition.dtype)[None] + condition
        return [rows[:, i] for i in range(n)]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], self.hidden_dim)] * self.num_modulations

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, num_modulations=self.num_modulations)
        return config


MODULATIONS = ("zero", "single")


def block_modulation(hidden_dim, num_modulations, modulation, dtype):
    """The per-block modulation layer: ``AdaLNModulation`` (adaLN-Zero) or ``TableModulation`` (adaLN-single)."""
    if modulation == "zero":
        return AdaLNModulation(hidden_dim, num_modulations, name="modulation", dtype=dtype)
    if modulation == "single":
        return TableModulation(hidden_dim, num_modulations, name="modulation", dtype=dtype)
    raise ValueError(f"`modulation` must be one of {MODULATIONS}, got {modulation!r}.")


@keras.saving.register_keras_serializable(package="keras_vdiff")
class FinalLayer(keras.layers.Layer):
    """DiT's output head: ``LayerNorm -> modulate(shift, scale) -> Dense``, zero-initialised.

    Maps tokens of width ``D`` to ``output_dim`` features per token (DiT:
    ``patch_size**2 * out_channels``, then ``Unpatchify``). The LayerNorm has
    no affine parameters (unless ``norm_affine``) and eps 1e-6 (``epsilon``), and is computed in float32.

    With ``modulation="single"`` it is PixArt's final layer: shift and scale
    are a learned ``(2, D)`` table plus the timestep embedding itself
    (:class:`TableModulation`, no SiLU or Dense).

    Args:
        output_dim: features per token.
        epsilon: LayerNorm epsilon.
        modulation: ``"zero"`` (DiT) or ``"single"`` (PixArt, Latte-1).
        norm_affine: give the LayerNorm a learned scale and offset before the
            modulation (CogVideoX's ``norm_out``, diffusers' ``AdaLayerNorm``).

    Call:
        ``(x (B, ..., D), condition (B, D)) -> (B, ..., output_dim)``.

    Example:
        >>> head = FinalLayer(output_dim=16)
        >>> head(keras.ops.ones((2, 64, 32)), keras.ops.ones((2, 32))).shape
        (2, 64, 16)
    """

    def __init__(self, output_dim, epsilon=1e-6, modulation="zero", norm_affine=False, **kwargs):
        super().__init__(**kwargs)
        if modulation not in MODULATIONS:
            raise ValueError(f"`modulation` must be one of {MODULATIONS}, got {modulation!r}.")
        self.output_dim = output_dim
        self.epsilon = epsilon
        self.modulation_kind = modulation
        self.norm_affine = norm_affine
        self.norm = layer_norm("norm", affine=norm_affine, epsilon=epsilon)
        self.projection = Dense(
            output_dim, kernel_initializer="zeros", name="projection", dtype=self.dtype_policy
        )

    def build(self, x_shape, condition_shape=None):
        hidden_dim = x_shape[-1]
        self.modulation = block_modulation(hidden_dim, 2, self.modulation_kind, self.dtype_policy)
        self.modulation.build(condition_shape or (None, hidden_dim))
        self.norm.build(x_shape)
        self.projection.build(x_shape)
        self.built = True

    def call(self, x, condition):
        shift, scale = self.modulation(condition)
        h = ops.cast(self.norm(x), x.dtype)
        return self.projection(modulate(h, shift, scale))

    def compute_output_shape(self, x_shape, condition_shape=None):
        return tuple(x_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, epsilon=self.epsilon, modulation=self.modulation_kind,
                      norm_affine=self.norm_affine)
        return config


def output_head(patch_size, out_channels, grid_size, tubelet_size=1, dtype=None, modulation="zero"):
    """A patch backbone's output layers: ``FinalLayer`` to patch width, then ``Unpatchify`` to the latents.

    Returns ``(final_layer, unpatchify)``, named ``"final_layer"`` and ``"unpatchify"`` (their weight paths);
    tokens ``(B, [F,] N, D)`` with the condition ``c`` become ``unpatchify(final_layer(tokens, c))``
    ``(B, [F,] H, W, out_channels)``.

    Args:
        patch_size: spatial patch size.
        out_channels: output channels per pixel (doubled already when the model learns sigma).
        grid_size: ``(rows, cols)`` of the patch grid.
        tubelet_size: frames per patch.
        dtype: dtype policy.
        modulation: the final layer's ``"zero"`` (DiT) or ``"single"`` (PixArt) modulation.
    """
    final_layer = FinalLayer(tubelet_size * patch_size * patch_size * out_channels, name="final_layer", dtype=dtype,
                             modulation=modulation)
    unpatchify = Unpatchify(
        patch_size, out_channels, tubelet_size=tubelet_size, grid_size=grid_size, name="unpatchify", dtype=dtype
    )
    return final_layer, unpatchify
