"""SnapVideo's FiT backbone: grouped patch tokens, learned latents, read / process / write.

Menapace et al., "Snap Video: Scaled Spatiotemporal Transformers for
Text-to-Video Synthesis" (2024), built on FiT (Chen & Li 2023); the thesis'
text-conditioned re-implementation (seed 000, Sections 3.2.3, 3.3.2,
Appendices 7.5-7.6)::

    latents (B, F, H, W, C) -> per-frame 2D PatchEmbedding -> (B, F, N, Dx)
                            + space-time sin-cos (frame AND position: see below)
                            -> group: G spatial regions spanning all frames -> (B, G, F*N/G, Dx)
    cond tokens (B, M, Dl) = [t_emb] (+ [label_emb] | + TextRegisterEncoder(text) = text + 16 registers
                             through 2 self-attention layers); pooled c = t_emb (+ label | + pooled text)
    z = LearnedLatents (B, G*L, Dl) (+ LayerNorm(Dense(previous_latents)): latent self-conditioning)
    num_blocks x LatentReadWriteBlock:
        z reads cond tokens; each group's latents read its patches; k global latent
        self-attention layers (adaLN on c with ``adaln``: the thesis' v2); patches read back
    FinalLayer(x, c) -> ungroup -> Unpatchify -> (B, F, H, W, C_out)
    outputs: {"output": prediction, "latents": z} (self-conditioning) or the prediction.

The thesis' SnapVideo produced static, blurry videos. Its pseudocode has
several faults this implementation avoids, each covered by a test: the patch
tokens only got a spatial position (inside a group the read and write
cross-attentions then cannot tell frames apart, so every frame receives the
same update: a static video); the latents were not carried from block to
block; the write step overwrote the patch tokens with an MLP of the latents
instead of adding to them; the first text cross-attention mixed the prompts of
a batch; and in training the latents were carried between optimisation steps
instead of coming from a first stop-gradient pass on the same batch (the
``VideoDiffusion`` task model does the latter, with probability 0.9).
"""

import keras
from keras import ops

from keras_vdiff.layers.latent_tokens import (
    ConditionTokens,
    InterfaceConv,
    LatentLocalityBias,
    LatentReadWriteBlock,
    LatentSelfConditioning,
    LearnedLatents,
    group_grid,
    group_patches,
    spacetime_position_table,
    ungroup_patches,
)
from keras_vdiff.layers.modulation import FinalLayer
from keras_vdiff.layers.patching import PatchEmbedding, Unpatchify
from keras_vdiff.layers.video_blocks import check_conditioning, condition_inputs
from keras_vdiff.models.backbone import VideoBackbone, checked_int
from keras_vdiff.models.latte import check_video_transformer
from keras_vdiff.presets.registry import register_preset


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")


