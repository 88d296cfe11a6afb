"""Video transformer blocks: factorized (Latte, GenTron), split-head and MM-DiT joint blocks.

Video tokens are ``(B, F, N, D)`` (frames x patches per frame). The blocks here
decide *which* tokens attend to which:

- ``FactorizedBlock(axis="spatial")``: each frame attends within itself
  (``(B*F, N, D)``); ``axis="temporal"``: each patch position attends over
  the frames (``(B*N, F, D)``). Latte's variants 1 and 2 stack these.
- ``SpatioTemporalBlock``: spatial then temporal attention inside one block
  (Latte variant 3); ``GenTronBlock`` is its GenTron form (text cross-attention
  between the two, temporal attention with a plain LayerNorm and a zero-initialised
  output so the block starts as the identity).
- ``SplitHeadBlock``: one attention whose heads are split between spatial and
  temporal attention (Latte variant 4).
- ``TextCrossAttentionBlock``: ``x + CrossAttn(LN(x), text, mask)`` between blocks
  (the thesis' Latte v1 text placement).
- ``MMDiTBlock``: two-stream joint attention over video and text tokens with
  separate adaLN-Zero modulation per stream (SD3 MM-DiT).
- ``ExpertAdaLNBlock``: text and video tokens in one attention and one MLP with
  shared weights, modulated by a separate adaLN per modality (CogVideoX's expert adaLN).

Text cross-attention never mixes video tokens: every query attends to the text
independently, so it is computed on ``(B, F*N, D)`` without repeating the text
per frame. The condition vector ``c`` the blocks are modulated by comes from
``ConditionEmbedding`` (``layers/conditioning.py``, the conditioning contract).
"""

import keras
from keras import ops

from keras_vdiff.layers.attention import Attention, JointAttention
# The conditioning contract lives in layers/conditioning.py; these names stay importable from here.
from keras_vdiff.layers.conditioning import (  # noqa: F401
    CONDITIONINGS,
    ConditionEmbedding,
    check_conditioning,
    condition_inputs,
)
from keras_vdiff.layers.embeddings import apply_rope
from keras_vdiff.layers.gradient_boundary import gradient_boundary
from keras_vdiff.layers.modulation import AdaLNModulation, expand_to, modulate
from keras_vdiff.layers.normalization import layer_norm, normed
from keras_vdiff.layers.transformer import (
    MLP,
    DiTBlock,
    fold_spatial,
    fold_temporal,
    text_cross_attention,
    unfold_spatial,
    unfold_temporal,
)
from keras_vdiff.validation import check_divisible

ATTENTION_AXES = ("spatial", "temporal")


def attend_along(attention, x, axis, rope=None):
    """Self-attention of ``x (B, F, N, D)`` within each frame or along time at each position.

    Args:
        attention: an :class:`Attention` layer.
        x: tokens ``(B, F, N, D)``.
        axis: ``"spatial"`` (sequences ``(B*F, N, D)``) or ``"temporal"`` (``(B*N, F, D)``).
        rope: optional RoPE angles for the attended axis.
    """
    if axis == "spatial":
        return unfold_spatial(attention(fold_spatial(x), rope=rope), x.shape[1])
    if axis == "temporal":
        return unfold_temporal(attention(fold_temporal(x), rope=rope), x.shape[2])
    raise ValueError(f"`axis` must be one of {ATTENTION_AXES}, got {axis!r}.")


