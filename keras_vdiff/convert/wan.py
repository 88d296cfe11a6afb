"""diffusers' ``WanTransformer3DModel`` (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``, ``-14B``, ``I2V-14B``) -> :class:`kv.models.Wan`.

Tensor names (PyTorch ``Linear`` weights are ``(out, in)`` and transposed)::

    patch_embedding (Conv3d D x C x pt x p x p)                 -> patch_embedding.projection
    condition_embedder.time_embedder.linear_{1,2}               -> time_embedding.dense_{1,2}
    condition_embedder.time_proj (D -> 6D)                      -> shared_modulation.projection
    condition_embedder.text_embedder.linear_{1,2}               -> text_embedding.fc{1,2}
    condition_embedder.image_embedder.norm{1,2}, ff.net.{0.proj,2}  -> image_norm_{in,out}, image_embedding.fc{1,2}
    blocks.i.scale_shift_table (1, 6, D)                        -> block_i.modulation.table
    blocks.i.attn1.to_{q,k,v}, to_out.0, norm_{q,k}             -> block_i.attention.*
    blocks.i.norm2 (the LayerNorm before the cross-attention)   -> block_i.norm_cross
    blocks.i.attn2.to_{q,k,v}, to_out.0, norm_{q,k}             -> block_i.cross_attention.*
    blocks.i.attn2.add_{k,v}_proj, norm_added_k (I2V)           -> block_i.cross_attention.image_{key,value}, image_key_norm
    blocks.i.ffn.net.0.proj, ffn.net.2                          -> block_i.mlp.fc{1,2}
    scale_shift_table (1, 2, D), proj_out                       -> final_layer.modulation.table, final_layer.projection

The self-attention's query and key channels of every head are reordered from
diffusers' interleaved RoPE pairs to the half-split layout of
:func:`~keras_vdiff.layers.embeddings.apply_rope`, with the weights of their
RMS norms (a norm over all channels, indifferent to their order): the
attention scores are unchanged. ``qk_norm`` is not read: diffusers' Wan
attention normalises queries and keys across heads whatever it says.

The model is built for Wan's 480x832 videos of 81 frames (21 latent frames of
60x104), each axis capped at what ``rope_max_seq_len`` covers; every weight is
independent of the size, so ``input_shape=`` here, or ``Wan.from_config({**config,
"input_shape": ...})`` plus ``set_weights``, gives other sizes.
"""

import os

import numpy as np

from keras_vdiff.convert.checkpoint import ConversionError, assign, check_config, linear
from keras_vdiff.convert.cogvideox import _half_split
from keras_vdiff.models.wan import Wan

__all__ = ["convert_wan", "wan_config", "wan_text_arguments"]

CLASS_NAME = "WanTransformer3DModel"
WAN_LATENT_GRID = (21, 60, 104)  # the pipeline's default 81 frames of 480x832 through the VAE's (4, 8, 8) strides
CLIP_IMAGE_TOKENS = 257  # Wan I2V's CLIP ViT-H/14 image tokens (diffusers' pipeline: the penultimate hidden state)
SUPPORTED = {
    "eps": (1e-6,),  # also the QK RMS norms' epsilon, which keras_vdiff fixes at 1e-6
    "pos_embed_seq_len": (None,),  # the first-last-frame model's two images: not supported
}


