"""Transformer blocks: the adaLN-Zero DiT block and the video token folds.

Video tokens are ``(B, F, N, D)``. Spatial attention folds frames into the
batch, ``(B*F, N, D)``; temporal attention folds positions into the batch,
``(B*N, F, D)``. The fold helpers below keep that shape story in one place.
"""

import keras
from keras import ops

from keras_vdiff.layers.attention import Attention
from keras_vdiff.layers.core import Dense, LeanTorchCall
from keras_vdiff.layers.gradient_boundary import gradient_boundary
from keras_vdiff.layers.modulation import block_modulation, expand_to, modulate
from keras_vdiff.layers.normalization import layer_norm, normed
from keras_vdiff.validation import check_divisible


def fold_spatial(x):
    """``(B, F, N, D) -> (B*F, N, D)``: each frame becomes a sequence."""
    b, f, n, d = ops.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    return ops.reshape(x, (b * f, n, d))


def unfold_spatial(x, frames):
    """``(B*F, N, D) -> (B, F, N, D)``."""
    return ops.reshape(x, (-1, frames, x.shape[1], x.shape[2]))


def fold_temporal(x):
    """``(B, F, N, D) -> (B*N, F, D)``: each spatial position becomes a sequence over time."""
    b, f, n, d = ops.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    return ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (b * n, f, d))


def unfold_temporal(x, tokens):
    """``(B*N, F, D) -> (B, F, N, D)``."""
    x = ops.reshape(x, (-1, tokens, x.shape[1], x.shape[2]))
    return ops.transpose(x, (0, 2, 1, 3))


def repeat_batch(x, times):
    """Repeat every batch row ``times`` times consecutively: ``(B, ...) -> (B*times, ...)``.

    Matches the folds above: frame-folded rows of sample ``b`` are ``b*F .. b*F+F-1``.
    """
    return ops.repeat(x, times, axis=0)


def text_cross_attention(norm, attention, x, context, context_mask):
    """``CrossAttn(LN(x), context, mask)`` for tokens ``(B, F, N, D)`` (or ``(B, N, D)``); ``norm=None``: no LN.

    All video tokens are queries of one cross-attention call; queries do not
    interact, so this equals per-frame cross-attention without repeating the text.
    """
    if context is None:
        raise ValueError("This block has text cross-attention: pass `context` (the text embeddings).")
    h = x if norm is None else normed(norm, x)
    if len(x.shape) == 3:
        return attention(h, context=context, mask=context_mask)
    f, n, d = x.shape[1], x.shape[2], x.shape[3]
    out = attention(ops.reshape(h, (-1, f * n, d)), context=context, mask=context_mask)
    return ops.reshape(out, (-1, f, n, out.shape[-1]))


MLP_ACTIVATIONS = ("gelu_tanh", "gelu", "geglu")


