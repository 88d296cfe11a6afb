"""The latent-token family's presets: plain data, registered by ``keras_vdiff.models.latent_tokens``."""

_THESIS = dict(
    input_shape=(10, 28, 28, 4), patch_size=2, patch_dim=768, latent_dim=1024, num_blocks=5, num_latent_layers=4,
    num_heads=16, patch_num_heads=12, conditioning="text", text_dim=512, num_registers=16, text_layers=2,
    self_conditioning=True, learn_sigma=True,
)
_THESIS_NOTE = (
    "10 frames of 28x28x4 latents, patch 2, patch width 768, latent width 1024, 5 blocks of 4 latent "
    "self-attention layers, CLIP-width 512 text with 16 registers and 2 self-attention layers, latent "
    "self-conditioning, learned sigma; heads 16/12 and the latents per group are our choice (the thesis "
    "gives none); random init."
)
_THESIS_META = dict(paper="thesis seed 000, Sections 3.2.3, 3.3.2, Appendices 7.5-7.6; arXiv:2402.14797")

SNAPVIDEO_PRESETS = {
    "snapvideo_thesis": dict(
        config=dict(_THESIS, num_groups=4, latents_per_group=64, adaln=False),
        description="The thesis' SnapVideo v1, 4 groups (2x2 regions of 7x7 patches x 10 frames, 64 latents "
                    "each): " + _THESIS_NOTE,
        metadata=_THESIS_META,
    ),
    "snapvideo_thesis_v2": dict(
        config=dict(_THESIS, num_groups=4, latents_per_group=64, adaln=True),
        description="The thesis' SnapVideo v2 (v1 + adaLN-Zero on timestep + pooled text), 4 groups: "
                    + _THESIS_NOTE,
        metadata=_THESIS_META,
    ),
    "snapvideo_thesis_groups49": dict(
        config=dict(_THESIS, num_groups=49, latents_per_group=8, adaln=False),
        description="The thesis' SnapVideo v1, 49 groups (7x7 regions of 2x2 patches x 10 frames, 8 latents "
                    "each): " + _THESIS_NOTE,
        metadata=_THESIS_META,
    ),
    "snapvideo_tiny": dict(
        config=dict(input_shape=(4, 8, 8, 1), patch_size=2, patch_dim=16, latent_dim=32, num_blocks=2,
                    num_latent_layers=1, num_groups=4, latents_per_group=4, num_heads=4, patch_num_heads=2,
                    conditioning="class", num_classes=4, learn_sigma=False),
        description="A tiny SnapVideo for tests and CPU experiments (4 frames of 8x8x1, 4 groups, 16 latents, "
                    "4 classes).",
    ),
}

RIN_PRESETS = {
    "rin_thesis": dict(
        config=dict(input_shape=(10, 28, 28, 4), patch_size=2, tubelet_size=2, patch_dim=768, latent_dim=1024,
                    num_latents=256, num_blocks=5, num_latent_layers=4, num_heads=16, patch_num_heads=12,
                    conditioning="text", text_dim=512, num_registers=16, text_layers=2, self_conditioning=True,
                    learn_sigma=True),
        description="RIN at the thesis' SnapVideo sizes (10 frames of 28x28x4 latents, 2x2x2 tubelets, patch "
                    "width 768, 256 latents of width 1024, 5 blocks of 4 latent self-attention layers, CAD-RIN "
                    "text with 16 registers; the thesis' Section 3.3.2 RIN comparison); random init.",
        metadata=dict(paper="arXiv:2212.11972; thesis seed 000, Section 3.3.2"),
    ),
    "rin_base": dict(
        config=dict(input_shape=(16, 32, 32, 4), patch_size=2, tubelet_size=2, patch_dim=512, latent_dim=1024,
                    num_latents=256, num_blocks=6, num_latent_layers=4, num_heads=16, patch_num_heads=8,
                    conditioning="class", num_classes=1000, self_conditioning=True, learn_sigma=False),
        description="RIN with the paper's latent settings (256 latents of width 1024, K=4 latent self-attention "
                    "layers per block, latent self-conditioning) on 16 frames of 32x32x4 latents with 2x2x2 "
                    "tubelets; class-conditional; random init.",
        metadata=dict(paper="arXiv:2212.11972"),
    ),
    "rin_tiny": dict(
        config=dict(input_shape=(4, 8, 8, 1), patch_size=2, tubelet_size=2, patch_dim=16, latent_dim=32,
                    num_latents=16, num_blocks=2, num_latent_layers=1, num_heads=4, patch_num_heads=2,
                    conditioning="class", num_classes=4, learn_sigma=False),
        description="A tiny RIN for tests and CPU experiments (4 frames of 8x8x1, 2x2x2 tubelets, 16 latents, "
                    "4 classes).",
    ),
}
