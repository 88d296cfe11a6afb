"""diffusers' ``DiTTransformer2DModel`` (``facebook/DiT-XL-2-256`` / ``-512``) -> :class:`kv.models.DiT`.

diffusers' DiT differs from the paper's code in three numerical details that
the converted model reproduces through :class:`DiT` options: the timestep
sinusoids use ``downscale_freq_shift=1`` (``timestep_frequency_shift=1``), the
LayerNorm before each MLP has the config's ``norm_eps`` (``mlp_norm_epsilon``),
and the spatial sin-cos table is columns-first (``pos_embed_order``).

Every block of diffusers' DiT holds its own copy of the timestep and label
embedding (``transformer_blocks.i.norm1.emb``); the released checkpoints were
converted from the paper's single shared one, so all copies are equal. This
converter keeps one and raises if the copies differ (a model fine-tuned in
diffusers with per-block embeddings cannot be expressed by :class:`DiT`).

Tensor names (Linear weights transposed)::

    pos_embed.proj (Conv2d)                                   -> patch_embedding.projection
    transformer_blocks.0.norm1.emb.timestep_embedder.linear_{1,2} -> timestep_embedding.dense_{1,2}
    transformer_blocks.0.norm1.emb.class_embedder.embedding_table -> label_embedding.table (row K: null class)
    transformer_blocks.i.norm1.linear (D -> 6D)               -> block_i.modulation.projection
    transformer_blocks.i.attn1.to_{q,k,v}, to_out.0           -> block_i.attention.{query,key,value,output_projection}
    transformer_blocks.i.ff.net.0.proj, ff.net.2              -> block_i.mlp.fc{1,2}
    proj_out_1 (D -> 2D)                                      -> final_layer.modulation.projection
    proj_out_2                                                -> final_layer.projection
"""

import numpy as np

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
from keras_vdiff.models.dit import DiT

__all__ = ["convert_dit", "dit_config"]

CLASS_NAME = "DiTTransformer2DModel"
SUPPORTED = {
    "norm_type": ("ada_norm_zero",),
    "norm_elementwise_affine": (False,),
    "attention_bias": (True,),
    "activation_fn": ("gelu-approximate",),
    "upcast_attention": (False,),
}
EMBEDDING = "norm1.emb"


def dit_config(config, dtype=None):
    """The :class:`DiT` constructor arguments of a ``DiTTransformer2DModel`` ``config.json``."""
    check_config(config, SUPPORTED, CLASS_NAME)
    heads, head_dim = int(config.get("num_attention_heads", 16)), int(config.get("attention_head_dim", 72))
    in_channels = int(config.get("in_channels", 4))
    return dict(
        image_size=int(config.get("sample_size", 32)),
        in_channels=in_channels,
        patch_size=int(config.get("patch_size", 2)),
        hidden_dim=heads * head_dim,
        num_layers=int(config.get("num_layers", 28)),
        num_heads=heads,
        num_classes=int(config.get("num_embeds_ada_norm", 1000)),
        learn_sigma=learns_sigma(config, CLASS_NAME, in_channels),
        pos_embed_order="columns_first",
        timestep_frequency_shift=1,
        mlp_norm_epsilon=float(config.get("norm_eps", 1e-5)),
        dtype=dtype,
    )


def _check_shared_embedding(folder, num_blocks):
    """Check that every block's copy of the timestep / label embedding equals block 0's (marking the copies used)."""
    first = f"transformer_blocks.0.{EMBEDDING}."
    reference = {n[len(first):]: folder.take(n) for n in folder.names if n.startswith(first)}
    for i in range(1, num_blocks):
        for name, value in reference.items():
            other = f"transformer_blocks.{i}.{EMBEDDING}.{name}"
            if other not in folder:
                raise ConversionError(
                    f"{folder.path!r} has no {other!r} (block {i}'s copy of the condition embedding)."
                )
            if not np.array_equal(folder.take(other), value):
                raise ConversionError(
                    f"{other!r} differs from block 0's copy: this DiT has a separate timestep / label embedding per "
                    "block, which kv.models.DiT (one shared embedding, as in the paper and the released checkpoints) "
                    "cannot express."
                )


def convert_dit(folder, dtype=None):
    """A built :class:`DiT` carrying the weights of a ``DiTTransformer2DModel`` folder.

    Inputs and outputs are channels-last (``latents (B, H, W, C)``); ``timesteps``
    and ``class_labels`` as diffusers takes them, label ``num_classes`` the null class.

    Args:
        folder: a :class:`~keras_vdiff.convert.checkpoint.PretrainedFolder`.
        dtype: dtype policy of the model.
    """
    config = dit_config(folder.config, dtype)
    num_blocks = len(folder.numbered("transformer_blocks"))
    if num_blocks != config["num_layers"]:
        raise ConversionError(f"{folder.path!r} has {num_blocks} blocks; its config says {config['num_layers']}.")
    model = DiT(**config)
    grid = config["image_size"] // config["patch_size"]
    check_fixed_table(folder, "pos_embed.pos_embed",
                      sincos_embedding_2d(grid, grid, config["hidden_dim"], order="columns_first"))
    patch_embedding(folder, "pos_embed.proj", model.patch_embedding)
    _check_shared_embedding(folder, num_blocks)
    emb = f"transformer_blocks.0.{EMBEDDING}"
    linear(folder, f"{emb}.timestep_embedder.linear_1", model.timestep_embedding.dense_1)
    linear(folder, f"{emb}.timestep_embedder.linear_2", model.timestep_embedding.dense_2)
    table = folder.take(f"{emb}.class_embedder.embedding_table.weight")
    if table.shape[0] != config["num_classes"] + 1:
        raise ConversionError(
            f"{emb}.class_embedder.embedding_table has {table.shape[0]} rows; kv.models.DiT needs the "
            f"{config['num_classes']} classes plus the null class of classifier-free guidance."
        )
    assign(model.label_embedding.table.embeddings, table, f"{emb}.class_embedder.embedding_table.weight")
    for i, block in enumerate(model.blocks):
        prefix = f"transformer_blocks.{i}"
        linear(folder, f"{prefix}.norm1.linear", block.modulation.projection)
        for name, dense in (("to_q", block.attention.query), ("to_k", block.attention.key),
                            ("to_v", block.attention.value), ("to_out.0", block.attention.output_projection)):
            linear(folder, f"{prefix}.attn1.{name}", dense)
        linear(folder, f"{prefix}.ff.net.0.proj", block.mlp.fc1)
        linear(folder, f"{prefix}.ff.net.2", block.mlp.fc2)
    linear(folder, "proj_out_1", model.final_layer.modulation.projection)
    linear(folder, "proj_out_2", model.final_layer.projection)
    folder.check_all_taken()
    return model