def wan_config(config, dtype=None, input_shape=None):
    """The :class:`Wan` constructor arguments of a ``WanTransformer3DModel`` ``config.json``.

    Args:
        config: the parsed config.
        dtype: dtype policy.
        input_shape: ``(frames, height, width)`` of the latents (without channels); default: Wan's
            21 x 60 x 104, each axis capped at ``rope_max_seq_len`` tokens.

    Raises:
        ConversionError: a field whose value this library does not support, named with its value.
    """
    check_config(config, SUPPORTED, CLASS_NAME)
    get = lambda field, default: default if config.get(field) is None else config[field]  # noqa: E731
    patch = tuple(int(p) for p in get("patch_size", (1, 2, 2)))
    if len(patch) != 3 or patch[1] != patch[2]:
        raise ConversionError(
            f"{CLASS_NAME} config field `patch_size`={list(patch)} is not supported: keras_vdiff patches are "
            "(frames, p, p) with square spatial patches."
        )
    heads, head_dim = int(get("num_attention_heads", 40)), int(get("attention_head_dim", 128))
    in_channels = int(get("in_channels", 16))
    out_channels = int(get("out_channels", in_channels)) or in_channels
    if out_channels > in_channels:
        raise ConversionError(
            f"{CLASS_NAME} config field `out_channels`={out_channels} exceeds `in_channels`={in_channels}; the extra "
            "input channels of image-to-video models come after the noise, so out_channels <= in_channels."
        )
    image_dim, added = config.get("image_dim"), config.get("added_kv_proj_dim")
    if (image_dim is None) != (added is None) or (added is not None and int(added) != heads * head_dim):
        raise ConversionError(
            f"{CLASS_NAME} config fields `image_dim`={image_dim!r} and `added_kv_proj_dim`={added!r} are not "
            f"supported: either both None (text-to-video) or an image width and num_attention_heads x "
            f"attention_head_dim = {heads * head_dim} (image-to-video)."
        )
    rope_max = int(get("rope_max_seq_len", 1024))
    if input_shape is None:
        caps = (rope_max * patch[0], rope_max * patch[1], rope_max * patch[2])
        input_shape = tuple(min(size, cap) // p * p for size, cap, p in zip(WAN_LATENT_GRID, caps, patch))
    return dict(
        input_shape=tuple(int(v) for v in input_shape) + (out_channels,),
        patch_size=patch[1],
        tubelet_size=patch[0],
        num_heads=heads,
        head_dim=head_dim,
        num_layers=int(get("num_layers", 40)),
        ffn_dim=int(get("ffn_dim", 13824)),
        text_dim=int(get("text_dim", 4096)),
        frequency_dim=int(get("freq_dim", 256)),
        cross_attention_norm=bool(get("cross_attn_norm", True)),
        norm_epsilon=float(get("eps", 1e-6)),
        rope_max_seq_len=rope_max,
        num_extra_input_channels=in_channels - out_channels,
        image_dim=None if image_dim is None else int(image_dim),
        image_length=CLIP_IMAGE_TOKENS,
        dtype=dtype,
    )


def _layer_norm(folder, prefix, norm):
    assign(norm.gamma, folder.take(prefix + ".weight"), prefix + ".weight")
    assign(norm.beta, folder.take(prefix + ".bias"), prefix + ".bias")


def _attention(folder, prefix, attention, rope):
    """``to_{q,k,v}``, ``to_out.0`` and the across-heads ``norm_{q,k}``; RoPE: q / k channels to the half-split order."""
    order = _half_split(attention.num_heads, attention.head_dim)[0] if rope else slice(None)
    for name, dense, rows in (("to_q", attention.query, order), ("to_k", attention.key, order),
                              ("to_v", attention.value, slice(None))):
        assign(dense.kernel, folder.take(f"{prefix}.{name}.weight")[rows].T, f"{prefix}.{name}.weight")
        assign(dense.bias, folder.take(f"{prefix}.{name}.bias")[rows], f"{prefix}.{name}.bias")
    linear(folder, f"{prefix}.to_out.0", attention.output_projection)
    for name, norm in (("norm_q", attention.query_norm), ("norm_k", attention.key_norm)):
        assign(norm.scale, folder.take(f"{prefix}.{name}.weight")[order], f"{prefix}.{name}.weight")
    folder.skip(f"{prefix}.norm_added_q.weight")  # in some I2V checkpoints, unused (diffusers ignores it too)
    if getattr(attention, "image_length", 0):
        linear(folder, f"{prefix}.add_k_proj", attention.image_key)
        linear(folder, f"{prefix}.add_v_proj", attention.image_value)
        assign(attention.image_key_norm.scale, folder.take(f"{prefix}.norm_added_k.weight"),
               f"{prefix}.norm_added_k.weight")


def convert_wan(folder, dtype=None, input_shape=None):
    """A built :class:`Wan` carrying the weights of a ``WanTransformer3DModel`` folder.

    Inputs and outputs are channels-last: diffusers' ``hidden_states (B, C, F, H, W)``
    is our ``latents (B, F, H, W, C)``; ``encoder_hidden_states`` are
    ``text_embeddings`` and ``encoder_hidden_states_image`` ``image_embeddings``.

    Args:
        folder: a :class:`~keras_vdiff.convert.checkpoint.PretrainedFolder`.
        dtype: dtype policy of the model (weights are cast as they load).
        input_shape: latent ``(frames, height, width)`` to build for (see :func:`wan_config`).
    """
    config = wan_config(folder.config, dtype, input_shape)
    model = Wan(**config)
    conv = folder.take("patch_embedding.weight")  # (D, C, pt, p, p) -> the Dense over (pt, p, p, C) patches
    assign(model.patch_embedding.projection.kernel, np.transpose(conv, (2, 3, 4, 1, 0)).reshape(-1, conv.shape[0]),
           "patch_embedding.weight")
    assign(model.patch_embedding.projection.bias, folder.take("patch_embedding.bias"), "patch_embedding.bias")
    embedder = "condition_embedder"
    linear(folder, f"{embedder}.time_embedder.linear_1", model.time_embedding.dense_1)
    linear(folder, f"{embedder}.time_embedder.linear_2", model.time_embedding.dense_2)
    linear(folder, f"{embedder}.time_proj", model.shared_modulation.projection)
    linear(folder, f"{embedder}.text_embedder.linear_1", model.text_embedding.fc1)
    linear(folder, f"{embedder}.text_embedder.linear_2", model.text_embedding.fc2)
    if config["image_dim"] is not None:
        _layer_norm(folder, f"{embedder}.image_embedder.norm1", model.image_norm_in)
        linear(folder, f"{embedder}.image_embedder.ff.net.0.proj", model.image_embedding.fc1)
        linear(folder, f"{embedder}.image_embedder.ff.net.2", model.image_embedding.fc2)
        _layer_norm(folder, f"{embedder}.image_embedder.norm2", model.image_norm_out)
    for i, block in enumerate(model.blocks):  # a block too many is an unused tensor, one too few a missing one
        prefix = f"blocks.{i}"
        assign(block.modulation.table, folder.take(f"{prefix}.scale_shift_table")[0], f"{prefix}.scale_shift_table")
        _attention(folder, f"{prefix}.attn1", block.attention, rope=True)
        if block.norm_cross is not None:
            _layer_norm(folder, f"{prefix}.norm2", block.norm_cross)
        _attention(folder, f"{prefix}.attn2", block.cross, rope=False)
        linear(folder, f"{prefix}.ffn.net.0.proj", block.mlp.fc1)
        linear(folder, f"{prefix}.ffn.net.2", block.mlp.fc2)
    assign(model.final_layer.modulation.table, folder.take("scale_shift_table")[0], "scale_shift_table")
    linear(folder, "proj_out", model.final_layer.projection)
    folder.check_all_taken()
    return model


WAN_MAX_TOKENS = 512  # WanPipeline's max_sequence_length
WAN_2_2_FIELDS = {"transformer_2": (None, [None, None]), "boundary_ratio": (None,), "expand_timesteps": (False, None)}


def wan_text_arguments(path, index, dtype=None):
    """The text side of a ``WanPipeline`` folder as ``VideoDiffusion`` arguments.

    UMT5 runs with the padding mask and its outputs at padded positions are zeros
    (``UMT5Encoder(zero_padding=True)``: each prompt's ``last_hidden_state`` cut to
    its length and zero-padded to 512 tokens, as ``WanPipeline._get_t5_prompt_embeds``
    builds them); the unconditional branch is the empty prompt encoded the same way.
    Wan 2.2's two-expert pipelines (``transformer_2`` / ``boundary_ratio``) and its
    per-token timesteps (``expand_timesteps``) are refused by name.

    Args:
        path: the pipeline folder.
        index: its parsed ``model_index.json``.
        dtype: dtype policy of the text encoder.
    """
    from keras_vdiff.convert import convert_model_folder
    from keras_vdiff.convert.t5 import tokenizer_from_folder
    from keras_vdiff.tasks import TextToVideoPreprocessor

    for field, allowed in WAN_2_2_FIELDS.items():
        if index.get(field) not in allowed:
            raise ConversionError(
                f"The WanPipeline at {path!r} has `{field}`={index[field]!r}: Wan 2.2's two-expert / per-token-"
                "timestep pipelines are not supported (Wan 2.1: one transformer)."
            )
    text_encoder = convert_model_folder(os.path.join(path, "text_encoder"), dtype=dtype)
    text_encoder.zero_padding = True
    tokenizer = tokenizer_from_folder(os.path.join(path, "tokenizer"), sequence_length=WAN_MAX_TOKENS)
    return dict(text_encoder=text_encoder, preprocessor=TextToVideoPreprocessor(tokenizer), negative_prompt="")
