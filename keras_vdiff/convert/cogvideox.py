"""diffusers' ``CogVideoXTransformer3DModel`` (``THUDM/CogVideoX-2b``, ``-5b``, ``CogVideoX1.5-5B``) -> :class:`kv.models.CogVideoX`.

Tensor names (PyTorch ``Linear`` weights are ``(out, in)`` and transposed)::

    patch_embed.proj (Conv2d D x C x p x p | 1.5: Linear over (C, pt, p, p))  -> patch_embedding.projection
    patch_embed.text_proj                                 -> text_projection
    time_embedding.linear_{1,2}                           -> time_embedding.dense_{1,2}
    transformer_blocks.i.norm{1,2}.linear (-> 6D)         -> block_i.modulation{1,2}.projection
    transformer_blocks.i.norm{1,2}.norm                   -> block_i.norm{1,2}
    transformer_blocks.i.attn1.to_{q,k,v}, to_out.0       -> block_i.attention.{query,key,value,output_projection}
    transformer_blocks.i.attn1.norm_{q,k}                 -> block_i.attention.{query,key}_norm
    transformer_blocks.i.ff.net.0.proj, ff.net.2          -> block_i.mlp.fc{1,2}
    norm_final                                            -> norm_final
    norm_out.linear (-> 2D: shift, scale), norm_out.norm  -> final_layer.modulation.projection, final_layer.norm
    proj_out (rows (C, [pt,] p, p))                       -> final_layer.projection (columns ([pt,] p, p, C))

With RoPE the query and key channels of every head are reordered from
diffusers' interleaved pairs ``(0, 1), (2, 3) ...`` to the half-split layout of
:func:`~keras_vdiff.layers.embeddings.apply_rope` (even channels, then odd):
the attention scores are unchanged, and the per-head QK LayerNorm, which sees
every channel alike, is reordered with them.

The model is built for the config's sample size (``sample_frames`` video
frames -> ``(sample_frames - 1) // temporal_compression_ratio + 1`` latent
frames, rounded up to whole tubelets as the 1.5 pipeline pads them); every
weight is independent of the size, so ``CogVideoX.from_config({**config,
"input_shape": ...})`` plus ``set_weights`` gives other sizes. The RoPE angles,
which diffusers' pipelines compute and pass in, are computed by the model.
"""

import numpy as np

from keras_vdiff.convert.checkpoint import ConversionError, assign, check_config, linear, patch_embedding
from keras_vdiff.models.cogvideox import CogVideoX

__all__ = ["convert_cogvideox", "cogvideox_config"]

CLASS_NAME = "CogVideoXTransformer3DModel"
SUPPORTED = {
    "activation_fn": ("gelu-approximate",),
    "timestep_activation_fn": ("silu",),
    "flip_sin_to_cos": (True,),
    "ofs_embed_dim": (None, 0),  # CogVideoX1.5-5B-I2V's "ofs" embedding: image-to-video, not here
}