def split_head_attention(attention, x, spatial_heads, rope=None):
    """One attention over ``x (B, F, N, D)`` whose first ``spatial_heads`` heads attend
    within each frame and whose other heads attend along time (Latte variant 4).

    Uses the q/k/v and output projections of ``attention`` (an :class:`Attention`);
    ``rope`` angles ``(F, head_dim/2)`` rotate the temporal heads.
    """
    b = ops.shape(x)[0]
    f, n, d = x.shape[1], x.shape[2], x.shape[3]
    heads, dh = attention.num_heads, attention.head_dim
    hs, ht = spatial_heads, heads - spatial_heads
    flat = ops.reshape(x, (b, f * n, d))
    q, k, v = (ops.reshape(t, (b, f, n, heads, dh)) for t in attention.project_qkv(flat, flat))

    def spatial(t):  # (B, F, N, hs, Dh) -> (B*F, N, hs, Dh)
        return ops.reshape(t[:, :, :, :hs, :], (b * f, n, hs, dh))

    def temporal(t):  # (B, F, N, ht, Dh) -> (B*N, F, ht, Dh)
        return ops.reshape(ops.transpose(t[:, :, :, hs:, :], (0, 2, 1, 3, 4)), (b * n, f, ht, dh))

    out_s = ops.dot_product_attention(spatial(q), spatial(k), spatial(v))
    out_s = ops.reshape(out_s, (b, f, n, hs * dh))
    qt, kt = temporal(q), temporal(k)
    if rope is not None:
        qt, kt = apply_rope(qt, rope), apply_rope(kt, rope)
    out_t = ops.dot_product_attention(qt, kt, temporal(v))
    out_t = ops.transpose(ops.reshape(out_t, (b, n, f, ht * dh)), (0, 2, 1, 3))
    return attention.output_projection(ops.concatenate([out_s, out_t], axis=-1))


