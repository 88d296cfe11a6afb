"""GenTron: text-to-video diffusion transformer (Chen et al. 2024, arXiv:2312.04557).

::

    latents (B, F, H, W, C) -> per-frame PatchEmbedding + 2D sin-cos -> tokens (B, F, N, D)
    c = TimestepEmbedding(t) + PooledTextEmbedding(pooled_text)    (thesis: c = t_emb + y_pool)
    num_layers x GenTronBlock:
        x = x + a1 * SpatialAttn(adaLN(x))          within each frame
        x = x + CrossAttn(LN(x), text, text_mask)   token-level text, padding masked
        x = x + TemporalAttn(LN(x))                 along time; zero-initialised output
        x = x + a2 * MLP(adaLN(x))
    FinalLayer(tokens, c) -> Unpatchify -> (B, F, H, W, C_out)

The block follows the thesis' re-implementation (seed 000, Section 3.2.1 and
Appendix 7.1), which takes it from GenTron's video model (temporal
self-attention inserted after the text cross-attention of each image block,
starting as the identity).
"""

import keras
from keras import ops

from keras_vdiff.layers.embeddings import rope_frequencies, sincos_embedding_1d, sincos_embedding_2d
from keras_vdiff.layers.conditioning import ConditionEmbedding, check_conditioning
from keras_vdiff.layers.modulation import output_head
from keras_vdiff.layers.patching import PatchEmbedding
from keras_vdiff.layers.video_blocks import GenTronBlock
from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.models.latte import check_choice, check_video_transformer
from keras_vdiff.models.native_sizes import unpatchify_at

GENTRON_TEMPORAL_POSITIONS = (None, "sincos", "rope")


