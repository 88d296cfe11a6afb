"""The read / process / write block of RIN and SnapVideo's FiT.

A small set of learned latent tokens does the heavy computation; the patch
tokens (the "interface") only exchange information with them by
cross-attention. Shape story of one :class:`LatentReadWriteBlock`::

    patches (B, G, P, Dx)   G groups of P patch tokens (a group = a spatial
                            region over all frames in FiT; G = 1 in RIN)
    latents (B, G*L, Dl)    L latents per group, flattened in group order
    cond    (B, M, Dc)      timestep token + text tokens + text registers

    0 local      patches (B*G, P, Dx)  l x [+= SelfAttn(LN); += MLP] within each group (FiT; l = 0 by default)
    1 condition  latents (B, G*L, Dl)  += CrossAttn(LN(latents), LN(cond), cond_mask); += MLP
    2 read       latents (B*G, L, Dl)  += CrossAttn(LN(latents), LN(patches of the group)); += MLP
    3 process    latents (B, G*L, Dl)  k x [+= SelfAttn(LN); += MLP]       (global over groups)
    4 write      patches (B*G, P, Dx)  += CrossAttn(LN(patches), LN(latents of the group)); += MLP

Every step is a pre-norm residual, so the write step *adds* to the patch
tokens (the thesis' pseudocode overwrote them), and every attention keeps the
batch axis apart (the thesis' first text cross-attention mixed the prompts of
a batch). Steps 0, 2 and 4 fold the groups into the batch axis, so a group's
patches only see each other and their own latents and are only written from
them; only the global step 3 mixes groups. With ``use_adaln`` (SnapVideo v2) the MLP after
step 1 and the sub-layers of step 3 are modulated by a pooled condition,
``x + gate * f(LN(x) * (1 + scale) + shift)``, adaLN-Zero initialised.

The other layers of the family sit beside this file (``grouping``, ``interface``,
``latents``, ``condition_tokens``).

References: Jabri, Fleet & Chen, "Scalable Adaptive Computation for Iterative
Generation" (RIN, 2023); Chen, Li & Hinton, "FIT: Far-reaching Interleaved
Transformers" (2023); Menapace et al., "Snap Video" (2024); the thesis seed
000, sections 3.2.3 and 7.5-7.6.
"""

import keras
from keras import ops

from keras_vdiff.layers.attention import Attention
from keras_vdiff.layers.modulation import AdaLNModulation, expand_to, modulate
from keras_vdiff.layers.normalization import layer_norm, normed
from keras_vdiff.layers.transformer import MLP
from keras_vdiff.validation import check_divisible, check_int