@keras.saving.register_keras_serializable(package="keras_vdiff")
class MLP(LeanTorchCall, keras.layers.Layer):
    """Transformer feed-forward: ``Dense(ratio*D) -> GELU(tanh) -> Dense(D)`` (ViT / DiT).

    Args:
        hidden_dim: input and output width.
        mlp_ratio: expansion ratio of the inner layer.
        output_dim: output width (defaults to the input width).
        zero_init_output: start the output projection at zero.
        activation: ``"gelu_tanh"`` (DiT, PixArt; diffusers' ``"gelu-approximate"``),
            ``"gelu"`` (exact) or ``"geglu"`` (Shazeer 2020: the first Dense
            is twice as wide, ``value * gelu(gate)`` with the value half first;
            diffusers' ``"geglu"``).
        inner_dim: inner width; overrides ``mlp_ratio`` (PixArt's caption
            projection maps ``text_dim -> D -> D``).

    Example:
        >>> MLP(64)(keras.ops.ones((2, 10, 64))).shape
        (2, 10, 64)
    """

    def __init__(self, hidden_dim, mlp_ratio=4.0, output_dim=None, zero_init_output=False, activation="gelu_tanh",
                 inner_dim=None, **kwargs):
        super().__init__(**kwargs)
        if activation not in MLP_ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {MLP_ACTIVATIONS}, got {activation!r}.")
        self.hidden_dim = hidden_dim
        self.mlp_ratio = mlp_ratio
        self.output_dim = output_dim
        self.zero_init_output = zero_init_output
        self.activation = activation
        self.inner_dim = inner_dim
        self.inner_width = int(inner_dim) if inner_dim else int(hidden_dim * mlp_ratio)
        gated = 2 if activation == "geglu" else 1
        self.fc1 = Dense(gated * self.inner_width, name="fc1", dtype=self.dtype_policy)
        self.fc2 = Dense(
            output_dim or hidden_dim,
            kernel_initializer="zeros" if zero_init_output else "glorot_uniform",
            name="fc2",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        self.fc1.build(input_shape)
        self.fc2.build((None, self.inner_width))
        self.built = True

    def call(self, x):
        h = self.fc1(x)
        if self.activation == "geglu":
            value, gate = ops.split(h, 2, axis=-1)
            return self.fc2(value * ops.gelu(gate, approximate=False))
        return self.fc2(ops.gelu(h, approximate=self.activation == "gelu_tanh"))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim or self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            mlp_ratio=self.mlp_ratio,
            output_dim=self.output_dim,
            zero_init_output=self.zero_init_output,
            activation=self.activation,
            inner_dim=self.inner_dim,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class DiTBlock(keras.layers.Layer):
    """adaLN-Zero transformer block (DiT, Peebles & Xie 2023), optional text cross-attention.

    ::

        shift1, scale1, gate1, shift2, scale2, gate2 = AdaLN(c)
        x = x + gate1 * SelfAttn(modulate(LN(x), shift1, scale1))
        x = x + CrossAttn(LN(x), text, text_mask)          # if cross_attention (PixArt)
        x = x + gate2 * MLP(modulate(LN(x), shift2, scale2))

    The modulation starts at zero (gates 0) and the cross-attention output
    projection too, so a freshly built block is the identity. Used directly
    by DiT, and as the spatial / temporal block of Latte (on folded tokens).

    With ``modulation="single"`` (adaLN-single: PixArt-alpha, Latte-1) the
    six vectors are the block's learned ``(6, D)`` table plus the network's one
    shared projection of the condition, which the block receives as
    ``condition (B, 6 D)`` (:class:`~keras_vdiff.layers.modulation.TableModulation`).
    PixArt's cross-attention has no pre-norm (``cross_attention_norm=False``).

    Args:
        hidden_dim: token width.
        num_heads: attention heads (head width ``hidden_dim // num_heads``).
        mlp_ratio: MLP expansion.
        cross_attention: add a text cross-attention sub-layer.
        qk_norm: RMS-normalise queries and keys.
        modulation: ``"zero"`` (adaLN-Zero, default) or ``"single"``.
        cross_attention_norm: LayerNorm (affine) before the cross-attention.
        norm_epsilon: epsilon of the attention's LayerNorm (and of the MLP's by default).
        mlp_norm_epsilon: epsilon of the MLP's LayerNorm (diffusers' DiT: 1e-5).
        mlp_activation: the MLP's activation (``MLP_ACTIVATIONS``).

    Call:
        ``x (B, N, D)``, ``condition (B, D)`` (``(B, 6 D)`` for adaLN-single), ``context (B, M, Dc)``,
        ``context_mask (B, M)``, ``rope`` angles for self-attention.

    Example:
        >>> block = DiTBlock(64, num_heads=4)
        >>> block(keras.ops.ones((2, 16, 64)), keras.ops.ones((2, 64))).shape
        (2, 16, 64)
    """

    def __init__(self, hidden_dim, num_heads, mlp_ratio=4.0, cross_attention=False, qk_norm=False,
                 modulation="zero", cross_attention_norm=True, norm_epsilon=1e-6, mlp_norm_epsilon=None,
                 mlp_activation="gelu_tanh", **kwargs):
        super().__init__(**kwargs)
        check_divisible(hidden_dim, "hidden_dim", num_heads, "num_heads")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.cross_attention = cross_attention
        self.qk_norm = qk_norm
        self.modulation_kind = modulation
        self.cross_attention_norm = cross_attention_norm
        self.norm_epsilon = norm_epsilon
        self.mlp_norm_epsilon = mlp_norm_epsilon
        self.mlp_activation = mlp_activation
        head_dim = hidden_dim // num_heads
        self.norm1 = layer_norm("norm1", epsilon=norm_epsilon)
        self.attention = Attention(num_heads, head_dim, qk_norm=qk_norm, name="attention", dtype=self.dtype_policy)
        if cross_attention:
            self.norm_cross = layer_norm("norm_cross", affine=True) if cross_attention_norm else None
            self.cross = Attention(
                num_heads, head_dim, qk_norm=qk_norm, zero_init_output=True, name="cross_attention",
                dtype=self.dtype_policy,
            )
        self.norm2 = layer_norm("norm2", epsilon=norm_epsilon if mlp_norm_epsilon is None else mlp_norm_epsilon)
        self.mlp = MLP(hidden_dim, mlp_ratio, activation=mlp_activation, name="mlp", dtype=self.dtype_policy)
        self.modulation = block_modulation(hidden_dim, 6, modulation, self.dtype_policy)

    def build(self, x_shape, condition_shape=None, context_shape=None, context_mask_shape=None, rope_shape=None):
        self.norm1.build(x_shape)
        self.attention.build(x_shape)
        if self.cross_attention:
            if context_shape is None:
                context_shape = (None, None, self.hidden_dim)
            if self.norm_cross is not None:
                self.norm_cross.build(x_shape)
            self.cross.build(x_shape, context_shape)
        self.norm2.build(x_shape)
        self.mlp.build(x_shape)
        width = self.hidden_dim * (6 if self.modulation_kind == "single" else 1)
        self.modulation.build(condition_shape or (None, width))
        self.built = True

    def __call__(self, *args, **kwargs):
        # The residual stream `x` enters every block family here (subclasses override `call`, not this).
        # On JAX its gradient is materialised once per block (`layers/gradient_boundary.py`): without it the
        # gradients of DiT's (B, N, D) and of Latte's (B, F, N, D) streams were quadratic in depth.
        if args:
            args = (gradient_boundary(args[0]),) + args[1:]
        elif "x" in kwargs:
            kwargs["x"] = gradient_boundary(kwargs["x"])
        return super().__call__(*args, **kwargs)

    def call(self, x, condition, context=None, context_mask=None, rope=None):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(condition)
        h = modulate(normed(self.norm1, x), shift1, scale1)
        x = x + expand_to(gate1, x) * self.attend(h, rope)
        if self.cross_attention:
            x = x + text_cross_attention(self.norm_cross, self.cross, x, context, context_mask)
        x = self.before_mlp(x, condition, rope)
        h = modulate(normed(self.norm2, x), shift2, scale2)
        return x + expand_to(gate2, x) * self.mlp(h)

    def attend(self, h, rope=None):
        """The self-attention of the modulated tokens ``h``: all tokens here; the video blocks choose which."""
        return self.attention(h, rope=rope)

    def before_mlp(self, x, condition, rope=None):
        """A step between the attentions and the MLP: none here (the temporal attention of Latte variant 3)."""
        return x

    def compute_output_shape(self, x_shape, *args, **kwargs):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            cross_attention=self.cross_attention,
            qk_norm=self.qk_norm,
            modulation=self.modulation_kind,
            cross_attention_norm=self.cross_attention_norm,
            norm_epsilon=self.norm_epsilon,
            mlp_norm_epsilon=self.mlp_norm_epsilon,
            mlp_activation=self.mlp_activation,
        )
        return config
