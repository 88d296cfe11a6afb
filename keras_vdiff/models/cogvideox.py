"""CogVideoX: the expert transformer of text-to-video diffusion (Yang et al. 2024, arXiv:2408.06072).

::

    latents (B, F, H, W, C) -> PatchEmbedding (per frame, or tubelets of ``tubelet_size`` frames)
                            -> video tokens (B, N, D)  (+ 3D sin-cos table, or 3D RoPE in every attention)
    text_embeddings (B, L, Dt) -> Dense(D) -> text tokens (B, L, D)      (L = text_length, fixed)
    c = TimestepEmbedding(t)  (B, time_embed_dim)
    num_layers x ExpertAdaLNBlock(video, text, c)   [text; video] in one attention and one MLP with shared
                                                    weights, shift / scale / gate per modality from c
    LN(video) -> FinalLayer(., c) (affine LN, shift / scale) -> Unpatchify -> (B, F, H, W, C)

Text conditions the model only through the joined tokens: ``text_mask`` and
``pooled_text`` are accepted and unused (CogVideoX attends to the padded T5
tokens too; its prompts are always padded to ``text_length`` = 226).

``position="sincos"`` is CogVideoX-2b's fixed table (temporal quarter first,
spatial part columns-first, positions divided by the interpolation scales);
``"rope"`` is CogVideoX-5b's and 1.5's 3D RoPE on the video tokens' queries and
keys (head split 1/4 frames, 3/8 rows, 3/8 columns), with the positions the
diffusers pipelines compute for this input size: ``rope_positions="crop"`` (1.0:
the grid resized and centre-cropped into the ``sample_size`` grid it was
trained at) or ``"grid"`` (1.5: integer positions).
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.layers.conditioning import backbone_inputs
from keras_vdiff.layers.core import Dense
from keras_vdiff.layers.embeddings import TimestepEmbedding, rope_frequencies, sincos_embedding_3d
from keras_vdiff.layers.modulation import FinalLayer
from keras_vdiff.layers.normalization import layer_norm, normed
from keras_vdiff.layers.patching import PatchEmbedding, Unpatchify
from keras_vdiff.layers.video_blocks import ExpertAdaLNBlock
from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.models.latte import check_choice, check_video_transformer
from keras_vdiff.validation import check_int, check_pair

POSITIONS = ("sincos", "rope")
ROPE_POSITIONS = ("crop", "grid")


def crop_region(rows, cols, base_rows, base_cols):
    """The ``(top, left), (bottom, right)`` box of a ``rows x cols`` grid resized to cover a ``base`` grid and
    centred (diffusers' ``get_resize_crop_region_for_grid``, Python's rounding included)."""
    if rows / cols > base_rows / base_cols:
        height, width = base_rows, int(round(base_rows / rows * cols))
    else:
        height, width = int(round(base_cols / cols * rows)), base_cols
    top, left = int(round((base_rows - height) / 2.0)), int(round((base_cols - width) / 2.0))
    return (top, left), (top + height, left + width)


def cogvideox_rope_angles(frames, rows, cols, head_dim, base_grid=None):
    """RoPE angles ``(frames * rows * cols, head_dim / 2)`` of CogVideoX's video tokens, flattened ``(f h w)``.

    Each head rotates ``head_dim / 4`` channels by the frame, ``3 head_dim / 8`` by
    the row and as many by the column (diffusers' ``get_3d_rotary_pos_embed``), in
    :func:`~keras_vdiff.layers.embeddings.apply_rope`'s half-split layout.

    Args:
        frames, rows, cols: the token grid.
        head_dim: attention head width (divisible by 16).
        base_grid: ``(rows, cols)`` the model was trained at: positions of the grid
            resized and centre-cropped into it (CogVideoX 1.0); ``None``: integer
            positions (CogVideoX 1.5).
    """
    if head_dim % 16:
        raise ValueError(f"CogVideoX's 3D RoPE needs `head_dim` divisible by 16, got {head_dim}.")
    if base_grid is None:
        row_positions, col_positions = np.arange(rows), np.arange(cols)
    else:
        (top, left), (bottom, right) = crop_region(rows, cols, *base_grid)
        row_positions = np.linspace(top, bottom * (rows - 1) / rows, rows)
        col_positions = np.linspace(left, right * (cols - 1) / cols, cols)
    f, r, c = np.meshgrid(np.arange(frames), row_positions, col_positions, indexing="ij")
    spatial = head_dim // 8 * 3
    return np.concatenate([rope_frequencies(f.ravel(), head_dim // 4), rope_frequencies(r.ravel(), spatial),
                           rope_frequencies(c.ravel(), spatial)], axis=1)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class CogVideoX(VideoBackbone):
    """CogVideoX's expert transformer: full 3D attention over text and video tokens with an adaLN per modality.

    Reference: Yang et al., "CogVideoX: Text-to-Video Diffusion Models with An
    Expert Transformer", 2024 (arXiv:2408.06072); numerics of diffusers'
    ``CogVideoXTransformer3DModel`` (``kv.convert.from_diffusers`` loads its folders).

    Args:
        input_shape: latent video ``(frames, height, width, channels)``; CogVideoX-2b
            samples 13 latent frames (49 video frames) of 60x90x16 (480x720 video).
        patch_size: spatial patch size.
        tubelet_size: frames per patch: 1 embeds each frame (1.0 models), 2 the
            tubelets of CogVideoX 1.5 (``patch_size_t``).
        num_heads, head_dim, num_layers: transformer size (width ``num_heads * head_dim``).
        time_embed_dim: width of the timestep embedding that modulates every block.
        text_dim: width of ``text_embeddings`` (T5-XXL: 4096).
        text_length: text tokens per prompt (diffusers' ``max_text_seq_length``).
        position: ``"sincos"`` (3D table added to the video tokens) or ``"rope"``.
        spatial_interpolation_scale, temporal_interpolation_scale: the sin-cos
            table's positions are divided by them (CogVideoX: 1.875 and 1).
        rope_positions: ``"crop"`` or ``"grid"`` (see the module docstring).
        sample_size: ``(height, width)`` of the latents the model was trained at:
            the base grid of ``rope_positions="crop"``.
        timestep_frequency_shift: the timestep sinusoids' frequency shift (``freq_shift``).
        attention_bias: biases on the q/k/v projections.
        patch_bias: bias on the patch embedding.
        norm_epsilon: epsilon of the blocks' and the output's LayerNorms.
        norm_affine: learned scale and offset on those LayerNorms.
        dtype: dtype policy.

    Inputs: ``latents (B, F, H, W, C)``, ``timesteps (B,)``, ``text_embeddings
    (B, text_length, text_dim)``, ``text_mask (B, text_length)`` and ``pooled_text
    (B, text_dim)`` (both unused). Output: ``(B, F, H, W, C)``.

    Example:
        >>> model = CogVideoX(input_shape=(2, 8, 8, 4), num_heads=2, head_dim=16, num_layers=1,
        ...                   time_embed_dim=16, text_dim=8, text_length=5, position="rope")
        >>> model({"latents": keras.ops.zeros((1, 2, 8, 8, 4)), "timesteps": keras.ops.ones((1,)),
        ...        "text_embeddings": keras.ops.zeros((1, 5, 8)), "text_mask": keras.ops.ones((1, 5)),
        ...        "pooled_text": keras.ops.zeros((1, 8))}).shape
        (1, 2, 8, 8, 4)
    """

    conditioning = "text"
    learn_sigma = False
    CONFIG_KEYS = (
        "input_shape", "patch_size", "tubelet_size", "num_heads", "head_dim", "num_layers", "time_embed_dim",
        "text_dim", "text_length", "position", "spatial_interpolation_scale", "temporal_interpolation_scale",
        "rope_positions", "sample_size", "timestep_frequency_shift", "attention_bias", "patch_bias",
        "norm_epsilon", "norm_affine",
    )

    def __init__(
        self,
        input_shape=(13, 60, 90, 16), patch_size=2, tubelet_size=1,
        num_heads=30, head_dim=64, num_layers=30, time_embed_dim=512,
        text_dim=4096, text_length=226,
        position="sincos", spatial_interpolation_scale=1.875, temporal_interpolation_scale=1.0,
        rope_positions="crop", sample_size=(60, 90),
        timestep_frequency_shift=0, attention_bias=True, patch_bias=True, norm_epsilon=1e-5, norm_affine=True,
        dtype=None, **kwargs,
    ):
        check_int(head_dim, "head_dim")
        check_int(num_heads, "num_heads")
        hidden_dim = num_heads * head_dim
        frames, height, width, channels = check_video_transformer(
            input_shape, patch_size, tubelet_size, hidden_dim, num_layers, num_heads
        )
        for name, value in (("time_embed_dim", time_embed_dim), ("text_dim", text_dim),
                            ("text_length", text_length)):
            check_int(value, name)
        check_choice("position", position, POSITIONS)
        check_choice("rope_positions", rope_positions, ROPE_POSITIONS)
        sample_size = check_pair(sample_size, "sample_size")
        if position == "sincos" and hidden_dim % 16:
            raise ValueError(f"`position='sincos'` needs num_heads * head_dim divisible by 16, got {hidden_dim}.")
        if position == "sincos" and tubelet_size != 1:
            raise ValueError(  # diffusers builds the table per latent frame, so it cannot run this either
                f"`position='sincos'` is built for `tubelet_size=1`, got {tubelet_size}; tubelets use 'rope'."
            )
        rows, cols = height // patch_size, width // patch_size
        token_frames = frames // tubelet_size
        num_tokens = token_frames * rows * cols
        out_width = tubelet_size * patch_size * patch_size * channels

        # === Layers ===
        self.patch_embedding = PatchEmbedding(patch_size, hidden_dim, tubelet_size=tubelet_size, use_bias=patch_bias,
                                              name="patch_embedding", dtype=dtype)
        self.text_projection = Dense(hidden_dim, name="text_projection", dtype=dtype)
        self.time_embedding = TimestepEmbedding(time_embed_dim, frequency_dim=hidden_dim,
                                                frequency_shift=timestep_frequency_shift, name="time_embedding",
                                                dtype=dtype)
        self.blocks = [
            ExpertAdaLNBlock(hidden_dim, num_heads, use_bias=attention_bias, norm_epsilon=norm_epsilon,
                             norm_affine=norm_affine, name=f"block_{i}", dtype=dtype)
            for i in range(num_layers)
        ]
        self.norm_final = layer_norm("norm_final", affine=norm_affine, epsilon=norm_epsilon)
        self.final_layer = FinalLayer(out_width, epsilon=norm_epsilon, norm_affine=norm_affine, name="final_layer",
                                      dtype=dtype)
        self.unpatchify = Unpatchify(patch_size, channels, tubelet_size=tubelet_size, grid_size=(rows, cols),
                                     name="unpatchify", dtype=dtype)

        # === Functional model ===
        inputs = backbone_inputs((frames, height, width, channels), "text", text_dim)
        inputs["text_embeddings"] = keras.Input(shape=(text_length, text_dim), name="text_embeddings")
        inputs["text_mask"] = keras.Input(shape=(text_length,), name="text_mask")
        c = self.time_embedding(inputs["timesteps"])
        text = self.text_projection(inputs["text_embeddings"])
        x = ops.reshape(self.patch_embedding(inputs["latents"]), (-1, num_tokens, hidden_dim))
        rope = None
        if position == "sincos":
            table = sincos_embedding_3d(token_frames, rows, cols, hidden_dim, temporal_dim=hidden_dim // 4,
                                        order="columns_first", interpolation_scale=spatial_interpolation_scale,
                                        temporal_interpolation_scale=temporal_interpolation_scale)
            x = x + ops.cast(table[None], x.dtype)
        else:
            base = (sample_size[0] // patch_size, sample_size[1] // patch_size) if rope_positions == "crop" else None
            video_angles = cogvideox_rope_angles(token_frames, rows, cols, head_dim, base)
            rope = np.concatenate([np.zeros((text_length, head_dim // 2), "float32"), video_angles])  # text: none
        for block in self.blocks:
            x, text = block(x, text, c, rope=rope)
        x = self.final_layer(normed(self.norm_final, x), c)
        outputs = self.unpatchify(ops.reshape(x, (-1, token_frames, rows * cols, out_width)))
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.store_config(locals(), hidden_dim=hidden_dim, in_channels=channels, out_channels=channels,
                          latent_shape=(frames, height, width, channels))


# === Presets === (data; registered by keras_vdiff.models)
# The released transformer configs (THUDM/CogVideoX-{2b,5b} transformer/config.json as diffusers documents them):
# 480x720 video, 49 frames -> 13 latent frames of 60x90x16; T5-XXL text padded to 226 tokens.
_COGVIDEOX_COMMON = dict(input_shape=(13, 60, 90, 16), patch_size=2, head_dim=64, time_embed_dim=512, text_dim=4096,
                         text_length=226, sample_size=(60, 90))
COGVIDEOX_PRESETS = {
    "cogvideox_2b": dict(
        class_name="CogVideoX",
        config=dict(_COGVIDEOX_COMMON, num_heads=30, num_layers=30, position="sincos",
                    spatial_interpolation_scale=1.875, temporal_interpolation_scale=1.0),
        description="CogVideoX-2b's expert transformer (Yang et al. 2024): 30 layers, 30 heads x 64, 3D sin-cos "
                    "positions, 13 latent frames of 60x90x16, T5-XXL text (226 x 4096); 1.69B, random init.",
        metadata=dict(paper="arXiv:2408.06072"),
    ),
    "cogvideox_5b": dict(
        class_name="CogVideoX",
        config=dict(_COGVIDEOX_COMMON, num_heads=48, num_layers=42, position="rope", rope_positions="crop"),
        description="CogVideoX-5b's expert transformer (Yang et al. 2024): 42 layers, 48 heads x 64, 3D RoPE, "
                    "13 latent frames of 60x90x16, T5-XXL text (226 x 4096); 5.57B, random init.",
        metadata=dict(paper="arXiv:2408.06072"),
    ),
    "cogvideox_tiny": dict(
        class_name="CogVideoX",
        config=dict(input_shape=(2, 8, 8, 4), patch_size=2, num_heads=2, head_dim=16, num_layers=2,
                    time_embed_dim=16, text_dim=16, text_length=8, position="rope", sample_size=(8, 8)),
        description="A tiny 3D-RoPE CogVideoX for tests and CPU experiments (2 frames of 8x8x4, 8 text tokens).",
    ),
}
