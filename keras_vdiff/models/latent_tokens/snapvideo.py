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

from keras_vdiff.models.latent_tokens.backbone import LatentTokenBackbone


@keras.saving.register_keras_serializable(package="keras_vdiff")
class SnapVideo(LatentTokenBackbone):
    """SnapVideo-FiT video diffusion backbone (latent tokens over spatial groups spanning all frames).

    Reference: Menapace et al., "Snap Video" (2024, arXiv:2402.14797); Chen & Li,
    "FIT: Far-reaching Interleaved Transformers" (2023, arXiv:2305.12689); the
    thesis (seed 000), Sections 3.2.3 and 3.3.2, Appendices 7.5 (v1) and 7.6 (v2).

    Args:
        input_shape: latent video shape ``(frames, height, width, channels)``.
        patch_size: spatial patch size (per-frame 2D patches; default 2).
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
        "input_shape", "patch_size", "patch_dim", "latent_dim", "num_blocks", "num_latent_layers", "num_groups",
        "latents_per_group", "num_heads", "patch_num_heads", "mlp_ratio", "conditioning", "num_classes", "text_dim",
        "adaln", "num_registers", "text_layers", "self_conditioning", "learn_sigma", "class_dropout_prob",
        "num_local_layers",
    )

    def __init__(
        self,
        input_shape=(10, 28, 28, 4),
        *,
        patch_dim=768,
        num_blocks=5,
        num_groups=4,
        latents_per_group=64,
        patch_num_heads=12,
        learn_sigma=True,
        num_local_layers=0,
        **kwargs,
    ):
        num_groups = tuple(num_groups) if isinstance(num_groups, list) else num_groups
        super().__init__(
            input_shape=input_shape, patch_dim=patch_dim, num_blocks=num_blocks, patch_num_heads=patch_num_heads,
            learn_sigma=learn_sigma, groups=num_groups, tubelet_size=1, latents_per_group=latents_per_group,
            num_local_layers=num_local_layers, **kwargs,
        )
        self.store_config(locals())