@keras.saving.register_keras_serializable(package="keras_vdiff")
class PreNormResidual(keras.layers.Layer):
    """``x + f(LN(x))``, or with a pooled condition ``x + gate * f(LN(x) * (1 + scale) + shift)``.

    A sub-layer of :class:`LatentReadWriteBlock`. ``inner`` is an :class:`Attention`
    (called with the optional ``context`` / ``mask``) or an :class:`MLP`. With
    ``adaln`` the LayerNorm has no affine parameters and shift, scale and gate
    come from an adaLN-Zero :class:`AdaLNModulation` of the pooled condition.

    Args:
        inner: the wrapped attention or MLP layer.
        adaln: modulate by the pooled condition (SnapVideo v2).
        context_norm: also LayerNorm the attention context (read and write steps).

    Example:
        >>> res = PreNormResidual(MLP(64))
        >>> res(keras.ops.ones((2, 5, 64))).shape
        (2, 5, 64)
    """

    def __init__(self, inner, adaln=False, context_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.adaln = adaln
        self.context_norm = context_norm
        self.norm = layer_norm("norm", affine=not adaln)
        self.modulation = None
        self.context_norm_layer = layer_norm("context_norm", affine=True) if context_norm else None

    def build(self, x_shape, condition_shape=None, context_shape=None, context_mask_shape=None,
              attention_bias_shape=None):
        self.norm.build(x_shape)
        if self.adaln:
            self.modulation = AdaLNModulation(x_shape[-1], 3, name="modulation", dtype=self.dtype_policy)
            self.modulation.build(condition_shape or (None, x_shape[-1]))
        if self.context_norm_layer is not None:
            self.context_norm_layer.build(context_shape)
        if isinstance(self.inner, Attention):
            self.inner.build(x_shape, context_shape)
        else:
            self.inner.build(x_shape)
        self.built = True

    def call(self, x, condition=None, context=None, context_mask=None, attention_bias=None):
        h = normed(self.norm, x)
        if self.adaln:
            if condition is None:
                raise ValueError("This sub-layer uses adaLN: pass the pooled `condition`.")
            shift, scale, gate = self.modulation(condition)
            h = modulate(h, shift, scale)
        if isinstance(self.inner, Attention):
            if context is not None and self.context_norm_layer is not None:
                context = normed(self.context_norm_layer, context)
            out = self.inner(h, context=context, mask=context_mask, bias=attention_bias)
        else:
            out = self.inner(h)
        if self.adaln:
            out = expand_to(gate, out) * out
        return x + out

    def compute_output_shape(self, x_shape, *args, **kwargs):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            inner=keras.saving.serialize_keras_object(self.inner), adaln=self.adaln, context_norm=self.context_norm
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config, inner=keras.saving.deserialize_keras_object(config["inner"]))
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class LatentReadWriteBlock(keras.layers.Layer):
    """One read -> process -> write block of RIN / SnapVideo-FiT (see the module docstring).

    Args:
        patch_dim: width ``Dx`` of the patch tokens.
        latent_dim: width ``Dl`` of the latent tokens.
        latents_per_group: latents ``L`` that belong to each group.
        num_heads: heads of the attentions on the latents (head width ``latent_dim // num_heads``).
        patch_num_heads: heads of the write cross-attention (head width ``patch_dim // patch_num_heads``);
            defaults to ``num_heads``.
        num_latent_layers: global latent self-attention + MLP layers ``k`` (thesis: 4).
            0 keeps every group fully separate (used to test group isolation).
        num_local_layers: FiT's local layers: self-attention + MLP among the patch tokens of each
            group (groups folded into the batch), before the read step. The thesis' SnapVideo has
            none (default 0).
        mlp_ratio: MLP expansion.
        condition_attention: run step 1 (latents read the condition tokens).
        use_adaln: SnapVideo v2 adaLN-Zero on the pooled condition in the condition MLP and the
            latent self-attention layers.

    Call:
        ``patches (B, G, P, Dx)``, ``latents (B, G*L, Dl)``, ``condition_tokens (B, M, Dc)``,
        ``condition_mask (B, M)``, ``pooled_condition (B, Dp)`` (with ``use_adaln``), optional
        attention-logit biases ``read_bias (1, num_heads, L, P)`` and ``write_bias
        (1, patch_num_heads, P, L)`` (the same for every group; :class:`LatentLocalityBias`) ->
        ``(patches (B, G, P, Dx), latents (B, G*L, Dl))``.

    Example:
        >>> block = LatentReadWriteBlock(patch_dim=32, latent_dim=64, latents_per_group=4, num_heads=4)
        >>> x, z = block(keras.ops.ones((2, 4, 10, 32)), keras.ops.ones((2, 16, 64)),
        ...              keras.ops.ones((2, 3, 64)), keras.ops.ones((2, 3)))
        >>> x.shape, z.shape
        ((2, 4, 10, 32), (2, 16, 64))
    """

    def __init__(
        self,
        patch_dim,
        latent_dim,
        latents_per_group,
        num_heads,
        patch_num_heads=None,
        num_latent_layers=4,
        mlp_ratio=4.0,
        condition_attention=True,
        num_local_layers=0,
        use_adaln=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("patch_dim", patch_dim), ("latent_dim", latent_dim),
                            ("latents_per_group", latents_per_group), ("num_heads", num_heads)):
            check_int(value, name)
        patch_num_heads = patch_num_heads or num_heads
        if not isinstance(num_latent_layers, int) or num_latent_layers < 0:
            raise ValueError(f"`num_latent_layers` must be an integer >= 0, got {num_latent_layers!r}.")
        if not isinstance(num_local_layers, int) or isinstance(num_local_layers, bool) or num_local_layers < 0:
            raise ValueError(f"`num_local_layers` must be an integer >= 0, got {num_local_layers!r}.")
        check_divisible(latent_dim, "latent_dim", num_heads, "num_heads")
        check_divisible(patch_dim, "patch_dim", patch_num_heads, "patch_num_heads")
        self.patch_dim = patch_dim
        self.latent_dim = latent_dim
        self.latents_per_group = latents_per_group
        self.num_heads = num_heads
        self.patch_num_heads = patch_num_heads
        self.num_latent_layers = num_latent_layers
        self.mlp_ratio = mlp_ratio
        self.condition_attention = condition_attention
        self.use_adaln = use_adaln
        self.num_local_layers = num_local_layers

        policy = self.dtype_policy
        head = latent_dim // num_heads
        patch_head = patch_dim // patch_num_heads

        def attention(name, heads, width, **kw):
            return Attention(heads, width, name=f"{name}_attention", dtype=policy, **kw)

        def mlp(name, width):
            return MLP(width, mlp_ratio, name=f"{name}_mlp", dtype=policy)

        def residual(name, inner, adaln=False, context_norm=False):
            return PreNormResidual(inner, adaln=adaln, context_norm=context_norm, name=name, dtype=policy)

        if condition_attention:
            self.condition_cross = residual(
                "condition_cross", attention("condition", num_heads, head), context_norm=True
            )
            self.condition_mlp = residual("condition_ff", mlp("condition", latent_dim), adaln=use_adaln)
        self.local_attentions = [
            residual(f"local_self_{i}", attention(f"local_{i}", patch_num_heads, patch_head))
            for i in range(num_local_layers)
        ]
        self.local_mlps = [residual(f"local_ff_{i}", mlp(f"local_{i}", patch_dim)) for i in range(num_local_layers)]
        self.read_cross = residual("read_cross", attention("read", num_heads, head), context_norm=True)
        self.read_mlp = residual("read_ff", mlp("read", latent_dim))
        self.latent_attentions = [
            residual(f"latent_self_{i}", attention(f"latent_{i}", num_heads, head), adaln=use_adaln)
            for i in range(num_latent_layers)
        ]
        self.latent_mlps = [
            residual(f"latent_ff_{i}", mlp(f"latent_{i}", latent_dim), adaln=use_adaln)
            for i in range(num_latent_layers)
        ]
        self.write_cross = residual(
            "write_cross", attention("write", patch_num_heads, patch_head, output_dim=patch_dim), context_norm=True
        )
        self.write_mlp = residual("write_ff", mlp("write", patch_dim))

    def build(self, patches_shape, latents_shape=None, condition_tokens_shape=None, condition_mask_shape=None,
              pooled_condition_shape=None, read_bias_shape=None, write_bias_shape=None):
        pooled = pooled_condition_shape or (None, self.latent_dim)
        latent_shape = (None, None, self.latent_dim)
        patch_shape = (None, None, self.patch_dim)
        if self.condition_attention:
            self.condition_cross.build(latent_shape, pooled, condition_tokens_shape or latent_shape)
            self.condition_mlp.build(latent_shape, pooled)
        for attention, mlp in zip(self.local_attentions, self.local_mlps):
            attention.build(patch_shape)
            mlp.build(patch_shape)
        self.read_cross.build(latent_shape, pooled, patch_shape)
        self.read_mlp.build(latent_shape, pooled)
        for attention, mlp in zip(self.latent_attentions, self.latent_mlps):
            attention.build(latent_shape, pooled)
            mlp.build(latent_shape, pooled)
        self.write_cross.build(patch_shape, pooled, latent_shape)
        self.write_mlp.build(patch_shape, pooled)
        self.built = True

    def local(self, patches):
        """FiT's local layers: self-attention among each group's patch tokens only.

        ``patches (B, G, P, Dx)`` -> ``(B, G, P, Dx)``; the identity when ``num_local_layers=0``.
        """
        if not self.local_attentions:
            return patches
        groups, tokens = patches.shape[1], patches.shape[2]
        x = ops.reshape(patches, (-1, tokens, self.patch_dim))
        for attention, mlp in zip(self.local_attentions, self.local_mlps):
            x = mlp(attention(x))
        return ops.reshape(x, (-1, groups, tokens, self.patch_dim))

    def read(self, patches, latents, bias=None):
        """Step 2: every group's latents read that group's patch tokens (groups folded into the batch).

        ``patches (B, G, P, Dx)``, ``latents (B, G*L, Dl)`` -> latents ``(B, G*L, Dl)``.
        """
        groups, tokens = patches.shape[1], patches.shape[2]
        context = ops.reshape(patches, (-1, tokens, self.patch_dim))
        z = ops.reshape(latents, (-1, self.latents_per_group, self.latent_dim))
        z = self.read_mlp(self.read_cross(z, context=context, attention_bias=bias))
        return ops.reshape(z, (-1, groups * self.latents_per_group, self.latent_dim))

    def write(self, patches, latents, bias=None):
        """Step 4: every group's patch tokens read from that group's latents, added residually.

        ``patches (B, G, P, Dx)``, ``latents (B, G*L, Dl)`` -> patches ``(B, G, P, Dx)``.
        """
        groups, tokens = patches.shape[1], patches.shape[2]
        x = ops.reshape(patches, (-1, tokens, self.patch_dim))
        context = ops.reshape(latents, (-1, self.latents_per_group, self.latent_dim))
        x = self.write_mlp(self.write_cross(x, context=context, attention_bias=bias))
        return ops.reshape(x, (-1, groups, tokens, self.patch_dim))

    def call(self, patches, latents, condition_tokens=None, condition_mask=None, pooled_condition=None,
             read_bias=None, write_bias=None):
        if len(patches.shape) != 4:
            raise ValueError(f"`patches` must be grouped as (batch, groups, tokens, dim), got shape {patches.shape}.")
        expected = patches.shape[1] * self.latents_per_group
        if latents.shape[1] is not None and latents.shape[1] != expected:
            raise ValueError(
                f"`latents` has {latents.shape[1]} tokens; {patches.shape[1]} groups x "
                f"{self.latents_per_group} latents_per_group = {expected} expected."
            )
        if self.use_adaln and pooled_condition is None:
            raise ValueError("This block was built with `use_adaln=True`: pass `pooled_condition`.")
        c = pooled_condition
        if self.condition_attention:
            if condition_tokens is None:
                raise ValueError("This block was built with `condition_attention=True`: pass `condition_tokens`.")
            latents = self.condition_cross(latents, context=condition_tokens, context_mask=condition_mask)
            latents = self.condition_mlp(latents, c)
        patches = self.local(patches)
        latents = self.read(patches, latents, read_bias)
        for attention, mlp in zip(self.latent_attentions, self.latent_mlps):
            latents = mlp(attention(latents, c), c)
        return self.write(patches, latents, write_bias), latents

    def compute_output_shape(self, patches_shape, latents_shape=None, *args, **kwargs):
        return tuple(patches_shape), tuple(latents_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            patch_dim=self.patch_dim,
            latent_dim=self.latent_dim,
            latents_per_group=self.latents_per_group,
            num_heads=self.num_heads,
            patch_num_heads=self.patch_num_heads,
            num_latent_layers=self.num_latent_layers,
            mlp_ratio=self.mlp_ratio,
            condition_attention=self.condition_attention,
            use_adaln=self.use_adaln,
            num_local_layers=self.num_local_layers,
        )
        return config
