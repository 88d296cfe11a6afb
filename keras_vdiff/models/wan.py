"""Wan 2.1: the flow-matching video DiT of Wan (Wan Team 2025, arXiv:2503.20314).

::

    latents (B, F, H, W, C [+ extra]) -> PatchEmbedding (1 x 2 x 2 tubes) -> video tokens (B, N, D)
    text_embeddings (B, L, Dt) -> MLP (Dt -> D -> D, GELU tanh) -> text tokens (B, L, D)
    [image_embeddings (B, M, Di) -> LN -> MLP (Di -> Di -> D, GELU) -> LN -> image tokens (B, M, D)]   (I2V)
    t = TimestepEmbedding(t) (B, D);  m = Dense(SiLU(t)) (B, 6D), one projection shared by every block
    num_layers x WanBlock(x, m, [image; text]): adaLN-single (the block's (6, D) table + m), self-attention
        with 3D RoPE and RMS QK-norm across heads, cross-attention to the text (LayerNorm before it; I2V:
        plus an attention to the image tokens with their own keys and values), MLP (GELU tanh)
    FinalLayer(x, t) (the (2, D) table + t: shift, scale) -> Unpatchify -> (B, F, H, W, C)

The 3D RoPE splits every head ``2 (head_dim // 6)`` channels to the row, as many
to the column and the rest to the frame (in :func:`~keras_vdiff.layers.embeddings.apply_rope`'s
half-split layout; the converter reorders diffusers' interleaved pairs), at the
integer positions of the token grid. Text tokens are all attended to:
``text_mask`` and ``pooled_text`` are accepted and unused, as in Wan, whose
pipeline zero-pads every prompt to 512 tokens.

Image-to-video (Wan2.1-I2V-14B): ``num_extra_input_channels`` widens the
latents (Wan's 20: a 4-channel frame mask and the 16 channels of the
conditioning frames' latents, concatenated after the noise), and ``image_dim``
adds the ``image_embeddings`` input (the CLIP image tokens, 257 x 1280).
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.layers.attention import ACROSS_HEADS, Attention
from keras_vdiff.layers.conditioning import backbone_inputs
from keras_vdiff.layers.core import Dense, RMSNormalization
from keras_vdiff.layers.embeddings import TimestepEmbedding, rope_frequencies
from keras_vdiff.layers.modulation import AdaLNModulation, FinalLayer
from keras_vdiff.layers.normalization import layer_norm, normed
from keras_vdiff.layers.patching import PatchEmbedding, Unpatchify
from keras_vdiff.layers.transformer import MLP, DiTBlock
from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.models.latte import check_video_transformer
from keras_vdiff.validation import check_int


def wan_rope_angles(frames, rows, cols, head_dim):
    """RoPE angles ``(frames * rows * cols, head_dim / 2)`` of Wan's video tokens, flattened ``(f h w)``.

    Each head rotates ``2 (head_dim // 6)`` channels by the row, as many by the
    column and the other ``head_dim - 4 (head_dim // 6)`` by the frame, each axis
    with its own frequencies (base 10000) at integer positions (diffusers'
    ``WanRotaryPosEmbed``); the angles are listed frame part first.
    """
    if head_dim % 2:
        raise ValueError(f"Wan's 3D RoPE needs an even `head_dim`, got {head_dim}.")
    spatial = 2 * (head_dim // 6)
    f, r, c = np.meshgrid(np.arange(frames), np.arange(rows), np.arange(cols), indexing="ij")
    return np.concatenate([rope_frequencies(f.ravel(), head_dim - 2 * spatial), rope_frequencies(r.ravel(), spatial),
                           rope_frequencies(c.ravel(), spatial)], axis=1)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class WanCrossAttention(Attention):
    """Wan's cross-attention: to the text tokens, and (I2V) to the image tokens with their own keys and values.

    The context is ``[image tokens; text tokens]`` (the first ``image_length``
    tokens are the image's); both attentions share the normalised queries and
    the output projection: ``out = W_o (Attn(q, k_text, v_text) + Attn(q, k_img, v_img)) + b_o``,
    the image keys RMS-normalised across heads (diffusers' ``add_k_proj``,
    ``add_v_proj``, ``norm_added_k``). ``image_length=0`` is plain :class:`Attention`.

    Args:
        num_heads, head_dim: as in :class:`Attention` (``qk_norm="rms_norm_across_heads"``).
        image_length: image tokens at the front of the context (Wan I2V: 257).

    Example:
        >>> attention = WanCrossAttention(2, 8, image_length=3)
        >>> attention(keras.ops.ones((1, 5, 16)), keras.ops.ones((1, 3 + 4, 16))).shape
        (1, 5, 16)
    """

    def __init__(self, num_heads, head_dim, image_length=0, **kwargs):
        kwargs.setdefault("qk_norm", ACROSS_HEADS)
        super().__init__(num_heads, head_dim, **kwargs)
        check_int(image_length, "image_length", minimum=0)
        self.image_length = image_length
        if image_length:
            inner = num_heads * head_dim
            self.image_key = Dense(inner, name="image_key", dtype=self.dtype_policy)
            self.image_value = Dense(inner, name="image_value", dtype=self.dtype_policy)
            self.image_key_norm = RMSNormalization(epsilon=1e-6, name="image_key_norm",
                                                                dtype=self.dtype_policy)

    def build(self, x_shape, context_shape=None, *args):
        super().build(x_shape, context_shape, *args)
        if self.image_length:
            self.image_key.build(context_shape)
            self.image_value.build(context_shape)
            self.image_key_norm.build((None, None, self.num_heads * self.head_dim))

    def call(self, x, context=None, mask=None, rope=None, bias=None, training=None):
        if not self.image_length:
            return super().call(x, context, mask=mask, rope=rope, bias=bias, training=training)
        image, text = context[:, :self.image_length], context[:, self.image_length:]
        q, k, v = self.project_qkv(x, text)
        image_key = self._heads(self.image_key_norm(self.image_key(image)))
        out = (ops.dot_product_attention(q, k, v, mask=mask)
               + ops.dot_product_attention(q, image_key, self._heads(self.image_value(image))))
        out = ops.reshape(out, (ops.shape(x)[0], ops.shape(x)[1], self.num_heads * self.head_dim))
        return self.dropped(self.output_projection(out), training)

    def get_config(self):
        config = super().get_config()
        config.update(image_length=self.image_length)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class WanBlock(DiTBlock):
    """Wan's transformer block: a :class:`DiTBlock` with adaLN-single, QK RMS norms across heads and
    :class:`WanCrossAttention` (a LayerNorm before it with ``cross_attention_norm``).

    ::

        shift1, scale1, gate1, shift2, scale2, gate2 = table + condition    (condition: (B, 6 D))
        x = x + gate1 * SelfAttn(modulate(LN(x), shift1, scale1), rope)
        x = x + CrossAttn(LN_affine(x), [image; text])
        x = x + gate2 * MLP(modulate(LN(x), shift2, scale2))

    Args:
        hidden_dim, num_heads: token width and heads.
        ffn_dim: the MLP's inner width.
        cross_attention_norm: affine LayerNorm before the cross-attention.
        norm_epsilon: epsilon of every LayerNorm.
        image_length: image tokens at the front of the context (0: text only).

    Example:
        >>> block = WanBlock(16, 2, ffn_dim=32)
        >>> block(keras.ops.ones((1, 5, 16)), keras.ops.ones((1, 96)), keras.ops.ones((1, 3, 16))).shape
        (1, 5, 16)
    """

    def __init__(self, hidden_dim, num_heads, ffn_dim, cross_attention_norm=True, norm_epsilon=1e-6, image_length=0,
                 **kwargs):
        check_int(ffn_dim, "ffn_dim")
        # The MLP's inner width is int(hidden_dim * mlp_ratio): half a channel over `ffn_dim` so rounding gives it.
        super().__init__(hidden_dim, num_heads, mlp_ratio=(ffn_dim + 0.5) / hidden_dim, qk_norm=ACROSS_HEADS,
                         modulation="single", cross_attention=False, norm_epsilon=norm_epsilon, **kwargs)
        self.ffn_dim = ffn_dim
        self.image_length = image_length
        # The cross-attention is Wan's own; DiTBlock runs it once `cross_attention` is set.
        self.cross_attention = True
        self.cross_attention_norm = cross_attention_norm
        self.norm_cross = (layer_norm("norm_cross", affine=True, epsilon=norm_epsilon) if cross_attention_norm
                           else None)
        self.cross = WanCrossAttention(num_heads, hidden_dim // num_heads, image_length=image_length,
                                       name="cross_attention", dtype=self.dtype_policy)

    def get_config(self):
        config = super().get_config()
        for key in ("mlp_ratio", "cross_attention", "qk_norm", "modulation", "mlp_norm_epsilon", "mlp_activation"):
            config.pop(key)
        config.update(ffn_dim=self.ffn_dim, image_length=self.image_length)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class Wan(VideoBackbone):
    """Wan 2.1's video transformer: full 3D self-attention with RoPE, cross-attention to UMT5 text, adaLN-single.

    Reference: Wan Team, "Wan: Open and Advanced Large-Scale Video Generative
    Models", 2025 (arXiv:2503.20314); numerics of diffusers'
    ``WanTransformer3DModel`` (``kv.convert.from_diffusers`` loads its folders).

    Args:
        input_shape: latent video ``(frames, height, width, channels)`` without the
            extra channels; Wan samples 21 latent frames (81 video frames) of
            60x104x16 (480x832) or 90x160x16 (720x1280).
        patch_size: spatial patch size; ``tubelet_size``: frames per patch (Wan: 1).
        num_heads, head_dim, num_layers, ffn_dim: transformer size (width ``num_heads * head_dim``).
        text_dim: width of ``text_embeddings`` (UMT5-XXL: 4096).
        frequency_dim: sinusoid features of the timestep embedding.
        cross_attention_norm: LayerNorm before every cross-attention.
        norm_epsilon: epsilon of the LayerNorms and the QK RMS norms.
        rope_max_seq_len: the largest frame / row / column count the RoPE tables cover.
        num_extra_input_channels: channels concatenated to the latents (I2V: 20, mask and frame latents).
        image_dim: width of ``image_embeddings`` (I2V: 1280); ``None``: no image input.
        image_length: image tokens per sample (CLIP ViT-H/14: 257).
        dtype: dtype policy.

    Inputs: ``latents (B, F, H, W, C + num_extra_input_channels)``, ``timesteps (B,)``,
    ``text_embeddings (B, L, text_dim)``, ``text_mask (B, L)`` and ``pooled_text
    (B, text_dim)`` (both unused), and with ``image_dim`` ``image_embeddings (B,
    image_length, image_dim)``. Output: ``(B, F, H, W, C)``.

    Example:
        >>> model = Wan.from_preset("wan_tiny")                   # 2 frames of 8x8x4 latents, text 16 wide
        >>> text = keras.ops.ones((1, 5, 16))
        >>> inputs = dict(latents=keras.ops.zeros((1, 2, 8, 8, 4)), timesteps=keras.ops.ones((1,)),
        ...               text_embeddings=text, text_mask=keras.ops.ones((1, 5)), pooled_text=text[:, 0])
        >>> model(inputs).shape
        (1, 2, 8, 8, 4)
    """

    conditioning = "text"
    learn_sigma = False
    CONFIG_KEYS = (
        "input_shape", "patch_size", "tubelet_size", "num_heads", "head_dim", "num_layers", "ffn_dim", "text_dim",
        "frequency_dim", "cross_attention_norm", "norm_epsilon", "rope_max_seq_len", "num_extra_input_channels",
        "image_dim", "image_length",
    )

    def __init__(
        self,
        input_shape=(21, 60, 104, 16), patch_size=2, tubelet_size=1,
        num_heads=12, head_dim=128, num_layers=30, ffn_dim=8960, text_dim=4096, frequency_dim=256,
        cross_attention_norm=True, norm_epsilon=1e-6, rope_max_seq_len=1024,
        num_extra_input_channels=0, image_dim=None, image_length=257,
        dtype=None, **kwargs,
    ):
        for name, value in (("num_heads", num_heads), ("head_dim", head_dim), ("ffn_dim", ffn_dim),
                            ("text_dim", text_dim), ("frequency_dim", frequency_dim),
                            ("rope_max_seq_len", rope_max_seq_len), ("image_length", image_length)):
            check_int(value, name)
        hidden_dim = num_heads * head_dim
        frames, height, width, channels = check_video_transformer(input_shape, patch_size, tubelet_size, hidden_dim,
                                                                  num_layers, num_heads)
        check_int(num_extra_input_channels, "num_extra_input_channels", minimum=0)
        if image_dim is not None:
            check_int(image_dim, "image_dim")
        rows, cols = height // patch_size, width // patch_size
        token_frames = frames // tubelet_size
        if max(token_frames, rows, cols) > rope_max_seq_len:
            raise ValueError(
                f"`input_shape`={tuple(input_shape)} gives a {token_frames}x{rows}x{cols} token grid, beyond "
                f"`rope_max_seq_len`={rope_max_seq_len}."
            )
        out_width = tubelet_size * patch_size * patch_size * channels
        image_tokens = image_length if image_dim is not None else 0

        # === Layers ===
        self.patch_embedding = PatchEmbedding(patch_size, hidden_dim, tubelet_size=tubelet_size,
                                              name="patch_embedding", dtype=dtype)
        self.text_embedding = MLP(text_dim, output_dim=hidden_dim, inner_dim=hidden_dim, name="text_embedding",
                                  dtype=dtype)
        if image_dim is not None:
            self.image_norm_in = layer_norm("image_norm_in", affine=True, epsilon=1e-5)
            self.image_embedding = MLP(image_dim, output_dim=hidden_dim, inner_dim=image_dim, activation="gelu",
                                       name="image_embedding", dtype=dtype)
            self.image_norm_out = layer_norm("image_norm_out", affine=True, epsilon=1e-5)
        self.time_embedding = TimestepEmbedding(hidden_dim, frequency_dim=frequency_dim, name="time_embedding",
                                                dtype=dtype)
        self.shared_modulation = AdaLNModulation(6 * hidden_dim, 1, zero_init=False, name="shared_modulation",
                                                 dtype=dtype)
        self.blocks = [
            WanBlock(hidden_dim, num_heads, ffn_dim, cross_attention_norm=cross_attention_norm,
                     norm_epsilon=norm_epsilon, image_length=image_tokens, name=f"block_{i}", dtype=dtype)
            for i in range(num_layers)
        ]
        self.final_layer = FinalLayer(out_width, epsilon=norm_epsilon, modulation="single", name="final_layer",
                                      dtype=dtype)
        self.unpatchify = Unpatchify(patch_size, channels, tubelet_size=tubelet_size, grid_size=(rows, cols),
                                     name="unpatchify", dtype=dtype)

        # === Functional model ===
        inputs = backbone_inputs((frames, height, width, channels + num_extra_input_channels), "text", text_dim)
        t = self.time_embedding(inputs["timesteps"])
        block_condition = self.shared_modulation(t)[0]  # (B, 6D)
        context = self.text_embedding(inputs["text_embeddings"])
        if image_dim is not None:
            inputs["image_embeddings"] = keras.Input(shape=(image_length, image_dim), name="image_embeddings")
            image = normed(self.image_norm_in, inputs["image_embeddings"])
            image = normed(self.image_norm_out, self.image_embedding(image))
            context = ops.concatenate([image, context], axis=1)
        x = ops.reshape(self.patch_embedding(inputs["latents"]), (-1, token_frames * rows * cols, hidden_dim))
        rope = wan_rope_angles(token_frames, rows, cols, head_dim)
        for block in self.blocks:
            x = block(x, block_condition, context, rope=rope)
        x = self.final_layer(x, t)
        outputs = self.unpatchify(ops.reshape(x, (-1, token_frames, rows * cols, out_width)))
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.store_config(locals(), hidden_dim=hidden_dim, in_channels=channels, out_channels=channels,
                          latent_shape=(frames, height, width, channels))


# === Presets === (data; registered by keras_vdiff.models)
# The released transformer configs (Wan-AI/Wan2.1-{T2V-1.3B,T2V-14B,I2V-14B-480P}-Diffusers transformer/config.json):
# 81 video frames -> 21 latent frames (VAE stride 4, 8, 8, z 16); UMT5-XXL text (4096 wide, padded to 512 tokens).
_WAN_14B = dict(patch_size=2, num_heads=40, head_dim=128, num_layers=40, ffn_dim=13824, text_dim=4096)
WAN_PRESETS = {
    "wan2_1_t2v_1_3b": dict(
        class_name="Wan",
        config=dict(input_shape=(21, 60, 104, 16), patch_size=2, num_heads=12, head_dim=128, num_layers=30,
                    ffn_dim=8960, text_dim=4096),
        description="Wan2.1-T2V-1.3B's transformer (Wan Team 2025): 30 layers, 12 heads x 128, FFN 8960, 3D RoPE, "
                    "21 latent frames of 60x104x16 (81 frames of 480x832), UMT5-XXL text; 1.42B, random init.",
        metadata=dict(paper="arXiv:2503.20314"),
    ),
    "wan2_1_t2v_14b": dict(
        class_name="Wan",
        config=dict(_WAN_14B, input_shape=(21, 90, 160, 16)),
        description="Wan2.1-T2V-14B's transformer (Wan Team 2025): 40 layers, 40 heads x 128, FFN 13824, 3D RoPE, "
                    "21 latent frames of 90x160x16 (81 frames of 720x1280), UMT5-XXL text; 14.3B, random init.",
        metadata=dict(paper="arXiv:2503.20314"),
    ),
    "wan2_1_i2v_14b_480p": dict(
        class_name="Wan",
        config=dict(_WAN_14B, input_shape=(21, 60, 104, 16), num_extra_input_channels=20, image_dim=1280,
                    image_length=257),
        description="Wan2.1-I2V-14B-480P's transformer (Wan Team 2025): the 14B model with 36 input channels (noise, "
                    "a 4-channel frame mask, the conditioning frames' latents) and the CLIP ViT-H/14 image tokens "
                    "(257 x 1280) in every cross-attention; 21 latent frames of 60x104; random init.",
        metadata=dict(paper="arXiv:2503.20314"),
    ),
    "wan_tiny": dict(
        class_name="Wan",
        config=dict(input_shape=(2, 8, 8, 4), patch_size=2, num_heads=2, head_dim=12, num_layers=2, ffn_dim=32,
                    text_dim=16, rope_max_seq_len=32),
        description="A tiny Wan for tests and CPU experiments (2 frames of 8x8x4, diffusers' test sizes).",
    ),
}
