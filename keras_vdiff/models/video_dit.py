"""VideoDiT: a diffusion transformer with full 3D attention over all frames and patches.

::

    latents (B, F, H, W, C) -> PatchEmbedding (per frame or tubelets) -> tokens (B, F'*N, D)
    position: 3D sin-cos table added to the tokens, or 3D axial RoPE in every attention
    c = TimestepEmbedding(t) (+ LabelEmbedding(y) | + PooledTextEmbedding(pooled_text))
    text_mode="cross": num_layers x DiTBlock(tokens, c, text cross-attention)      (PixArt / Movie Gen)
    text_mode="joint": text -> Dense(D); num_layers x MMDiTBlock(tokens, text, c) (SD3 MM-DiT / CogVideoX)
    FinalLayer(tokens, c) -> Unpatchify -> (B, F, H, W, C_out)

Full attention costs ``O((F N)^2)`` but lets every token see every other one in
a single block; CogVideoX (Yang et al. 2024, arXiv:2408.06072) reports it
trains more stably than the divided space-time attention of Latte / GenTron.
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.layers.core import Dense
from keras_vdiff.layers.embeddings import rope_frequencies, sincos_embedding_3d
from keras_vdiff.layers.conditioning import ConditionEmbedding, check_conditioning
from keras_vdiff.layers.modulation import output_head
from keras_vdiff.layers.patching import PatchEmbedding
from keras_vdiff.layers.transformer import DiTBlock
from keras_vdiff.layers.video_blocks import MMDiTBlock
from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.models.latte import LATTE_SIZES, check_choice, check_video_transformer
from keras_vdiff.models.native_sizes import unpatchify_at

POSITIONS = ("sincos", "rope")
TEXT_MODES = ("cross", "joint")


def temporal_width(dim):
    """Width of the temporal part of a 3D sin-cos table: about ``dim / 4``, even, leaving a spatial part
    divisible by 4."""
    width = max(2, (dim // 4) // 2 * 2)
    while (dim - width) % 4:
        width += 2
    return width


def axial_positions(frames, rows, cols):
    """``(frames * rows * cols, 3)`` (frame, row, column) indices, tokens flattened as ``(f h w)``."""
    f, r, c = np.meshgrid(np.arange(frames), np.arange(rows), np.arange(cols), indexing="ij")
    return np.stack([f.ravel(), r.ravel(), c.ravel()], axis=1)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class VideoDiT(VideoBackbone):
    """Video diffusion transformer with full 3D attention (Sora / CogVideoX / Movie Gen style).

    References: Peebles & Xie 2023 (DiT, arXiv:2212.09748) for the adaLN-Zero
    block; Esser et al. 2024 (SD3 MM-DiT, arXiv:2403.03206) and Yang et al. 2024
    (CogVideoX, arXiv:2408.06072) for the joint text-video blocks with separate
    modulation per stream and 3D RoPE; PixArt-alpha (arXiv:2310.00426) for
    cross-attention to text.

    Args:
        input_shape: latent video shape ``(frames, height, width, channels)``.
        patch_size: spatial patch size.
        tubelet_size: temporal patch size (1 = per-frame patches).
        hidden_dim, num_layers, num_heads, mlp_ratio: transformer size.
        conditioning: ``None``, ``"class"`` or ``"text"``.
        num_classes: classes for ``"class"`` (label ``num_classes`` is the null class).
        text_dim: width of ``text_embeddings`` / ``pooled_text``.
        text_mode: ``"cross"`` (cross-attention to the text in every block) or
            ``"joint"`` (text tokens join the attention, MM-DiT blocks).
        position: ``"sincos"`` (3D table added once) or ``"rope"`` (3D axial
            RoPE on every attention; the head width must be divisible by 6).
        qk_norm: RMS-normalise queries and keys.
        learn_sigma: also output the improved-DDPM variance channels.
        class_dropout_prob: in-model label dropping (keep 0 with ``VideoDiffusion``).
        dtype: dtype policy.

    Inputs: ``latents (B, F, H, W, C)``, ``timesteps (B,)`` and the condition.
    Output: ``(B, F, H, W, out_channels)``.

    Example:
        >>> model = VideoDiT(input_shape=(2, 8, 8, 1), patch_size=2, hidden_dim=24, num_layers=1,
        ...                  num_heads=2, conditioning=None, position="rope", learn_sigma=False)
        >>> model({"latents": keras.ops.zeros((2, 2, 8, 8, 1)), "timesteps": keras.ops.ones((2,))}).shape
        (2, 2, 8, 8, 1)
    """

    CONFIG_KEYS = (
        "input_shape", "patch_size", "tubelet_size", "hidden_dim", "num_layers", "num_heads", "mlp_ratio",
        "conditioning", "num_classes", "text_dim", "text_mode", "position", "qk_norm", "learn_sigma",
        "class_dropout_prob",
    )
    native_sizes = True  # any frame count / height / width of the patches (`at_shape`)

    def __init__(
        self,
        input_shape=(16, 32, 32, 4), patch_size=2, tubelet_size=1,
        hidden_dim=768, num_layers=12, num_heads=12, mlp_ratio=4.0,
        conditioning="text", num_classes=None, text_dim=512,
        text_mode="cross",
        position="sincos",
        qk_norm=False, learn_sigma=True, class_dropout_prob=0.0,
        dtype=None, **kwargs,
    ):
        check_choice("text_mode", text_mode, TEXT_MODES)
        check_choice("position", position, POSITIONS)
        frames, height, width, in_channels = check_video_transformer(
            input_shape, patch_size, tubelet_size, hidden_dim, num_layers, num_heads
        )
        check_conditioning(conditioning, num_classes, text_dim)
        head_dim = hidden_dim // num_heads
        if position == "rope" and head_dim % 6:
            raise ValueError(
                f"`position='rope'` splits each head over 3 axes: the head width hidden_dim / num_heads = "
                f"{head_dim} must be divisible by 6."
            )
        out_channels = in_channels * (2 if learn_sigma else 1)
        grid = (height // patch_size, width // patch_size)
        token_frames = frames // tubelet_size
        num_tokens = token_frames * grid[0] * grid[1]
        text = conditioning == "text"
        joint = text and text_mode == "joint"

        # === Layers ===
        self.patch_embedding = PatchEmbedding(
            patch_size, hidden_dim, tubelet_size=tubelet_size, name="patch_embedding", dtype=dtype
        )
        self.condition_embedding = ConditionEmbedding(
            hidden_dim, conditioning, num_classes, class_dropout_prob, name="condition_embedding", dtype=dtype
        )
        if joint:
            self.text_projection = Dense(hidden_dim, name="text_projection", dtype=dtype)
            self.blocks = [
                MMDiTBlock(hidden_dim, num_heads, mlp_ratio=mlp_ratio, qk_norm=qk_norm,
                           context_output=i < num_layers - 1, name=f"block_{i}", dtype=dtype)
                for i in range(num_layers)
            ]
        else:
            self.blocks = [
                DiTBlock(hidden_dim, num_heads, mlp_ratio=mlp_ratio, cross_attention=text, qk_norm=qk_norm,
                         name=f"block_{i}", dtype=dtype)
                for i in range(num_layers)
            ]
        self.final_layer, self.unpatchify = output_head(patch_size, out_channels, grid, tubelet_size, dtype)

        # === Functional model === (`_forward`, at the training shape)
        self._build_native_graph(locals(), (frames, height, width, in_channels), dtype=dtype, **kwargs)

        # === Config ===
        self.store_config(locals(), in_channels=in_channels, out_channels=out_channels,
                          latent_shape=(frames, height, width, in_channels))

    def _forward(self, inputs, latent_shape):
        """The forward pass at ``latent_shape`` (its positions computed for that shape; ``at_shape``)."""
        token_frames, grid = self._token_grid(latent_shape)
        hidden_dim, head_dim = self.hidden_dim, self.hidden_dim // self.num_heads
        joint = self.conditioning == "text" and self.text_mode == "joint"
        latents = inputs["latents"]
        c = self.condition_embedding.embed(inputs)
        x = ops.reshape(self.patch_embedding(latents), (-1, token_frames * grid[0] * grid[1], hidden_dim))
        rope = None
        if self.position == "sincos":
            table = sincos_embedding_3d(token_frames, grid[0], grid[1], hidden_dim, temporal_width(hidden_dim))
            x = x + ops.cast(table[None], x.dtype)
        else:
            rope = rope_frequencies(axial_positions(token_frames, grid[0], grid[1]), head_dim)
        context, context_mask = inputs.get("text_embeddings"), inputs.get("text_mask")
        if joint:
            context = self.text_projection(context)
            for block in self.blocks:
                x, context = block(x, context, c, context_mask=context_mask, rope=rope)
        else:
            for block in self.blocks:
                x = block(x, c, context=context, context_mask=context_mask, rope=rope)
        x = ops.reshape(self.final_layer(x, c), (-1, token_frames, grid[0] * grid[1], self.final_layer.output_dim))
        return unpatchify_at(self.unpatchify, grid)(x)

# === Presets === (data; registered by keras_vdiff.models)
VIDEO_DIT_PRESETS = {
    **{
        f"video_dit_{size}_patch{patch}": dict(
            class_name="VideoDiT",
            config=dict(input_shape=(16, 32, 32, 4), patch_size=patch, conditioning="text", text_dim=512,
                        text_mode="joint", position="sincos", learn_sigma=True, **dims),
            description=f"Full-3D-attention video DiT-{'XL' if size == 'xlarge' else size[0].upper()}/{patch} "
                        f"(16 frames of 32x32x4 latents, {16 * (32 // patch) ** 2} tokens), MM-DiT joint text "
                        "blocks, 3D sin-cos positions, learned sigma; random init.",
            metadata=dict(paper="arXiv:2212.09748, arXiv:2403.03206, arXiv:2408.06072"),
        )
        for size, dims in LATTE_SIZES.items()
        for patch in (2, 4, 8)
    },
    "video_dit_tiny": dict(
        class_name="VideoDiT",
        config=dict(input_shape=(2, 8, 8, 1), patch_size=2, hidden_dim=24, num_layers=2, num_heads=2,
                    conditioning="text", text_dim=16, text_mode="joint", position="rope", learn_sigma=False),
        description="A tiny joint-text, 3D-RoPE VideoDiT for tests and CPU experiments (2 frames of 8x8x1).",
    ),
}