@keras.saving.register_keras_serializable(package="keras_vdiff")
class GenTron(VideoBackbone):
    """GenTron video transformer: spatial attention, text cross-attention, temporal attention per block.

    Reference: Chen et al., "GenTron: Diffusion Transformers for Image and
    Video Generation", CVPR 2024 (arXiv:2312.04557); block as re-implemented
    in the thesis (seed 000, Section 3.2.1, Appendix 7.1).

    Args:
        input_shape: latent video shape ``(frames, height, width, channels)``.
        patch_size: spatial patch size (per-frame 2D patches).
        hidden_dim, num_layers, num_heads, mlp_ratio: transformer size.
        conditioning: ``"text"`` (GenTron), ``"class"`` or ``None``; text
            cross-attention exists only for ``"text"``.
        num_classes: classes for ``"class"`` (label ``num_classes`` is the null class).
        text_dim: width of ``text_embeddings`` / ``pooled_text``.
        temporal_position: ``None`` (the thesis' GenTron has no temporal
            position; frames are then only told apart by content), ``"sincos"``
            (1D table added to the tokens once) or ``"rope"`` on the temporal attention.
        qk_norm: RMS-normalise queries and keys.
        learn_sigma: also output the improved-DDPM variance channels.
        class_dropout_prob: in-model label dropping (keep 0 with ``VideoDiffusion``).
        dtype: dtype policy.

    Inputs: ``latents (B, F, H, W, C)``, ``timesteps (B,)``, ``text_embeddings (B, L, text_dim)``,
    ``text_mask (B, L)``, ``pooled_text (B, text_dim)`` (or ``class_labels``).
    Output: ``(B, F, H, W, out_channels)``.

    Example:
        >>> model = GenTron(input_shape=(2, 8, 8, 1), patch_size=2, hidden_dim=32, num_layers=1,
        ...                 num_heads=4, text_dim=16, learn_sigma=False)
        >>> model({"latents": keras.ops.zeros((2, 2, 8, 8, 1)), "timesteps": keras.ops.ones((2,)),
        ...        "text_embeddings": keras.ops.ones((2, 5, 16)), "text_mask": keras.ops.ones((2, 5)),
        ...        "pooled_text": keras.ops.ones((2, 16))}).shape
        (2, 2, 8, 8, 1)
    """

    CONFIG_KEYS = (
        "input_shape", "patch_size", "hidden_dim", "num_layers", "num_heads", "mlp_ratio", "conditioning",
        "num_classes", "text_dim", "temporal_position", "qk_norm", "learn_sigma", "class_dropout_prob",
    )
    native_sizes = True  # any frame count / height / width of the patches (`at_shape`)

    def __init__(
        self,
        input_shape=(10, 28, 28, 4), patch_size=2,
        hidden_dim=1152, num_layers=5, num_heads=16, mlp_ratio=4.0,
        conditioning="text", num_classes=None, text_dim=512,
        temporal_position="sincos",
        qk_norm=False, learn_sigma=True, class_dropout_prob=0.0,
        dtype=None, **kwargs,
    ):
        # GenTron patches every frame on its own (tubelet size 1).
        frames, height, width, in_channels = check_video_transformer(
            input_shape, patch_size, 1, hidden_dim, num_layers, num_heads
        )
        check_choice("temporal_position", temporal_position, GENTRON_TEMPORAL_POSITIONS)
        check_conditioning(conditioning, num_classes, text_dim)
        head_dim = hidden_dim // num_heads
        if temporal_position == "rope" and head_dim % 2:
            raise ValueError(f"`temporal_position='rope'` needs an even head width, got {head_dim}.")
        out_channels = in_channels * (2 if learn_sigma else 1)
        grid = (height // patch_size, width // patch_size)
        text = conditioning == "text"

        # === Layers ===
        self.patch_embedding = PatchEmbedding(patch_size, hidden_dim, name="patch_embedding", dtype=dtype)
        self.condition_embedding = ConditionEmbedding(
            hidden_dim, conditioning, num_classes, class_dropout_prob, name="condition_embedding", dtype=dtype
        )
        self.blocks = [
            GenTronBlock(hidden_dim, num_heads, mlp_ratio=mlp_ratio, cross_attention=text, qk_norm=qk_norm,
                         name=f"block_{i}", dtype=dtype)
            for i in range(num_layers)
        ]
        self.final_layer, self.unpatchify = output_head(patch_size, out_channels, grid, dtype=dtype)

        # === Functional model === (`_forward`, at the training shape)
        self._build_native_graph(locals(), (frames, height, width, in_channels), dtype=dtype, **kwargs)

        # === Config ===
        self.store_config(locals(), in_channels=in_channels, out_channels=out_channels,
                          latent_shape=(frames, height, width, in_channels))

    def _forward(self, inputs, latent_shape):
        """The forward pass at ``latent_shape`` (its positions computed for that shape; ``at_shape``)."""
        frames, grid = self._token_grid(latent_shape)
        latents = inputs["latents"]
        c = self.condition_embedding.embed(inputs)
        x = self.patch_embedding(latents)
        x = x + ops.cast(sincos_embedding_2d(grid[0], grid[1], self.hidden_dim)[None, None], x.dtype)
        if self.temporal_position == "sincos":
            x = x + ops.cast(sincos_embedding_1d(frames, self.hidden_dim)[None, :, None, :], x.dtype)
        head_dim = self.hidden_dim // self.num_heads
        rope = rope_frequencies(range(frames), head_dim) if self.temporal_position == "rope" else None
        for block in self.blocks:
            x = block(x, c, context=inputs.get("text_embeddings"), context_mask=inputs.get("text_mask"),
                      temporal_rope=rope)
        return unpatchify_at(self.unpatchify, grid)(self.final_layer(x, c))

# === Presets === (data; registered by keras_vdiff.models)
GENTRON_PRESETS = {
    "gentron_thesis": dict(
        class_name="GenTron",
        config=dict(input_shape=(10, 28, 28, 4), patch_size=2, hidden_dim=1152, num_layers=5, num_heads=16,
                    conditioning="text", text_dim=512, temporal_position=None, learn_sigma=True),
        description="The thesis' GenTron (10 frames of 28x28x4 latents, patch 2, width 1152, 5 blocks, learned "
                    "sigma, no temporal position as in its pseudocode; 16 heads and CLIP width 512 are our "
                    "choice, the thesis gives neither); random init.",
        metadata=dict(paper="thesis seed 000, Section 3.2.1; arXiv:2312.04557"),
    ),
    "gentron_tiny": dict(
        class_name="GenTron",
        config=dict(input_shape=(2, 8, 8, 1), patch_size=2, hidden_dim=32, num_layers=2, num_heads=4,
                    conditioning="text", text_dim=16, learn_sigma=False),
        description="A tiny text-conditioned GenTron for tests and CPU experiments (2 frames of 8x8x1).",
    ),
}
