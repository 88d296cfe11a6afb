"""Latte: Latent Diffusion Transformer for video (Ma et al. 2024, arXiv:2401.03048).

::

    latents (B, F, H, W, C) -> PatchEmbedding (per frame, or tubelets of ``tubelet_size`` frames)
                            -> tokens (B, F', N, D) + 2D sin-cos (spatial)
    c = TimestepEmbedding(t) (+ LabelEmbedding(y) | + PooledTextEmbedding(pooled_text))
    blocks (one of the paper's four spatio-temporal decompositions, ``variant``):
        1: spatial, temporal, spatial, temporal, ...       (interleaved; the paper's best)
        2: all spatial blocks, then all temporal blocks    (late fusion)
        3: spatial then temporal attention inside each block
        4: each attention's heads split between spatial and temporal
    temporal position: 1D sin-cos added once before the first temporal attention
                       (or RoPE on every temporal attention)
    FinalLayer(tokens, c) -> Unpatchify -> (B, F, H, W, C_out)

``adaln="single"`` is the released Latte-1's form (PixArt-alpha's adaLN-single,
diffusers' ``LatteTransformer3DModel``): one shared ``SiLU -> Dense(6D)`` of
``c`` for the whole network, a learned ``(6, D)`` table per block and PixArt's
final layer (``shift, scale = table + c``); with ``caption_projection`` the text
tokens pass an ``MLP(text_dim -> D -> D)`` first, and the cross-attention
(``text_placement="v2"``) has no pre-norm (``cross_attention_norm=False``).

Text conditioning follows the thesis (seed 000, Section 3.3.1): the pooled
prompt enters through adaLN (``c = t_emb + y_pool``) and the token embeddings
through masked cross-attention, placed ``"v1"`` in a separate block between
each spatial and temporal block, ``"v2"`` inside the spatial block (before its
MLP) or ``"v3"`` inside both the spatial and the temporal blocks.
"""

import keras
from keras import ops

from keras_vdiff.layers.embeddings import rope_frequencies, sincos_embedding_1d, sincos_embedding_2d
from keras_vdiff.layers.conditioning import ConditionEmbedding, check_conditioning
from keras_vdiff.layers.modulation import MODULATIONS, AdaLNModulation, output_head
from keras_vdiff.layers.patching import PatchEmbedding
from keras_vdiff.layers.transformer import MLP_ACTIVATIONS, MLP
from keras_vdiff.layers.embeddings import SINCOS_2D_ORDERS
from keras_vdiff.layers.video_blocks import FactorizedBlock, SpatioTemporalBlock, SplitHeadBlock, TextCrossAttentionBlock
from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.models.native_sizes import unpatchify_at
from keras_vdiff.validation import check_int

# The paper's model sizes (DiT's; Latte Table / official code): depth, width, heads.
LATTE_SIZES = {
    "small": dict(num_layers=12, hidden_dim=384, num_heads=6),
    "base": dict(num_layers=12, hidden_dim=768, num_heads=12),
    "large": dict(num_layers=24, hidden_dim=1024, num_heads=16),
    "xlarge": dict(num_layers=28, hidden_dim=1152, num_heads=16),
}
VARIANTS = (1, 2, 3, 4)
TEXT_PLACEMENTS = ("v1", "v2", "v3")
TEMPORAL_POSITIONS = ("sincos", "rope")


def check_choice(name, value, valid):
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise ValueError(f"`{name}` must be one of {valid}, got {value!r}.")