def cogvideox_config(config, dtype=None):
    """The :class:`CogVideoX` constructor arguments of a ``CogVideoXTransformer3DModel`` ``config.json``.

    Raises:
        ConversionError: a field whose value this library does not support, named with its value.
    """
    check_config(config, SUPPORTED, CLASS_NAME)
    get = lambda field, default: default if config.get(field) is None else config[field]  # noqa: E731
    in_channels, out_channels = int(get("in_channels", 16)), int(get("out_channels", 16))
    if out_channels != in_channels:
        raise ConversionError(
            f"{CLASS_NAME} config field `out_channels`={out_channels} differs from `in_channels`={in_channels}: "
            "that is an image-to-video model (noise and image latents stacked), which needs an image-conditioned "
            "task this library does not have; text-to-video models have out_channels == in_channels."
        )
    rope = bool(get("use_rotary_positional_embeddings", False))
    if get("use_learned_positional_embeddings", False):
        raise ConversionError(
            f"{CLASS_NAME} config field `use_learned_positional_embeddings`=True (CogVideoX-5b-I2V) is not "
            "supported: only the image-to-video model has it; the fixed sin-cos table and RoPE are."
        )
    heads, head_dim = int(get("num_attention_heads", 30)), int(get("attention_head_dim", 64))
    if rope and head_dim % 16:
        raise ConversionError(
            f"{CLASS_NAME} config field `attention_head_dim`={head_dim} is not supported with "
            "`use_rotary_positional_embeddings`=True: the 3D RoPE splits each head 1/4, 3/8, 3/8 into even "
            "parts, so it must be divisible by 16 (diffusers' pipelines cannot run it either)."
        )
    if not rope and (heads * head_dim) % 16:
        raise ConversionError(
            f"{CLASS_NAME} config fields `num_attention_heads`={heads} x `attention_head_dim`={head_dim} are not "
            "supported: the 3D sin-cos table needs a width divisible by 16."
        )
    patch_size_t = config.get("patch_size_t")
    if patch_size_t is not None and not rope:
        raise ConversionError(
            f"{CLASS_NAME} config field `patch_size_t`={patch_size_t!r} is not supported with "
            "`use_rotary_positional_embeddings`=False: diffusers builds the sin-cos table per latent frame, which "
            "does not fit tubelet tokens."
        )
    tubelet = int(patch_size_t or 1)
    ratio = int(get("temporal_compression_ratio", 4))
    latent_frames = (int(get("sample_frames", 49)) - 1) // ratio + 1
    frames = -(-latent_frames // tubelet) * tubelet  # the 1.5 pipeline pads to whole tubelets
    height, width = int(get("sample_height", 60)), int(get("sample_width", 90))
    return dict(
        input_shape=(frames, height, width, in_channels),
        patch_size=int(get("patch_size", 2)),
        tubelet_size=tubelet,
        num_heads=heads,
        head_dim=head_dim,
        num_layers=int(get("num_layers", 30)),
        time_embed_dim=int(get("time_embed_dim", 512)),
        text_dim=int(get("text_embed_dim", 4096)),
        text_length=int(get("max_text_seq_length", 226)),
        position="rope" if rope else "sincos",
        spatial_interpolation_scale=float(get("spatial_interpolation_scale", 1.875)),
        temporal_interpolation_scale=float(get("temporal_interpolation_scale", 1.0)),
        rope_positions="crop" if patch_size_t is None else "grid",
        sample_size=(height, width),
        timestep_frequency_shift=int(get("freq_shift", 0)),
        attention_bias=bool(get("attention_bias", True)),
        patch_bias=bool(get("patch_bias", True)) if patch_size_t is None else True,  # 1.5's Linear has a bias
        norm_epsilon=float(get("norm_eps", 1e-5)),
        norm_affine=bool(get("norm_elementwise_affine", True)),
        dtype=dtype,
    )


def _norm(folder, prefix, norm):
    """A PyTorch ``LayerNorm`` ``{prefix}.weight`` / ``.bias`` (when it has them) into a Keras LayerNormalization."""
    if norm.gamma is not None:
        assign(norm.gamma, folder.take(prefix + ".weight"), prefix + ".weight")
    if norm.beta is not None:
        assign(norm.beta, folder.take(prefix + ".bias"), prefix + ".bias")


def _half_split(num_heads, head_dim):
    """Channel order taking each head's interleaved RoPE pairs to even channels first, then odd."""
    within = np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])
    return (np.arange(num_heads)[:, None] * head_dim + within[None]).ravel(), within


def _attention(folder, prefix, attention, rope):
    heads, head_dim = attention.num_heads, attention.head_dim
    channels, within = _half_split(heads, head_dim) if rope else (slice(None), slice(None))
    for name, dense, order in (("to_q", attention.query, channels), ("to_k", attention.key, channels),
                               ("to_v", attention.value, slice(None))):
        assign(dense.kernel, folder.take(f"{prefix}.{name}.weight")[order].T, f"{prefix}.{name}.weight")
        if dense.use_bias:
            assign(dense.bias, folder.take(f"{prefix}.{name}.bias")[order], f"{prefix}.{name}.bias")
        elif f"{prefix}.{name}.bias" in folder:
            raise ConversionError(f"{folder.path!r} has {prefix}.{name}.bias but `attention_bias` is False.")
    linear(folder, f"{prefix}.to_out.0", attention.output_projection)
    for name, norm in (("norm_q", attention.query_norm), ("norm_k", attention.key_norm)):
        for field, variable in (("weight", norm.gamma), ("bias", norm.beta)):
            assign(variable, folder.take(f"{prefix}.{name}.{field}")[within], f"{prefix}.{name}.{field}")


