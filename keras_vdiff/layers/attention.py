"""Multi-head attention: self, cross (with key padding mask) and joint (MM-DiT).

All variants call ``keras.ops.dot_product_attention`` so each backend can use
its fused kernel. Tensors inside are ``(batch, tokens, heads, head_dim)``.

Masks are boolean-like with 1 / True meaning "may attend". A key padding mask
``(B, M)`` is broadcast over heads and queries; a full mask ``(B, N, M)`` is
broadcast over heads. A query whose keys are all masked (e.g. cross-attention
to the all-padding null prompt of classifier-free guidance) contributes
exactly zero: the attention is computed on a harmless all-ones mask and the
projected output is multiplied by zero for that sample, so no backend produces
NaN from an empty softmax.
"""

import keras
from keras import ops

from keras_vdiff.layers.core import Dense, LayerNormalization, LeanTorchCall, RMSNormalization
from keras_vdiff.layers.embeddings import apply_rope


def _broadcast_mask(mask, num_queries):
    """(B, M) or (B, N, M) boolean -> (B, 1, N|1, M) and a (B, N|1, 1) "any key valid" factor."""
    mask = ops.cast(mask, "bool")
    if len(mask.shape) == 2:
        mask = mask[:, None, :]  # (B, 1, M): same keys for every query
    elif len(mask.shape) != 3:
        raise ValueError(f"`mask` must be (batch, keys) or (batch, queries, keys), got shape {mask.shape}.")
    has_key = ops.any(mask, axis=-1, keepdims=True)  # (B, N|1, 1)
    safe = ops.logical_or(mask, ops.logical_not(has_key))
    return safe[:, None, :, :], has_key


def _rms_norm(name, dtype_policy):
    return RMSNormalization(axis=-1, epsilon=1e-6, name=name, dtype=dtype_policy)


# `qk_norm` values: off, RMS norm (True is its old spelling), or LayerNorm with scale and offset (CogVideoX), per
# head; or one RMS norm over all heads' channels together (Wan: diffusers' "rms_norm_across_heads").
QK_NORMS = (False, True, "rms_norm", "layer_norm", "rms_norm_across_heads")
ACROSS_HEADS = "rms_norm_across_heads"


