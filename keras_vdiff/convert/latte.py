"""diffusers' ``LatteTransformer3DModel`` (the released Latte-1, ``maxin-cn/Latte-1``) -> :class:`kv.models.Latte`.

Latte-1 is Latte variant 1 (spatial and temporal blocks interleaved) with
PixArt-alpha's text conditioning. In this library's terms it is
``Latte(variant=1, conditioning="text", text_placement="v2", adaln="single",
caption_projection=True, cross_attention_norm=False, pooled_text=False,
pos_embed_order="columns_first")``. diffusers' ``num_layers`` counts pairs
(one spatial + one temporal block); ours counts blocks, so it doubles.

Tensor names (PyTorch ``Linear`` weights are ``(out, in)`` and transposed)::

    pos_embed.proj (Conv2d D x C x p x p)                 -> patch_embedding.projection
    adaln_single.emb.timestep_embedder.linear_{1,2}       -> condition_embedding.timestep_embedding.dense_{1,2}
    adaln_single.linear (D -> 6D)                         -> shared_modulation.projection
    caption_projection.linear_{1,2}                       -> caption_projection.fc{1,2}
    transformer_blocks.i.scale_shift_table (6, D)         -> spatial_block_i.modulation.table
    transformer_blocks.i.attn1.to_{q,k,v}, to_out.0       -> spatial_block_i.attention.{query,key,value,output_projection}
    transformer_blocks.i.attn2.*                          -> spatial_block_i.cross_attention.*
    transformer_blocks.i.ff.net.0.proj, ff.net.2          -> spatial_block_i.mlp.fc{1,2}
    temporal_transformer_blocks.i.*                       -> temporal_block_i.* (no attn2)
    scale_shift_table (2, D)                              -> final_layer.modulation.table
    proj_out                                              -> final_layer.projection

The fixed sin-cos tables (``pos_embed.pos_embed``, ``temp_pos_embed``) are
recomputed; when a folder carries them they are checked against ours.
"""

from keras_vdiff.convert.checkpoint import (
    ConversionError,
    assign,
    check_config,
    check_fixed_table,
    learns_sigma,
    linear,
    patch_embedding,
)
from keras_vdiff.layers.embeddings import sincos_embedding_2d
from keras_vdiff.models.latte import Latte

__all__ = ["convert_latte", "latte_config"]

CLASS_NAME = "LatteTransformer3DModel"
# diffusers' feed-forward activation names -> the MLP's.
ACTIVATIONS = {"gelu-approximate": "gelu_tanh", "gelu": "gelu", "geglu": "geglu"}
SUPPORTED = {
    "norm_type": ("ada_norm_single",),
    "norm_elementwise_affine": (False,),
    "attention_bias": (True,),
    "activation_fn": tuple(ACTIVATIONS),
}