def _patch_embedding(folder, model):
    layer, p, pt = model.patch_embedding, model.patch_size, model.tubelet_size
    if folder.config.get("patch_size_t") is None:  # a 1.0 model: Conv2d per frame
        if model.patch_bias:
            patch_embedding(folder, "patch_embed.proj", layer)
        else:
            conv = folder.take("patch_embed.proj.weight")
            assign(layer.projection.kernel, np.transpose(conv, (2, 3, 1, 0)).reshape(-1, conv.shape[0]),
                   "patch_embed.proj.weight")
        return
    weight = folder.take("patch_embed.proj.weight")  # (D, C * pt * p * p), input features (C, pt, p, p)
    channels = model.in_channels
    kernel = weight.reshape(-1, channels, pt, p, p).transpose(2, 3, 4, 1, 0).reshape(-1, weight.shape[0])
    assign(layer.projection.kernel, kernel, "patch_embed.proj.weight")
    assign(layer.projection.bias, folder.take("patch_embed.proj.bias"), "patch_embed.proj.bias")


def _output_projection(folder, model):
    """``proj_out`` rows ``(C, pt, p, p)`` -> the Dense's columns ``(pt, p, p, C)`` that ``Unpatchify`` reads."""
    p, pt, channels = model.patch_size, model.tubelet_size, model.out_channels
    weight, bias = folder.take("proj_out.weight"), folder.take("proj_out.bias")
    order = np.arange(weight.shape[0]).reshape(channels, pt, p, p).transpose(1, 2, 3, 0).ravel()
    dense = model.final_layer.projection
    assign(dense.kernel, weight[order].T, "proj_out.weight")
    assign(dense.bias, bias[order], "proj_out.bias")


def convert_cogvideox(folder, dtype=None):
    """A built :class:`CogVideoX` carrying the weights of a ``CogVideoXTransformer3DModel`` folder.

    Inputs and outputs are channels-last: diffusers' ``hidden_states (B, F, C, H, W)``
    is our ``latents (B, F, H, W, C)``; ``encoder_hidden_states`` are
    ``text_embeddings`` (``max_text_seq_length`` tokens; ``text_mask`` and
    ``pooled_text`` are unused, as diffusers takes neither).

    Args:
        folder: a :class:`~keras_vdiff.convert.checkpoint.PretrainedFolder`.
        dtype: dtype policy of the model (weights are cast as they load).
    """
    config = cogvideox_config(folder.config, dtype)
    model = CogVideoX(**config)
    rope = config["position"] == "rope"
    folder.skip("patch_embed.pos_embedding")  # diffusers' non-persistent sin-cos buffer, if a folder carries it

    _patch_embedding(folder, model)
    linear(folder, "patch_embed.text_proj", model.text_projection)
    linear(folder, "time_embedding.linear_1", model.time_embedding.dense_1)
    linear(folder, "time_embedding.linear_2", model.time_embedding.dense_2)
    blocks = folder.numbered("transformer_blocks")
    if len(blocks) != config["num_layers"]:
        raise ConversionError(
            f"{folder.path!r} has {len(blocks)} transformer blocks; its config says num_layers={config['num_layers']}."
        )
    for i, block in zip(blocks, model.blocks):
        prefix = f"transformer_blocks.{i}"
        for k in (1, 2):
            linear(folder, f"{prefix}.norm{k}.linear", getattr(block, f"modulation{k}").projection)
            _norm(folder, f"{prefix}.norm{k}.norm", getattr(block, f"norm{k}"))
        _attention(folder, f"{prefix}.attn1", block.attention, rope)
        linear(folder, f"{prefix}.ff.net.0.proj", block.mlp.fc1)
        linear(folder, f"{prefix}.ff.net.2", block.mlp.fc2)
    _norm(folder, "norm_final", model.norm_final)
    linear(folder, "norm_out.linear", model.final_layer.modulation.projection)
    _norm(folder, "norm_out.norm", model.final_layer.norm)
    _output_projection(folder, model)
    folder.check_all_taken()
    return model