def _qk_norm(kind, name, dtype_policy):
    """The per-head query / key norm of ``qk_norm=kind`` (eps 1e-6 both; diffusers' CogVideoX uses the LayerNorm)."""
    if kind == "layer_norm":
        return LayerNormalization(axis=-1, epsilon=1e-6, name=name, dtype=dtype_policy)
    return _rms_norm(name, dtype_policy)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class Attention(LeanTorchCall, keras.layers.Layer):
    """Multi-head self- or cross-attention on ``ops.dot_product_attention``.

    ``call(x)`` is self-attention; ``call(x, context)`` cross-attention from the
    tokens ``x (B, N, D)`` to ``context (B, M, Dc)`` (e.g. text tokens, Latte /
    GenTron / PixArt). Optional QK RMS-norm (SD3, ViT-22B) stabilises training
    at scale; optional rotary angles (RoFormer) rotate queries and keys.

    Args:
        num_heads: number of heads.
        head_dim: width of each head.
        output_dim: width of the output; defaults to the width of ``x``.
        use_bias: biases on the q/k/v projections (DiT: True).
        qk_norm: normalise queries and keys per head: ``True`` / ``"rms_norm"`` (RMS norm, SD3) or
            ``"layer_norm"`` (LayerNorm with learned scale and offset, CogVideoX); ``"rms_norm_across_heads"``:
            one RMS norm over the ``num_heads * head_dim`` channels before the head split (Wan); ``False``: none.
        zero_init_output: start the output projection at zero, so the residual
            branch is the identity at initialisation (temporal layers that are
            inserted into a pretrained model, cross-attention in adaLN-Zero blocks).
        dropout: attention-output dropout rate.

    Call:
        ``x (B, N, D)``, ``context (B, M, Dc)`` or None, ``mask`` ``(B, M)`` or
        ``(B, N, M)`` with 1 = attend, ``rope`` angles ``(N, head_dim/2)`` (self-attention only),
        ``bias`` added to the attention logits, broadcastable to ``(B, num_heads, N, M)``
        (e.g. a distance prior; not together with ``mask``).

    Example:
        >>> attn = Attention(num_heads=4, head_dim=16)
        >>> x, text = keras.ops.ones((2, 10, 64)), keras.ops.ones((2, 7, 32))
        >>> attn(x, context=text, mask=keras.ops.ones((2, 7))).shape
        (2, 10, 64)
    """

    def __init__(
        self,
        num_heads,
        head_dim,
        output_dim=None,
        use_bias=True,
        qk_norm=False,
        zero_init_output=False,
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("num_heads", num_heads), ("head_dim", head_dim)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if qk_norm not in QK_NORMS:
            raise ValueError(f"`qk_norm` must be one of {QK_NORMS}, got {qk_norm!r}.")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.output_dim = output_dim
        self.use_bias = use_bias
        self.qk_norm = qk_norm
        self.zero_init_output = zero_init_output
        self.dropout = dropout
        inner = num_heads * head_dim
        dense = dict(use_bias=use_bias, dtype=self.dtype_policy)
        self.query = Dense(inner, name="query", **dense)
        self.key = Dense(inner, name="key", **dense)
        self.value = Dense(inner, name="value", **dense)
        self.output_projection = None  # built once the query width is known
        if qk_norm:
            self.query_norm = _qk_norm(qk_norm, "query_norm", self.dtype_policy)
            self.key_norm = _qk_norm(qk_norm, "key_norm", self.dtype_policy)
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        # `mask` is our attention mask, not a Keras sequence mask: accept it without the
        # "destroys the mask" warning and attach nothing to the output.
        self.supports_masking = True

    def compute_mask(self, *args, **kwargs):
        return None

    def build(self, x_shape, context_shape=None, mask_shape=None, rope_shape=None, bias_shape=None):
        context_shape = context_shape or x_shape
        self.query.build(x_shape)
        self.key.build(context_shape)
        self.value.build(context_shape)
        out_dim = self.output_dim or x_shape[-1]
        self.output_projection = Dense(
            out_dim,
            kernel_initializer="zeros" if self.zero_init_output else "glorot_uniform",
            name="output_projection",
            dtype=self.dtype_policy,
        )
        self.output_projection.build((None, self.num_heads * self.head_dim))
        if self.qk_norm:
            norm_shape = (None, None) + ((self.num_heads * self.head_dim,) if self.qk_norm == ACROSS_HEADS
                                         else (self.num_heads, self.head_dim))
            self.query_norm.build(norm_shape)
            self.key_norm.build(norm_shape)
        self.built = True

    def _heads(self, x):
        return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], self.num_heads, self.head_dim))

    def project_qkv(self, x, context):
        """Queries from ``x``, keys and values from ``context`` as (B, T, H, Dh)."""
        q, k = self.query(x), self.key(context)
        if self.qk_norm == ACROSS_HEADS:
            q, k = self.query_norm(q), self.key_norm(k)
        q, k, v = self._heads(q), self._heads(k), self._heads(self.value(context))
        if self.qk_norm and self.qk_norm != ACROSS_HEADS:
            q, k = self.query_norm(q), self.key_norm(k)
        return q, k, v

    def call(self, x, context=None, mask=None, rope=None, bias=None, training=None):
        if mask is not None and bias is not None:
            raise ValueError("Pass either `mask` or `bias` to Attention, not both.")
        is_self = context is None
        context = x if is_self else context
        q, k, v = self.project_qkv(x, context)
        if rope is not None:
            if not is_self:
                raise ValueError("`rope` is only supported for self-attention (queries and keys share positions).")
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        has_key = None
        if mask is not None:
            mask, has_key = _broadcast_mask(mask, ops.shape(x)[1])
        if bias is not None:
            bias = ops.cast(bias, q.dtype)
        out = ops.dot_product_attention(q, k, v, bias=bias, mask=mask)
        out = ops.reshape(out, (ops.shape(x)[0], ops.shape(x)[1], self.num_heads * self.head_dim))
        out = self.output_projection(out)
        if has_key is not None:
            out = out * ops.cast(has_key, out.dtype)
        return self.dropped(out, training)

    def dropped(self, out, training):
        """Attention-output dropout; no layer call at all when the rate is zero (the eager cost of a no-op)."""
        return self.dropout_layer(out, training=training) if self.dropout else out

    def compute_output_shape(self, x_shape, context_shape=None, mask_shape=None, rope_shape=None, bias_shape=None):
        return tuple(x_shape[:-1]) + (self.output_dim or x_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            output_dim=self.output_dim,
            use_bias=self.use_bias,
            qk_norm=self.qk_norm,
            zero_init_output=self.zero_init_output,
            dropout=self.dropout,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class JointAttention(keras.layers.Layer):
    """Two-stream joint attention of MM-DiT (SD3, Esser et al. 2024).

    Video tokens ``x`` and text tokens ``c`` keep their own q/k/v and output
    projections (and optional QK-norms) but share one softmax over the
    concatenated sequence, so each stream attends to both. Padded text
    tokens (``context_mask == 0``) are never attended to.

    Args:
        num_heads, head_dim, use_bias, qk_norm: as in :class:`Attention`.

    Call:
        ``x (B, N, D)``, ``context (B, M, Dc)``, ``context_mask (B, M)`` ->
        ``(x_out (B, N, D), context_out (B, M, Dc))``. Optional ``rope`` angles
        ``(N, head_dim/2)`` rotate the queries and keys of the ``x`` stream only.

    Example:
        >>> attn = JointAttention(num_heads=4, head_dim=16)
        >>> xo, co = attn(keras.ops.ones((2, 10, 64)), keras.ops.ones((2, 5, 32)))
    """

    def __init__(self, num_heads, head_dim, use_bias=True, qk_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.use_bias = use_bias
        self.qk_norm = qk_norm
        common = dict(num_heads=num_heads, head_dim=head_dim, use_bias=use_bias, qk_norm=qk_norm,
                      dtype=self.dtype_policy)
        # Each stream owns a full set of projections; only the softmax is shared.
        self.x_attention = Attention(name="x_attention", **common)
        self.context_attention = Attention(name="context_attention", **common)

    def build(self, x_shape, context_shape=None, context_mask_shape=None, rope_shape=None):
        self.x_attention.build(x_shape)
        self.context_attention.build(context_shape)
        self.built = True

    def call(self, x, context, context_mask=None, rope=None):
        n = ops.shape(x)[1]
        qx, kx, vx = self.x_attention.project_qkv(x, x)
        if rope is not None:  # positions of the x stream only (e.g. 3D RoPE of video tokens)
            qx, kx = apply_rope(qx, rope), apply_rope(kx, rope)
        qc, kc, vc = self.context_attention.project_qkv(context, context)
        q = ops.concatenate([qx, qc], axis=1)
        k = ops.concatenate([kx, kc], axis=1)
        v = ops.concatenate([vx, vc], axis=1)
        mask = None
        if context_mask is not None:
            x_valid = ops.ones((ops.shape(x)[0], n), dtype="bool")
            key_mask = ops.concatenate([x_valid, ops.cast(context_mask, "bool")], axis=1)
            mask = key_mask[:, None, None, :]  # video keys are always valid, so never empty
        out = ops.dot_product_attention(q, k, v, mask=mask)
        out = ops.reshape(out, (ops.shape(out)[0], ops.shape(out)[1], self.num_heads * self.head_dim))
        x_out = self.x_attention.output_projection(out[:, :n])
        c_out = self.context_attention.output_projection(out[:, n:])
        return x_out, c_out

    def compute_output_shape(self, x_shape, context_shape=None, context_mask_shape=None, rope_shape=None):
        return tuple(x_shape), tuple(context_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads, head_dim=self.head_dim, use_bias=self.use_bias, qk_norm=self.qk_norm
        )
        return config