def latte_config(config, dtype=None):
    """The :class:`Latte` constructor arguments of a ``LatteTransformer3DModel`` ``config.json``.

    Raises:
        ConversionError: a field whose value this library does not support, named with its value.
    """
    check_config(config, SUPPORTED, CLASS_NAME)
    for field in ("patch_size", "caption_channels", "in_channels"):
        if not config.get(field):
            raise ConversionError(f"{CLASS_NAME} config field `{field}`={config.get(field)!r} must be set.")
    heads, head_dim = int(config.get("num_attention_heads", 16)), int(config.get("attention_head_dim", 88))
    width = heads * head_dim
    cross = config.get("cross_attention_dim")
    if cross is not None and cross != width:
        raise ConversionError(
            f"{CLASS_NAME} config field `cross_attention_dim`={cross!r} is not supported: the caption projection "
            f"maps the text to the model width {width}, which the cross-attention keys must take."
        )
    in_channels = int(config["in_channels"])
    size = int(config.get("sample_size", 64))
    return dict(
        input_shape=(int(config.get("video_length", 16)), size, size, in_channels),
        patch_size=int(config["patch_size"]),
        hidden_dim=width,
        num_layers=2 * int(config.get("num_layers", 1)),
        num_heads=heads,
        mlp_ratio=4.0,
        variant=1,
        conditioning="text",
        text_dim=int(config["caption_channels"]),
        text_placement="v2",
        learn_sigma=learns_sigma(config, CLASS_NAME, in_channels),
        adaln="single",
        caption_projection=True,
        cross_attention_norm=False,
        pooled_text=False,
        pos_embed_order="columns_first",
        interpolation_scale=float(max(size // 64, 1)),
        mlp_activation=ACTIVATIONS[config.get("activation_fn", "geglu")],
        norm_epsilon=float(config.get("norm_eps", 1e-5)),
        dtype=dtype,
    )


def _attention(folder, prefix, attention):
    for name, dense in (("to_q", attention.query), ("to_k", attention.key), ("to_v", attention.value),
                        ("to_out.0", attention.output_projection)):
        linear(folder, f"{prefix}.{name}", dense)


def _block(folder, prefix, block):
    assign(block.modulation.table, folder.take(f"{prefix}.scale_shift_table"), f"{prefix}.scale_shift_table")
    _attention(folder, f"{prefix}.attn1", block.attention)
    if block.cross_attention:
        _attention(folder, f"{prefix}.attn2", block.cross)
    linear(folder, f"{prefix}.ff.net.0.proj", block.mlp.fc1)
    linear(folder, f"{prefix}.ff.net.2", block.mlp.fc2)


def convert_latte(folder, dtype=None):
    """A built :class:`Latte` carrying the weights of a ``LatteTransformer3DModel`` folder.

    Inputs and outputs are channels-last: diffusers' ``hidden_states (B, C, F, H, W)``
    is our ``latents (B, F, H, W, C)``; ``encoder_hidden_states`` are
    ``text_embeddings`` (``text_mask`` all ones where diffusers passes no mask).

    Args:
        folder: a :class:`~keras_vdiff.convert.checkpoint.PretrainedFolder`.
        dtype: dtype policy of the model (weights are cast as they load).
    """
    config = latte_config(folder.config, dtype)
    model = Latte(**config)
    frames, size, _, _ = config["input_shape"]
    grid = size // config["patch_size"]
    check_fixed_table(folder, "pos_embed.pos_embed", sincos_embedding_2d(
        grid, grid, config["hidden_dim"], order="columns_first", interpolation_scale=config["interpolation_scale"]))
    folder.skip("temp_pos_embed")  # a non-persistent buffer; recomputed

    patch_embedding(folder, "pos_embed.proj", model.patch_embedding)
    timestep = model.condition_embedding.timestep_embedding
    linear(folder, "adaln_single.emb.timestep_embedder.linear_1", timestep.dense_1)
    linear(folder, "adaln_single.emb.timestep_embedder.linear_2", timestep.dense_2)
    linear(folder, "adaln_single.linear", model.shared_modulation.projection)
    linear(folder, "caption_projection.linear_1", model.caption_projector.fc1)
    linear(folder, "caption_projection.linear_2", model.caption_projector.fc2)
    pairs = len(folder.numbered("transformer_blocks"))
    if pairs != config["num_layers"] // 2 or len(folder.numbered("temporal_transformer_blocks")) != pairs:
        raise ConversionError(
            f"{folder.path!r} has {pairs} spatial and {len(folder.numbered('temporal_transformer_blocks'))} "
            f"temporal blocks; its config says num_layers={config['num_layers'] // 2}."
        )
    spatial = [b for b in model.blocks if b.name.startswith("spatial_block_")]
    temporal = [b for b in model.blocks if b.name.startswith("temporal_block_")]
    for i in range(pairs):
        _block(folder, f"transformer_blocks.{i}", spatial[i])
        _block(folder, f"temporal_transformer_blocks.{i}", temporal[i])
    assign(model.final_layer.modulation.table, folder.take("scale_shift_table"), "scale_shift_table")
    linear(folder, "proj_out", model.final_layer.projection)
    folder.check_all_taken()
    return model