@keras.saving.register_keras_serializable(package="keras_vdiff")
class FactorizedBlock(DiTBlock):
    """adaLN-Zero block whose self-attention is spatial-only or temporal-only (Latte).

    ::

        x (B, F, N, D)
        x = x + gate1 * Attn_axis(modulate(LN(x)))        # within frames or along time
        x = x + CrossAttn(LN(x), text, mask)               # if cross_attention
        x = x + gate2 * MLP(modulate(LN(x)))

    A spatial block never mixes frames and a temporal block never mixes patch
    positions. Latte (Ma et al. 2024) interleaves them (variant 1) or stacks all
    spatial then all temporal blocks (variant 2); the thesis' Latte v2/v3 put the
    text cross-attention inside the spatial (and temporal) block before the MLP.

    Args:
        hidden_dim: token width.
        num_heads: attention heads.
        axis: ``"spatial"`` or ``"temporal"``.
        mlp_ratio: MLP expansion.
        cross_attention: add a text cross-attention sub-layer before the MLP.
        qk_norm: RMS-normalise queries and keys.

    Call:
        ``x (B, F, N, D)``, ``condition (B, D)``, ``context (B, L, Dc)``,
        ``context_mask (B, L)``, ``rope`` angles for the attended axis.

    Example:
        >>> block = FactorizedBlock(32, num_heads=4, axis="temporal")
        >>> block(keras.ops.ones((2, 4, 16, 32)), keras.ops.ones((2, 32))).shape
        (2, 4, 16, 32)
    """

    def __init__(self, hidden_dim, num_heads, axis="spatial", mlp_ratio=4.0, cross_attention=False,
                 qk_norm=False, **kwargs):
        if axis not in ATTENTION_AXES:
            raise ValueError(f"`axis` must be one of {ATTENTION_AXES}, got {axis!r}.")
        super().__init__(hidden_dim, num_heads, mlp_ratio=mlp_ratio, cross_attention=cross_attention,
                         qk_norm=qk_norm, **kwargs)
        self.axis = axis

    def call(self, x, condition, context=None, context_mask=None, rope=None, active=True):
        """``active=False`` passes ``x`` through unchanged (Latte's ``temporal_attention=False``: the
        block stays in the model with its weights, it just does not run)."""
        if not active:
            return ops.copy(x)
        return super().call(x, condition, context, context_mask, rope=rope)

    def attend(self, h, rope=None):
        return attend_along(self.attention, h, self.axis, rope)

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class SpatioTemporalBlock(DiTBlock):
    """Spatial then temporal self-attention inside one block (Latte variant 3; GenTron).

    ::

        x (B, F, N, D)
        x = x + gate_s * SpatialAttn(modulate(LN(x)))
        x = x + CrossAttn(LN(x), text, mask)                       # if cross_attention
        x = x + gate_t * TemporalAttn(modulate(LN(x)))             # temporal_adaln=True
        x = x + TemporalAttn(LN(x))  (zero-init output)            # temporal_adaln=False (GenTron)
        x = x + gate_m * MLP(modulate(LN(x)))

    With ``temporal_adaln=True`` the temporal attention has its own adaLN-Zero
    shift/scale/gate (a second modulation with 3 vectors); otherwise it uses an
    affine LayerNorm and a zero-initialised output projection. Either way the
    block is the identity at initialisation.

    Args:
        hidden_dim, num_heads, mlp_ratio, cross_attention, qk_norm: as in :class:`DiTBlock`.
        temporal_adaln: adaLN-Zero modulation for the temporal attention.

    Call:
        ``x (B, F, N, D)``, ``condition (B, D)``, ``context``, ``context_mask``,
        ``temporal_rope`` angles ``(F, head_dim/2)`` for the temporal attention.

    Example:
        >>> block = SpatioTemporalBlock(32, num_heads=4)
        >>> block(keras.ops.ones((2, 4, 16, 32)), keras.ops.ones((2, 32))).shape
        (2, 4, 16, 32)
    """

    def __init__(self, hidden_dim, num_heads, mlp_ratio=4.0, cross_attention=False, qk_norm=False,
                 temporal_adaln=True, **kwargs):
        super().__init__(hidden_dim, num_heads, mlp_ratio=mlp_ratio, cross_attention=cross_attention,
                         qk_norm=qk_norm, **kwargs)
        self.temporal_adaln = temporal_adaln
        self.norm_temporal = layer_norm("norm_temporal", affine=not temporal_adaln)
        self.temporal_attention = Attention(
            num_heads, hidden_dim // num_heads, qk_norm=qk_norm, zero_init_output=not temporal_adaln,
            name="temporal_attention", dtype=self.dtype_policy,
        )
        if temporal_adaln:
            self.temporal_modulation = AdaLNModulation(
                hidden_dim, 3, name="temporal_modulation", dtype=self.dtype_policy
            )

    def build(self, x_shape, condition_shape=None, context_shape=None, context_mask_shape=None,
              temporal_rope_shape=None):
        super().build(x_shape, condition_shape, context_shape, context_mask_shape)
        self.norm_temporal.build(x_shape)
        self.temporal_attention.build(x_shape)
        if self.temporal_adaln:
            self.temporal_modulation.build(condition_shape or (None, self.hidden_dim))
        self.built = True

    def call(self, x, condition, context=None, context_mask=None, temporal_rope=None):
        return super().call(x, condition, context, context_mask, rope=temporal_rope)

    def attend(self, h, rope=None):
        return attend_along(self.attention, h, "spatial")  # `rope` is the temporal attention's

    def before_mlp(self, x, condition, rope=None):
        h = normed(self.norm_temporal, x)
        if self.temporal_adaln:
            shift_t, scale_t, gate_t = self.temporal_modulation(condition)
            h = attend_along(self.temporal_attention, modulate(h, shift_t, scale_t), "temporal", rope)
            return x + expand_to(gate_t, x) * h
        return x + attend_along(self.temporal_attention, h, "temporal", rope)

    def get_config(self):
        config = super().get_config()
        config.update(temporal_adaln=self.temporal_adaln)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class GenTronBlock(SpatioTemporalBlock):
    """The GenTron block of the thesis (Chen et al. 2024 GenTron; thesis Section 3.2.1).

    ::

        g1, b1, a1, g2, b2, a2 = adaLN(c)          c = t_emb + pooled_text
        x = x + a1 * SpatialAttn(LN(x) * (1 + g1) + b1)
        x = x + CrossAttn(LN(x), text, mask)        # key padding mask on the text
        x = x + TemporalAttn(LN(x))                 # no adaLN; zero-init output
        x = x + a2 * MLP(LN(x) * (1 + g2) + b2)

    A :class:`SpatioTemporalBlock` with ``temporal_adaln=False``.

    Args:
        hidden_dim, num_heads, mlp_ratio, qk_norm: as in :class:`DiTBlock`.
        cross_attention: text cross-attention (True for text conditioning).

    Example:
        >>> block = GenTronBlock(32, num_heads=4, cross_attention=True)
        >>> x, c = keras.ops.ones((2, 4, 16, 32)), keras.ops.ones((2, 32))
        >>> block(x, c, context=keras.ops.ones((2, 7, 24)), context_mask=keras.ops.ones((2, 7))).shape
        (2, 4, 16, 32)
    """

    def __init__(self, hidden_dim, num_heads, mlp_ratio=4.0, cross_attention=True, qk_norm=False, **kwargs):
        kwargs.pop("temporal_adaln", None)
        super().__init__(hidden_dim, num_heads, mlp_ratio=mlp_ratio, cross_attention=cross_attention,
                         qk_norm=qk_norm, temporal_adaln=False, **kwargs)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class SplitHeadBlock(DiTBlock):
    """adaLN-Zero block with one attention whose heads are split between space and time.

    Latte variant 4 ("inner-block decomposition" of the heads): the first
    ``spatial_heads`` heads attend within each frame, the others along time at
    each patch position; their outputs are concatenated and projected together.
    After one block a token therefore depends on its own frame and its own
    position over time, but not on other positions of other frames.

    Args:
        hidden_dim, num_heads, mlp_ratio, cross_attention, qk_norm: as in :class:`DiTBlock`.
        spatial_heads: heads used for spatial attention (default half, rounded down);
            ``1 <= spatial_heads < num_heads``.

    Call:
        ``x (B, F, N, D)``, ``condition (B, D)``, ``context``, ``context_mask``,
        ``temporal_rope`` angles ``(F, head_dim/2)`` for the temporal heads.

    Example:
        >>> block = SplitHeadBlock(32, num_heads=4)
        >>> block(keras.ops.ones((2, 4, 16, 32)), keras.ops.ones((2, 32))).shape
        (2, 4, 16, 32)
    """

    def __init__(self, hidden_dim, num_heads, mlp_ratio=4.0, cross_attention=False, qk_norm=False,
                 spatial_heads=None, **kwargs):
        super().__init__(hidden_dim, num_heads, mlp_ratio=mlp_ratio, cross_attention=cross_attention,
                         qk_norm=qk_norm, **kwargs)
        spatial_heads = num_heads // 2 if spatial_heads is None else spatial_heads
        if not isinstance(spatial_heads, int) or not 1 <= spatial_heads < num_heads:
            raise ValueError(
                f"`spatial_heads` must be an integer in [1, num_heads={num_heads}), got {spatial_heads!r}."
            )
        self.spatial_heads = spatial_heads

    def build(self, x_shape, condition_shape=None, context_shape=None, context_mask_shape=None,
              temporal_rope_shape=None):
        super().build(x_shape, condition_shape, context_shape, context_mask_shape)

    def call(self, x, condition, context=None, context_mask=None, temporal_rope=None):
        return super().call(x, condition, context, context_mask, rope=temporal_rope)

    def attend(self, h, rope=None):
        return split_head_attention(self.attention, h, self.spatial_heads, rope)

    def get_config(self):
        config = super().get_config()
        config.update(spatial_heads=self.spatial_heads)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class TextCrossAttentionBlock(keras.layers.Layer):
    """Residual text cross-attention ``x + CrossAttn(LN(x), text, mask)`` (GenTron / PixArt style).

    The thesis' Latte v1 places this block between each spatial and temporal
    block. The output projection starts at zero, so the block starts as the
    identity; a fully masked (null) prompt contributes exactly zero.

    Args:
        hidden_dim: token width.
        num_heads: attention heads.
        qk_norm: RMS-normalise queries and keys.

    Call:
        ``x (B, F, N, D)`` or ``(B, N, D)``, ``context (B, L, Dc)``, ``context_mask (B, L)``.

    Example:
        >>> block = TextCrossAttentionBlock(32, num_heads=4)
        >>> block(keras.ops.ones((2, 4, 16, 32)), keras.ops.ones((2, 7, 24))).shape
        (2, 4, 16, 32)
    """

    def __init__(self, hidden_dim, num_heads, qk_norm=False, **kwargs):
        super().__init__(**kwargs)
        check_divisible(hidden_dim, "hidden_dim", num_heads, "num_heads")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.qk_norm = qk_norm
        self.norm = layer_norm("norm", affine=True)
        self.attention = Attention(
            num_heads, hidden_dim // num_heads, qk_norm=qk_norm, zero_init_output=True, name="attention",
            dtype=self.dtype_policy,
        )

    def build(self, x_shape, context_shape=None, context_mask_shape=None):
        self.norm.build(x_shape)
        self.attention.build((None, None, self.hidden_dim), context_shape or (None, None, self.hidden_dim))
        self.built = True

    def call(self, x, context, context_mask=None):
        return x + text_cross_attention(self.norm, self.attention, x, context, context_mask)

    def compute_output_shape(self, x_shape, *args, **kwargs):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, num_heads=self.num_heads, qk_norm=self.qk_norm)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class MMDiTBlock(keras.layers.Layer):
    """Two-stream MM-DiT block: joint attention over video and text tokens (SD3; CogVideoX).

    ::

        [a, b, g, d, e, z]_x = adaLN_x(c);   [a, b, g, d, e, z]_txt = adaLN_txt(c)
        hx = LN(x) * (1 + a_x) + b_x;         ht = LN(txt) * (1 + a_t) + b_t
        Ax, At = JointAttn(hx, ht, text_mask)               # one softmax over both streams
        x = x + g_x * Ax;    x = x + z_x * MLP_x(LN(x) * (1 + d_x) + e_x)
        txt = txt + g_t * At; txt = txt + z_t * MLP_t(LN(txt) * (1 + d_t) + e_t)

    Video and text keep separate projections, MLPs and modulations (the
    "expert" adaLN of CogVideoX); padded text tokens are never attended to.
    All modulations are zero-initialised, so the block starts as the identity.

    Args:
        hidden_dim: width of both streams (project the text to it first).
        num_heads: attention heads.
        mlp_ratio: MLP expansion.
        qk_norm: RMS-normalise queries and keys (SD3 does).
        context_output: update the text stream. The last block of a model
            sets it False (SD3's ``context_pre_only``): its text stream only
            gives keys and values, has no MLP (its unused attention output
            projection is frozen), and the text is returned unchanged.

    Call:
        ``x (B, N, D)``, ``context (B, L, D)``, ``condition (B, D)``,
        ``context_mask (B, L)``, ``rope`` angles ``(N, head_dim/2)`` for the video
        tokens -> ``(x, context)``.

    Example:
        >>> block = MMDiTBlock(32, num_heads=4)
        >>> x, txt = block(keras.ops.ones((2, 64, 32)), keras.ops.ones((2, 7, 32)), keras.ops.ones((2, 32)))
    """

    def __init__(self, hidden_dim, num_heads, mlp_ratio=4.0, qk_norm=False, context_output=True, **kwargs):
        super().__init__(**kwargs)
        check_divisible(hidden_dim, "hidden_dim", num_heads, "num_heads")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.qk_norm = qk_norm
        self.context_output = context_output
        self.attention = JointAttention(
            num_heads, hidden_dim // num_heads, qk_norm=qk_norm, name="attention", dtype=self.dtype_policy
        )
        self.streams = ("x", "context") if context_output else ("x",)
        for stream in ("x", "context"):
            setattr(self, f"{stream}_norm1", layer_norm(f"{stream}_norm1"))
            count = 6 if stream in self.streams else 2  # a text stream without output only needs shift, scale
            setattr(self, f"{stream}_modulation",
                    AdaLNModulation(hidden_dim, count, name=f"{stream}_modulation", dtype=self.dtype_policy))
        for stream in self.streams:
            setattr(self, f"{stream}_norm2", layer_norm(f"{stream}_norm2"))
            setattr(self, f"{stream}_mlp", MLP(hidden_dim, mlp_ratio, name=f"{stream}_mlp", dtype=self.dtype_policy))

    def build(self, x_shape, context_shape=None, condition_shape=None, context_mask_shape=None, rope_shape=None):
        context_shape = context_shape or (None, None, self.hidden_dim)
        condition_shape = condition_shape or (None, self.hidden_dim)
        self.attention.build(x_shape, context_shape)
        if not self.context_output:
            # The text attention output is never used: keep it out of training (no gradient exists).
            self.attention.context_attention.output_projection.trainable = False
        for name, shape in (("x", x_shape), ("context", context_shape)):
            getattr(self, f"{name}_norm1").build(shape)
            getattr(self, f"{name}_modulation").build(condition_shape)
            if name in self.streams:
                getattr(self, f"{name}_norm2").build(shape)
                getattr(self, f"{name}_mlp").build(shape)
        self.built = True

    def __call__(self, x, context, *args, **kwargs):
        # Both residual streams get the JAX gradient boundary of `DiTBlock.__call__` (`layers/gradient_boundary.py`):
        # a joint-attention VideoDiT's compiled gradient was quadratic in depth without it.
        return super().__call__(gradient_boundary(x), gradient_boundary(context), *args, **kwargs)

    def call(self, x, context, condition, context_mask=None, rope=None):
        inputs = {"x": x, "context": context}
        mods, modulated = {}, {}
        for name, t in inputs.items():
            mods[name] = getattr(self, f"{name}_modulation")(condition)
            h = ops.cast(getattr(self, f"{name}_norm1")(t), t.dtype)
            modulated[name] = modulate(h, mods[name][0], mods[name][1])
        attended = dict(zip(
            ("x", "context"),
            self.attention(modulated["x"], modulated["context"], context_mask=context_mask, rope=rope),
        ))
        outputs = dict(inputs)
        for name in self.streams:
            t = inputs[name]
            _, _, gate1, shift2, scale2, gate2 = mods[name]
            t = t + expand_to(gate1, t) * attended[name]
            h = modulate(ops.cast(getattr(self, f"{name}_norm2")(t), t.dtype), shift2, scale2)
            outputs[name] = t + expand_to(gate2, t) * getattr(self, f"{name}_mlp")(h)
        return outputs["x"], outputs["context"]

    def compute_output_shape(self, x_shape, context_shape=None, *args, **kwargs):
        return tuple(x_shape), tuple(context_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, qk_norm=self.qk_norm,
            context_output=self.context_output,
        )
        return config