def build_latent_token_network(
    model,
    input_shape,
    patch_size,
    tubelet_size,
    patch_dim,
    latent_dim,
    num_blocks,
    num_latent_layers,
    groups,
    latents_per_group,
    num_heads,
    patch_num_heads,
    mlp_ratio,
    conditioning,
    num_classes,
    text_dim,
    adaln,
    num_registers,
    text_layers,
    self_conditioning,
    learn_sigma,
    class_dropout_prob,
    dtype,
    num_local_layers=0,
    interface_conv_kernel=0,
    latent_locality=False,
):
    """Create the layers of a latent-token backbone on ``model`` and return its ``(inputs, outputs)``.

    Shared by :class:`SnapVideo` (per-frame patches, ``G`` spatial groups) and
    ``RIN`` (tubelet patches, one group). Validates every argument first.
    """
    frames, height, width, in_channels = check_video_transformer(
        input_shape, patch_size, tubelet_size, patch_dim, num_blocks, patch_num_heads
    )
    check_conditioning(conditioning, num_classes, text_dim)
    checked_int(latent_dim, "latent_dim")
    checked_int(num_heads, "num_heads")
    checked_int(latents_per_group, "latents_per_group" if groups != (1, 1) else "num_latents")
    checked_int(num_latent_layers, "num_latent_layers", minimum=0)
    checked_int(num_local_layers, "num_local_layers", minimum=0)
    checked_int(interface_conv_kernel, "interface_conv_kernel", minimum=0)
    if interface_conv_kernel % 2 == 0 and interface_conv_kernel:
        raise ValueError(f"`interface_conv_kernel` must be 0 (off) or odd, got {interface_conv_kernel}.")
    checked_int(num_registers, "num_registers", minimum=0)
    checked_int(text_layers, "text_layers", minimum=0)
    if latent_dim % num_heads:
        raise ValueError(f"`latent_dim`={latent_dim} must be divisible by `num_heads`={num_heads}.")
    for name, value in (("adaln", adaln), ("self_conditioning", self_conditioning), ("learn_sigma", learn_sigma),
                        ("latent_locality", latent_locality)):
        _check_bool(name, value)
    grid = (height // patch_size, width // patch_size)
    groups = group_grid(groups, grid)
    token_frames = frames // tubelet_size
    num_groups = groups[0] * groups[1]
    num_latents = num_groups * latents_per_group
    out_channels = in_channels * (2 if learn_sigma else 1)

    # === Layers ===
    model.patch_embedding = PatchEmbedding(
        patch_size, patch_dim, tubelet_size=tubelet_size, name="patch_embedding", dtype=dtype
    )
    model.condition_tokens = ConditionTokens(
        latent_dim, conditioning, num_classes, num_heads=num_heads, num_registers=num_registers,
        text_layers=text_layers, class_dropout_prob=class_dropout_prob, name="condition_tokens", dtype=dtype,
    )
    model.learned_latents = LearnedLatents(num_latents, latent_dim, name="learned_latents", dtype=dtype)
    model.latent_self_conditioning = (
        LatentSelfConditioning(latent_dim, name="latent_self_conditioning", dtype=dtype) if self_conditioning else None
    )
    model.blocks = [
        LatentReadWriteBlock(
            patch_dim, latent_dim, latents_per_group, num_heads, patch_num_heads=patch_num_heads,
            num_latent_layers=num_latent_layers, mlp_ratio=mlp_ratio, use_adaln=adaln,
            num_local_layers=num_local_layers, name=f"block_{i}", dtype=dtype,
        )
        for i in range(num_blocks)
    ]
    if interface_conv_kernel and groups != (1, 1):
        # A convolution over the whole token grid would let groups see each other before the global step.
        raise ValueError("`interface_conv_kernel` needs one group (RIN); FiT's groups must stay separate.")
    model.interface_convs = [
        InterfaceConv(interface_conv_kernel, grid, name=f"interface_conv_{i}", dtype=dtype)
        for i in range(num_blocks if interface_conv_kernel else 0)
    ]
    if latent_locality and groups != (1, 1):
        raise ValueError("`latent_locality` is a soft replacement for FiT's groups: it needs one group (RIN).")
    model.locality_biases = [
        LatentLocalityBias(num_latents, grid, token_frames, num_heads, patch_num_heads or num_heads,
                           name=f"locality_bias_{i}", dtype=dtype)
        for i in range(num_blocks if latent_locality else 0)
    ]
    model.final_layer = FinalLayer(
        tubelet_size * patch_size * patch_size * out_channels, name="final_layer", dtype=dtype
    )
    model.unpatchify = Unpatchify(
        patch_size, out_channels, tubelet_size=tubelet_size, grid_size=grid, name="unpatchify", dtype=dtype
    )

    # === Functional model ===
    video = keras.Input(shape=(frames, height, width, in_channels), name="latents")
    timesteps = keras.Input(shape=(), name="timesteps")
    cond = condition_inputs(conditioning, text_dim)
    inputs = {"latents": video, "timesteps": timesteps, **cond}
    if self_conditioning:
        inputs["previous_latents"] = keras.Input(shape=(num_latents, latent_dim), name="previous_latents")
    tokens, token_mask, pooled = model.condition_tokens(timesteps, **cond)

    x = model.patch_embedding(video)  # (B, F', N, Dx)
    table = spacetime_position_table(token_frames, grid[0], grid[1], patch_dim)
    x = x + ops.cast(table[None], x.dtype)
    x = group_patches(x, grid, groups)  # (B, G, P, Dx)
    z = model.learned_latents(timesteps)  # (B, G*L, Dl)
    if self_conditioning:
        z = model.latent_self_conditioning(z, inputs["previous_latents"])
    for i, block in enumerate(model.blocks):
        biases = {}
        if model.locality_biases:
            biases["read_bias"], biases["write_bias"] = model.locality_biases[i](timesteps)
        if adaln:
            x, z = block(x, z, tokens, token_mask, pooled, **biases)
        else:
            x, z = block(x, z, tokens, token_mask, **biases)
        if model.interface_convs:  # the convolution sees the token grid (B, F', N, Dx)
            x = group_patches(model.interface_convs[i](ungroup_patches(x, token_frames, grid, groups)), grid, groups)
    x = ungroup_patches(x, token_frames, grid, groups)  # (B, F', N, Dx)
    prediction = model.unpatchify(model.final_layer(x, pooled))
    outputs = {"output": prediction, "latents": z} if self_conditioning else prediction
    info = dict(
        latent_shape=(frames, height, width, in_channels),
        in_channels=in_channels,
        out_channels=out_channels,
        groups=groups,
        num_latents=num_latents,
        grid_size=grid,
    )
    return inputs, outputs, info


class LatentTokenBackbone(VideoBackbone):
    """Shared config handling of the latent-token backbones (:class:`SnapVideo`, ``RIN``).

    Subclasses list their constructor arguments in ``CONFIG_KEYS`` and call
    :meth:`_store_config` after building the functional model.
    """

    CONFIG_KEYS = ()

    def _store_config(self, arguments, info):
        for key in self.CONFIG_KEYS:
            setattr(self, key, arguments[key])
        for key, value in info.items():
            setattr(self, key, value)

    @property
    def previous_latents_shape(self):
        """``(num_latents, latent_dim)``: the per-example shape of ``previous_latents``."""
        return (self.num_latents, self.latent_dim)

    def get_config(self):
        config = super().get_config()
        config.update({key: getattr(self, key) for key in self.CONFIG_KEYS})
        config["input_shape"] = self.latent_shape
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class SnapVideo(LatentTokenBackbone):
    """SnapVideo-FiT video diffusion backbone (latent tokens over spatial groups spanning all frames).

    Reference: Menapace et al., "Snap Video" (2024, arXiv:2402.14797); Chen & Li,
    "FIT: Far-reaching Interleaved Transformers" (2023, arXiv:2305.12689); the
    thesis (seed 000), Sections 3.2.3 and 3.3.2, Appendices 7.5 (v1) and 7.6 (v2).

    Args:
        input_shape: latent video shape ``(frames, height, width, channels)``.
        patch_size: spatial patch size (per-frame 2D patches).
        patch_dim: width ``Dx`` of the patch tokens (thesis: 768).
        latent_dim: width ``Dl`` of the latent tokens (thesis: 1024).
        num_blocks: read / process / write blocks (thesis: 5).
        num_latent_layers: global latent self-attention + MLP layers per block (thesis: 4).
        num_groups: spatial regions (each over all frames): a square number
            split ``sqrt x sqrt`` (thesis: 4 or 49) or a pair ``(rows, cols)``;
            it must divide the patch grid.
        latents_per_group: latent tokens per group (the thesis gives none; ours).
        num_heads: heads of the latent attentions (head width ``latent_dim // num_heads``).
        patch_num_heads: heads of the write cross-attention (head width ``patch_dim // patch_num_heads``).
        mlp_ratio: MLP expansion.
        conditioning: ``None``, ``"class"`` or ``"text"``.
        num_classes: classes for ``"class"`` (label ``num_classes`` is the null class).
        text_dim: width of ``text_embeddings`` / ``pooled_text`` for ``"text"``.
        adaln: the thesis' v2: adaLN-Zero of the pooled condition (timestep +
            pooled text or label) in the condition MLP and the latent
            self-attention layers. ``False`` is v1 (CAD-RIN-style text only).
        num_registers: learned register tokens appended to the text (thesis: 16).
        text_layers: self-attention layers over text + registers (thesis: 2).
        self_conditioning: latent self-conditioning (input ``previous_latents``,
            output dict with ``latents``).
        num_local_layers: FiT's local layers per block: self-attention among the
            patch tokens of each group before the read step (the thesis has none: 0).
        learn_sigma: also output the improved-DDPM variance channels (thesis: yes).
        class_dropout_prob: in-model label dropping (keep 0 with ``VideoDiffusion``).
        dtype: dtype policy.

    Inputs: ``latents (B, F, H, W, C)``, ``timesteps (B,)``, the condition
    (``class_labels`` or ``text_embeddings``, ``text_mask``, ``pooled_text``) and,
    with self-conditioning, ``previous_latents (B, num_latents, latent_dim)``
    (zeros for "none": the first sampling step). Output: the prediction
    ``(B, F, H, W, out_channels)``, or with self-conditioning
    ``{"output": prediction, "latents": (B, num_latents, latent_dim)}``.

    Example:
        >>> model = SnapVideo.from_preset("snapvideo_tiny")
        >>> out = model({"latents": keras.ops.zeros((2, 4, 8, 8, 1)), "timesteps": keras.ops.ones((2,)),
        ...              "class_labels": keras.ops.array([1, 4]),
        ...              "previous_latents": keras.ops.zeros((2,) + model.previous_latents_shape)})
        >>> out["output"].shape, out["latents"].shape
        ((2, 4, 8, 8, 1), (2, 16, 32))
    """

    CONFIG_KEYS = (
        "patch_size", "patch_dim", "latent_dim", "num_blocks", "num_latent_layers", "num_groups",
        "latents_per_group", "num_heads", "patch_num_heads", "mlp_ratio", "conditioning", "num_classes", "text_dim",
        "adaln", "num_registers", "text_layers", "self_conditioning", "learn_sigma", "class_dropout_prob",
        "num_local_layers",
    )

    def __init__(
        self,
        input_shape=(10, 28, 28, 4),
        patch_size=2,
        patch_dim=768,
        latent_dim=1024,
        num_blocks=5,
        num_latent_layers=4,
        num_groups=4,
        latents_per_group=64,
        num_heads=16,
        patch_num_heads=12,
        mlp_ratio=4.0,
        conditioning=None,
        num_classes=None,
        text_dim=None,
        adaln=False,
        num_registers=16,
        text_layers=2,
        self_conditioning=True,
        learn_sigma=True,
        class_dropout_prob=0.0,
        num_local_layers=0,
        dtype=None,
        **kwargs,
    ):
        num_groups = tuple(num_groups) if isinstance(num_groups, list) else num_groups
        inputs, outputs, info = build_latent_token_network(
            self, input_shape, patch_size, 1, patch_dim, latent_dim, num_blocks, num_latent_layers, num_groups,
            latents_per_group, num_heads, patch_num_heads, mlp_ratio, conditioning, num_classes, text_dim, adaln,
            num_registers, text_layers, self_conditioning, learn_sigma, class_dropout_prob, dtype,
            num_local_layers=num_local_layers,
        )
        arguments = dict(locals())
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self._store_config(arguments, info)


THESIS = dict(
    input_shape=(10, 28, 28, 4), patch_size=2, patch_dim=768, latent_dim=1024, num_blocks=5, num_latent_layers=4,
    num_heads=16, patch_num_heads=12, conditioning="text", text_dim=512, num_registers=16, text_layers=2,
    self_conditioning=True, learn_sigma=True,
)


def _register_presets():
    note = ("10 frames of 28x28x4 latents, patch 2, patch width 768, latent width 1024, 5 blocks of 4 latent "
            "self-attention layers, CLIP-width 512 text with 16 registers and 2 self-attention layers, latent "
            "self-conditioning, learned sigma; heads 16/12 and the latents per group are our choice (the thesis "
            "gives none); random init.")
    meta = dict(paper="thesis seed 000, Sections 3.2.3, 3.3.2, Appendices 7.5-7.6; arXiv:2402.14797")
    register_preset("snapvideo_thesis", "SnapVideo", dict(THESIS, num_groups=4, latents_per_group=64, adaln=False),
                    "The thesis' SnapVideo v1, 4 groups (2x2 regions of 7x7 patches x 10 frames, 64 latents each): "
                    + note, metadata=meta)
    register_preset("snapvideo_thesis_v2", "SnapVideo",
                    dict(THESIS, num_groups=4, latents_per_group=64, adaln=True),
                    "The thesis' SnapVideo v2 (v1 + adaLN-Zero on timestep + pooled text), 4 groups: " + note,
                    metadata=meta)
    register_preset("snapvideo_thesis_groups49", "SnapVideo",
                    dict(THESIS, num_groups=49, latents_per_group=8, adaln=False),
                    "The thesis' SnapVideo v1, 49 groups (7x7 regions of 2x2 patches x 10 frames, 8 latents each): "
                    + note, metadata=meta)
    register_preset(
        "snapvideo_tiny",
        "SnapVideo",
        dict(input_shape=(4, 8, 8, 1), patch_size=2, patch_dim=16, latent_dim=32, num_blocks=2, num_latent_layers=1,
             num_groups=4, latents_per_group=4, num_heads=4, patch_num_heads=2, conditioning="class", num_classes=4,
             learn_sigma=False),
        "A tiny SnapVideo for tests and CPU experiments (4 frames of 8x8x1, 4 groups, 16 latents, 4 classes).",
    )


_register_presets()