def check_video_transformer(input_shape, patch_size, tubelet_size, hidden_dim, num_layers, num_heads):
    """Validate the shared size arguments of the video transformers; returns ``(F, H, W, C)``."""
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (input_shape,)
    if len(shape) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise ValueError(
            f"`input_shape` must be (frames, height, width, channels) of positive ints, got {input_shape!r}."
        )
    for name, value in (("patch_size", patch_size), ("tubelet_size", tubelet_size),
                        ("num_layers", num_layers), ("num_heads", num_heads), ("hidden_dim", hidden_dim)):
        check_int(value, name)
    frames, height, width, _ = shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"`input_shape` height/width {(height, width)} must be divisible by `patch_size`={patch_size}."
        )
    if frames % tubelet_size:
        raise ValueError(f"`input_shape` frames={frames} must be divisible by `tubelet_size`={tubelet_size}.")
    if hidden_dim % num_heads or hidden_dim % 4:
        raise ValueError(f"`hidden_dim`={hidden_dim} must be divisible by `num_heads`={num_heads} and by 4.")
    return shape


@keras.saving.register_keras_serializable(package="keras_vdiff")
class Latte(VideoBackbone):
    """Latte video diffusion transformer with factorized spatial / temporal attention.

    Reference: Ma et al., "Latte: Latent Diffusion Transformer for Video
    Generation", 2024 (arXiv:2401.03048), and the thesis' text-conditioned
    re-implementation (seed 000, Sections 3.2.2 and 3.3.1, Appendix 7.2-7.4).

    Args:
        input_shape: latent video shape ``(frames, height, width, channels)``.
        patch_size: spatial patch size (2, 4 or 8 in the paper).
        tubelet_size: temporal patch size; 1 is the paper's "uniform frame
            patch embedding", >1 its "compression frame" (tubelet) embedding.
        hidden_dim, num_heads, mlp_ratio: transformer width.
        num_layers: number of transformer blocks. Variants 1 and 2 count
            spatial and temporal blocks separately (must be even: Latte-XL has
            28 = 14 spatial + 14 temporal); variants 3 and 4 count blocks that
            hold both kinds of attention.
        variant: 1, 2, 3 or 4 (see the module docstring).
        conditioning: ``None``, ``"class"`` or ``"text"``.
        num_classes: classes for ``"class"`` (label ``num_classes`` is the null class).
        text_dim: width of ``text_embeddings`` / ``pooled_text`` for ``"text"``.
        text_placement: the thesis' placement of the text cross-attention
            (variants 1 and 2): ``"v1"`` a separate residual cross-attention
            block after every spatial block (in variant 1 that is between the
            spatial and the temporal block of each pair), ``"v2"`` inside every
            spatial block before its MLP, ``"v3"`` inside every spatial and
            temporal block. Variants 3 and 4 always put one cross-attention
            inside each block after its (spatial) self-attention and accept only ``"v1"``.
        temporal_position: ``"sincos"`` (absolute 1D table, added once) or
            ``"rope"`` (rotary angles on every temporal attention).
        spatial_heads: variant 4 only, heads given to spatial attention
            (default half).
        qk_norm: RMS-normalise queries and keys.
        learn_sigma: also output the improved-DDPM variance channels.
        class_dropout_prob: in-model label dropping (keep 0 with ``VideoDiffusion``).
        adaln: ``"zero"`` (adaLN-Zero per block, default) or ``"single"``
            (adaLN-single and PixArt's final layer; variants 1 and 2).
        caption_projection: pass the text tokens through ``MLP(text_dim -> D -> D)``
            (GELU-tanh) before the cross-attentions (PixArt, Latte-1).
        cross_attention_norm: LayerNorm before the in-block cross-attentions
            (``text_placement`` v2 / v3, variants 3 / 4); Latte-1 has none.
        pooled_text: add the pooled prompt to ``c`` (the thesis); ``False``
            conditions on the text through cross-attention only (Latte-1;
            the ``pooled_text`` input is then accepted and unused).
        pos_embed_order: channel layout of the spatial sin-cos table,
            ``"rows_first"`` or ``"columns_first"`` (diffusers' layout).
        interpolation_scale: spatial positions are divided by it (diffusers:
            ``max(sample_size // 64, 1)``).
        mlp_activation: ``"gelu_tanh"``, ``"gelu"`` or ``"geglu"``.
        norm_epsilon: epsilon of the blocks' LayerNorms.
        temporal_attention: ``False`` skips the temporal blocks (their weights
            stay, so a video model can generate single images; diffusers'
            ``enable_temporal_attentions=False``). Variants 1 and 2.
        dtype: dtype policy.

    Inputs: ``latents (B, F, H, W, C)``, ``timesteps (B,)`` and the condition
    (``class_labels`` or ``text_embeddings``, ``text_mask``, ``pooled_text``).
    Output: ``(B, F, H, W, out_channels)``.

    Example:
        >>> model = Latte(input_shape=(2, 8, 8, 1), patch_size=2, hidden_dim=32, num_layers=2,
        ...               num_heads=4, conditioning="class", num_classes=10, learn_sigma=False)
        >>> model({"latents": keras.ops.zeros((2, 2, 8, 8, 1)), "timesteps": keras.ops.ones((2,)),
        ...        "class_labels": keras.ops.array([1, 10])}).shape
        (2, 2, 8, 8, 1)
    """

    CONFIG_KEYS = (
        "input_shape", "patch_size", "tubelet_size", "hidden_dim", "num_layers", "num_heads", "mlp_ratio",
        "variant", "conditioning", "num_classes", "text_dim", "text_placement", "temporal_position",
        "spatial_heads", "qk_norm", "learn_sigma", "class_dropout_prob", "adaln", "caption_projection",
        "cross_attention_norm", "pooled_text", "pos_embed_order", "interpolation_scale", "mlp_activation",
        "norm_epsilon", "temporal_attention",
    )
    native_sizes = True  # any frame count / height / width of the patches (`at_shape`)

    def __init__(
        self,
        input_shape=(16, 32, 32, 4), patch_size=2, tubelet_size=1,
        hidden_dim=1152, num_layers=28, num_heads=16, mlp_ratio=4.0,
        variant=1,
        conditioning="class", num_classes=None, text_dim=None,
        text_placement="v1",
        temporal_position="sincos",
        spatial_heads=None,
        qk_norm=False, learn_sigma=True, class_dropout_prob=0.0,
        adaln="zero", caption_projection=False, cross_attention_norm=True, pooled_text=True,
        pos_embed_order="rows_first", interpolation_scale=1.0, mlp_activation="gelu_tanh", norm_epsilon=1e-6,
        temporal_attention=True, dtype=None, **kwargs,
    ):
        frames, height, width, in_channels = check_video_transformer(
            input_shape, patch_size, tubelet_size, hidden_dim, num_layers, num_heads
        )
        check_choice("variant", variant, VARIANTS)
        check_choice("text_placement", text_placement, TEXT_PLACEMENTS)
        check_choice("temporal_position", temporal_position, TEMPORAL_POSITIONS)
        check_conditioning(conditioning, num_classes, text_dim)
        check_choice("adaln", adaln, MODULATIONS)
        check_choice("pos_embed_order", pos_embed_order, SINCOS_2D_ORDERS)
        check_choice("mlp_activation", mlp_activation, MLP_ACTIVATIONS)
        if not temporal_attention and variant not in (1, 2):
            raise ValueError(f"`temporal_attention=False` applies to variants 1 and 2, got variant={variant}.")
        if adaln == "single" and variant not in (1, 2):
            raise ValueError(f"`adaln='single'` is built for variants 1 and 2, got variant={variant}.")
        if (caption_projection or not pooled_text) and conditioning != "text":
            raise ValueError(
                "`caption_projection=True` and `pooled_text=False` apply to `conditioning='text'`, got "
                f"conditioning={conditioning!r}."
            )
        if not cross_attention_norm and conditioning == "text" and variant in (1, 2) and text_placement == "v1":
            raise ValueError(
                "`cross_attention_norm=False` applies to cross-attention inside the blocks (text_placement "
                "'v2' / 'v3'); the 'v1' text blocks keep their LayerNorm."
            )
        if variant in (1, 2) and num_layers % 2:
            raise ValueError(
                f"`num_layers`={num_layers} must be even for variant {variant} (spatial + temporal blocks)."
            )
        if variant in (3, 4) and text_placement != "v1":
            raise ValueError(
                f"`text_placement`={text_placement!r} applies to variants 1 and 2; variant {variant} has one "
                "cross-attention inside each block: use 'v1'."
            )
        head_dim = hidden_dim // num_heads
        if temporal_position == "rope" and head_dim % 2:
            raise ValueError(f"`temporal_position='rope'` needs an even head width, got {head_dim}.")
        out_channels = in_channels * (2 if learn_sigma else 1)
        grid = (height // patch_size, width // patch_size)
        token_frames = frames // tubelet_size
        text = conditioning == "text"

        # === Layers ===
        self.patch_embedding = PatchEmbedding(
            patch_size, hidden_dim, tubelet_size=tubelet_size, name="patch_embedding", dtype=dtype
        )
        self.condition_embedding = ConditionEmbedding(
            hidden_dim, conditioning if pooled_text else None, num_classes, class_dropout_prob,
            name="condition_embedding", dtype=dtype,
        )
        if adaln == "single":
            self.shared_modulation = AdaLNModulation(
                6 * hidden_dim, 1, zero_init=False, name="shared_modulation", dtype=dtype
            )
        if caption_projection:
            self.caption_projector = MLP(
                text_dim, output_dim=hidden_dim, inner_dim=hidden_dim, name="caption_projection", dtype=dtype
            )
        common = dict(mlp_ratio=mlp_ratio, qk_norm=qk_norm, modulation=adaln, cross_attention_norm=cross_attention_norm,
                      norm_epsilon=norm_epsilon, mlp_activation=mlp_activation, dtype=dtype)
        # `layout` lists (kind, block) in call order; kind tells how to call it.
        layout = []
        if variant in (1, 2):
            pairs = num_layers // 2
            if variant == 1:
                order = [(axis, i) for i in range(pairs) for axis in ("spatial", "temporal")]
            else:
                order = [("spatial", i) for i in range(pairs)] + [("temporal", i) for i in range(pairs)]
            for axis, i in order:
                inner_cross = text and (
                    text_placement == "v3" or (text_placement == "v2" and axis == "spatial")
                )
                layout.append(("factorized_" + axis, FactorizedBlock(
                    hidden_dim, num_heads, axis=axis, cross_attention=inner_cross,
                    name=f"{axis}_block_{i}", **common,
                )))
                if text and text_placement == "v1" and axis == "spatial":
                    layout.append(("text", TextCrossAttentionBlock(
                        hidden_dim, num_heads, qk_norm=qk_norm, name=f"text_block_{i}", dtype=dtype
                    )))
        elif variant == 3:
            for i in range(num_layers):
                layout.append(("spatiotemporal", SpatioTemporalBlock(
                    hidden_dim, num_heads, cross_attention=text, name=f"block_{i}", **common
                )))
        else:
            for i in range(num_layers):
                layout.append(("split", SplitHeadBlock(
                    hidden_dim, num_heads, cross_attention=text, spatial_heads=spatial_heads,
                    name=f"block_{i}", **common,
                )))
        self.blocks = [block for _, block in layout]
        self.final_layer, self.unpatchify = output_head(patch_size, out_channels, grid, tubelet_size, dtype, adaln)

        self.layout_kinds = [kind for kind, _ in layout]

        # === Functional model === (`_forward`, at the training shape)
        self._build_native_graph(locals(), (frames, height, width, in_channels), dtype=dtype, **kwargs)

        # === Config ===
        self.input_shape_ = (frames, height, width, in_channels)
        self.store_config(locals(), in_channels=in_channels, out_channels=out_channels,
                          latent_shape=(frames, height, width, in_channels))

    def _forward(self, inputs, latent_shape):
        """The forward pass at ``latent_shape`` (its positions computed for that shape; ``at_shape``)."""
        token_frames, grid = self._token_grid(latent_shape)
        latents = inputs["latents"]
        c = self.condition_embedding.embed(inputs)
        block_condition = self.shared_modulation(c)[0] if self.adaln == "single" else c  # (B, 6D) | (B, D)
        context = inputs.get("text_embeddings")
        if self.caption_projection:
            context = self.caption_projector(context)
        context_mask = inputs.get("text_mask")

        x = self.patch_embedding(latents)  # (B, F', N, D)
        spatial_table = sincos_embedding_2d(grid[0], grid[1], self.hidden_dim, order=self.pos_embed_order,
                                            interpolation_scale=self.interpolation_scale)
        x = x + ops.cast(spatial_table[None, None], x.dtype)
        temporal_table = sincos_embedding_1d(token_frames, self.hidden_dim)[None, :, None, :]
        head_dim = self.hidden_dim // self.num_heads
        rope = rope_frequencies(range(token_frames), head_dim) if self.temporal_position == "rope" else None
        # One frame has no temporal positions to tell apart (diffusers adds none either).
        needs_temporal_table = self.temporal_position == "sincos" and token_frames > 1
        if needs_temporal_table and self.variant in (3, 4):
            # Their first block already attends over time: add the frame table up front.
            x = x + ops.cast(temporal_table, x.dtype)
            needs_temporal_table = False
        for kind, block in zip(self.layout_kinds, self.blocks):
            if kind == "text":
                x = block(x, context, context_mask)
                continue
            if kind == "factorized_temporal" and not self.temporal_attention:
                x = block(x, block_condition, active=False)  # weights kept, block not run
                continue
            if kind == "factorized_temporal" and needs_temporal_table:
                x = x + ops.cast(temporal_table, x.dtype)
                needs_temporal_table = False
            if kind.startswith("factorized"):
                x = block(x, block_condition, context=context, context_mask=context_mask,
                          rope=rope if kind == "factorized_temporal" else None)
            else:
                x = block(x, c, context=context, context_mask=context_mask, temporal_rope=rope)
        return unpatchify_at(self.unpatchify, grid)(self.final_layer(x, c))


# === Presets === (data; registered by keras_vdiff.models)
def _latte_label(size):
    return "XL" if size == "xlarge" else size[0].upper()


LATTE_PRESETS = {
    **{
        f"latte_{size}_patch{patch}": dict(
            class_name="Latte",
            config=dict(input_shape=(16, 32, 32, 4), patch_size=patch, conditioning="class", num_classes=1000,
                        variant=1, learn_sigma=True, **dims),
            description=f"Latte-{_latte_label(size)}/{patch} (Ma et al. 2024), variant 1: 16 frames of 32x32x4 "
                        "latents, class-conditional, learned sigma; random init.",
            metadata=dict(paper="arXiv:2401.03048"),
        )
        for size, dims in LATTE_SIZES.items()
        for patch in (2, 4, 8)
    },
    "latte_thesis": dict(
        class_name="Latte",
        config=dict(input_shape=(10, 28, 28, 4), patch_size=2, hidden_dim=1152, num_layers=10, num_heads=16,
                    variant=1, conditioning="text", text_dim=512, text_placement="v1", learn_sigma=True),
        description="The thesis' text-conditioned Latte v1 (10 frames of 28x28x4 latents, patch 2, width 1152, 5 "
                    "spatial + 5 temporal blocks, CLIP-width 512 text, cross-attention between spatial and "
                    "temporal blocks; heads 16 are our choice, the thesis gives none); random init.",
        metadata=dict(paper="thesis seed 000, Sections 3.2.2, 3.3.1; arXiv:2401.03048"),
    ),
    "latte_tiny": dict(
        class_name="Latte",
        config=dict(input_shape=(2, 8, 8, 1), patch_size=2, hidden_dim=32, num_layers=2, num_heads=4,
                    variant=1, conditioning="class", num_classes=4, learn_sigma=False),
        description="A tiny Latte for tests and CPU experiments (2 frames of 8x8x1, 4 classes).",
    ),
}