@keras.saving.register_keras_serializable(package="keras_vdiff")
class ExpertAdaLNBlock(keras.layers.Layer):
    """CogVideoX's block: text and video tokens in one full attention, one adaLN "expert" per modality.

    ::

        [b, a, g, b_t, a_t, g_t]_k = adaLN_k(c)          k = 1, 2 (one Dense each: video half, text half)
        h = [LN1(txt) * (1 + a_t) + b_t ; LN1(x) * (1 + a) + b]     (text first, one sequence)
        A = Attn(h)                       full attention, QK LayerNorm, RoPE angles on the video tokens
        x = x + g * A_video;              txt = txt + g_t * A_text
        h = [LN2(txt) ... ; LN2(x) ...];  M = MLP(h)
        x = x + g' * M_video;             txt = txt + g'_t * M_text

    Unlike :class:`MMDiTBlock` the two modalities share the attention, MLP and
    LayerNorm weights; only the modulation (shift, scale, gate) differs between
    them: the expert adaptive LayerNorm of CogVideoX (Yang et al. 2024,
    arXiv:2408.06072; diffusers' ``CogVideoXBlock``). No attention mask: padded
    text tokens are attended to, as in CogVideoX.

    Args:
        hidden_dim: width of both modalities (project the text to it first).
        num_heads: attention heads.
        mlp_ratio: MLP expansion.
        qk_norm: the attention's query / key norm (:class:`Attention`; CogVideoX ``"layer_norm"``).
        use_bias: biases on the q/k/v projections.
        norm_epsilon: epsilon of the two LayerNorms.
        norm_affine: learned scale and offset on the two LayerNorms (applied before the modulation).
        mlp_activation: the MLP's activation (``MLP_ACTIVATIONS``).

    Call:
        ``x (B, N, D)``, ``context (B, L, D)``, ``condition (B, Dc)``, ``rope`` angles
        ``(L + N, head_dim / 2)`` of the joined sequence (zero rows for the text: no rotation)
        -> ``(x, context)``.

    Example:
        >>> block = ExpertAdaLNBlock(32, num_heads=4)
        >>> x, txt = block(keras.ops.ones((2, 64, 32)), keras.ops.ones((2, 7, 32)), keras.ops.ones((2, 16)))
    """

    def __init__(self, hidden_dim, num_heads, mlp_ratio=4.0, qk_norm="layer_norm", use_bias=True,
                 norm_epsilon=1e-5, norm_affine=True, mlp_activation="gelu_tanh", **kwargs):
        super().__init__(**kwargs)
        check_divisible(hidden_dim, "hidden_dim", num_heads, "num_heads")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.qk_norm = qk_norm
        self.use_bias = use_bias
        self.norm_epsilon = norm_epsilon
        self.norm_affine = norm_affine
        self.mlp_activation = mlp_activation
        self.attention = Attention(num_heads, hidden_dim // num_heads, use_bias=use_bias, qk_norm=qk_norm,
                                   name="attention", dtype=self.dtype_policy)
        self.mlp = MLP(hidden_dim, mlp_ratio, activation=mlp_activation, name="mlp", dtype=self.dtype_policy)
        for k in (1, 2):  # each modulation: video shift, scale, gate, then the text's
            setattr(self, f"norm{k}", layer_norm(f"norm{k}", affine=norm_affine, epsilon=norm_epsilon))
            setattr(self, f"modulation{k}",
                    AdaLNModulation(hidden_dim, 6, name=f"modulation{k}", dtype=self.dtype_policy))

    def build(self, x_shape, context_shape=None, condition_shape=None, rope_shape=None):
        tokens = (None, None, self.hidden_dim)
        self.attention.build(tokens)
        self.mlp.build(tokens)
        for k in (1, 2):
            getattr(self, f"norm{k}").build(tokens)
            getattr(self, f"modulation{k}").build(condition_shape or (None, self.hidden_dim))
        self.built = True

    def __call__(self, x, context, *args, **kwargs):
        # Both residual streams get the JAX gradient boundary of `MMDiTBlock.__call__` (`layers/gradient_boundary.py`).
        return super().__call__(gradient_boundary(x), gradient_boundary(context), *args, **kwargs)

    def call(self, x, context, condition, rope=None):
        length = context.shape[1]
        shift, scale, gate, text_shift, text_scale, text_gate = self.modulation1(condition)
        h = ops.concatenate([modulate(normed(self.norm1, context), text_shift, text_scale),
                             modulate(normed(self.norm1, x), shift, scale)], axis=1)
        attended = self.attention(h, rope=rope)
        x = x + expand_to(gate, x) * attended[:, length:]
        context = context + expand_to(text_gate, context) * attended[:, :length]
        shift, scale, gate, text_shift, text_scale, text_gate = self.modulation2(condition)
        h = ops.concatenate([modulate(normed(self.norm2, context), text_shift, text_scale),
                             modulate(normed(self.norm2, x), shift, scale)], axis=1)
        fed = self.mlp(h)
        return x + expand_to(gate, x) * fed[:, length:], context + expand_to(text_gate, context) * fed[:, :length]

    def compute_output_shape(self, x_shape, context_shape=None, *args, **kwargs):
        return tuple(x_shape), tuple(context_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, qk_norm=self.qk_norm,
            use_bias=self.use_bias, norm_epsilon=self.norm_epsilon, norm_affine=self.norm_affine,
            mlp_activation=self.mlp_activation,
        )
        return config
