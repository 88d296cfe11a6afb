"""Import of the official DiT checkpoints (facebookresearch/DiT, PyTorch) into :class:`DiT`.

The released files (``DiT-XL-2-256x256.pt``, ``DiT-XL-2-512x512.pt``) are
PyTorch state dicts of the paper's ``models.DiT``; a training checkpoint of the
official ``train.py`` wraps one under ``"ema"`` (and ``"model"``). The mapping
onto this project's layers::

    x_embedder.proj (Conv2d, D x C x p x p)   -> patch_embedding.projection  (Dense over (p, p, C) patches)
    pos_embed (fixed buffer, 1 x N x D)       -> checked against the sin-cos table; sets pos_embed_order
    t_embedder.mlp.{0,2}                      -> timestep_embedding.dense_{1,2}
    y_embedder.embedding_table (K + 1 rows)   -> label_embedding.table     (row K is the null class)
    blocks.i.attn.qkv (fused, 3D x D)         -> block_i.attention.{query,key,value}
    blocks.i.attn.proj                        -> block_i.attention.output_projection
    blocks.i.mlp.fc{1,2}                      -> block_i.mlp.fc{1,2}
    blocks.i.adaLN_modulation.1 (6 chunks)    -> block_i.modulation.projection
    final_layer.linear                        -> final_layer.projection
    final_layer.adaLN_modulation.1 (2 chunks) -> final_layer.modulation.projection

A PyTorch ``Linear`` weight is ``(out, in)``, a Keras ``Dense`` kernel
``(in, out)``: every Linear is transposed. The chunk orders (shift, scale,
gate for attention then MLP; shift, scale in the final layer), the timestep
features (``[cos | sin]``, 256 frequencies, max period 10000), the LayerNorms
(no affine, eps 1e-6), the tanh-approximated GELU and the unpatchify order
(``nhwpqc``) are the same in both models. The one formula that differs is the
channel layout of the 2D sin-cos table: the official code puts the column
coordinate in the first half, this project the row; the converted model is
built with ``pos_embed_order="columns_first"``.
"""

import numpy as np

from keras_vdiff.layers.embeddings import SINCOS_2D_ORDERS, sincos_embedding_2d
from keras_vdiff.models.dit import DIT_SIZES, DiT

__all__ = ["dit_config_from_torch_state_dict", "dit_from_torch_state_dict", "load_torch_state_dict"]

# Head width of the paper's models: 64, except DiT-XL (1152 / 16 heads = 72).
_PAPER_HEADS = {dims["hidden_dim"]: dims["num_heads"] for dims in DIT_SIZES.values()}
_DEFAULT_HEAD_DIM = 64
_POS_EMBED_ATOL = 1e-4


def _to_numpy(value, key):
    """A float32 numpy copy of a torch tensor or an array-like (bfloat16 / float16 included)."""
    if hasattr(value, "detach"):  # a torch tensor; torch itself is not imported here
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        value = value.numpy()
    try:
        return np.asarray(value, dtype="float32")
    except (TypeError, ValueError) as error:
        raise TypeError(f"State dict entry {key!r} is not a tensor or array: {type(value).__name__}.") from error


def _unwrap(state_dict):
    """The model weights of a state dict or of an official training checkpoint (``{"ema", "model", ...}``)."""
    if not isinstance(state_dict, dict):
        raise TypeError(f"Expected a state dict (a dict of tensors), got {type(state_dict).__name__}.")
    for wrapper in ("ema", "model", "state_dict"):
        if "x_embedder.proj.weight" not in state_dict and isinstance(state_dict.get(wrapper), dict):
            return state_dict[wrapper]
    return state_dict


def _get(state_dict, key, ndim):
    if key not in state_dict:
        raise ValueError(
            f"The state dict has no {key!r}; is it an official DiT checkpoint (facebookresearch/DiT models.py)? "
            f"First keys: {sorted(state_dict)[:8]}."
        )
    value = _to_numpy(state_dict[key], key)
    if value.ndim != ndim:
        raise ValueError(f"State dict entry {key!r} has shape {value.shape}; expected {ndim} dimensions.")
    return value


def _num_blocks(state_dict):
    parts = [key.split(".") for key in state_dict]
    indices = {int(p[1]) for p in parts if len(p) > 2 and p[0] == "blocks" and p[1].isdigit()}
    if not indices:
        raise ValueError("The state dict has no `blocks.{i}.*` entries; is it an official DiT checkpoint?")
    if indices != set(range(len(indices))):
        missing = sorted(set(range(max(indices) + 1)) - indices)
        raise ValueError(f"The state dict's transformer blocks are not numbered 0..n-1: missing blocks {missing}.")
    return len(indices)


def _infer_num_heads(hidden_dim):
    if hidden_dim in _PAPER_HEADS:
        return _PAPER_HEADS[hidden_dim]
    if hidden_dim % _DEFAULT_HEAD_DIM == 0:
        return hidden_dim // _DEFAULT_HEAD_DIM
    raise ValueError(
        f"Cannot infer the number of attention heads of a DiT of width {hidden_dim} (not a paper size and not "
        f"a multiple of {_DEFAULT_HEAD_DIM}); pass `num_heads`."
    )


def _pos_embed_order(pos_embed, grid, hidden_dim):
    """Which sin-cos channel layout the checkpoint's fixed ``pos_embed`` buffer has."""
    errors = {}
    for order in SINCOS_2D_ORDERS:
        table = sincos_embedding_2d(grid, grid, hidden_dim, order=order)
        errors[order] = float(np.abs(table - pos_embed).max())
        if errors[order] <= _POS_EMBED_ATOL:
            return order
    raise ValueError(
        f"The state dict's 'pos_embed' {pos_embed.shape} is not a 2D sin-cos table of a {grid}x{grid} grid "
        f"(max abs difference: {errors}); this converter supports only DiT's fixed sin-cos position embedding."
    )


def dit_config_from_torch_state_dict(state_dict, **config_overrides):
    """The :class:`DiT` constructor arguments that fit an official DiT state dict.

    Inferred: ``hidden_dim``, ``in_channels`` and ``patch_size`` from
    ``x_embedder.proj.weight``; ``image_size`` from the length of
    ``pos_embed``; ``num_layers`` from the ``blocks.{i}`` entries;
    ``mlp_ratio`` from ``blocks.0.mlp.fc1.weight``; ``learn_sigma`` from the
    width of ``final_layer.linear``; ``num_classes`` as the rows of
    ``y_embedder.embedding_table.weight`` minus the null class; and
    ``pos_embed_order`` from the ``pos_embed`` buffer. The head count is not
    stored in the weights: it is the paper's for the paper widths (16 for
    1152 and 1024, 12 for 768, 6 for 384) and ``hidden_dim // 64`` otherwise.
    The released checkpoints were trained with label dropout, so their table
    ends with the null class; a model trained without it has no null row,
    which the weights cannot show (its last class would be read as the null).

    Args:
        state_dict: mapping of official key names to tensors / arrays, or an
            official training checkpoint holding one under ``"ema"``.
        **config_overrides: replace inferred values or set others, e.g.
            ``num_heads=8`` or ``dtype="mixed_bfloat16"``.

    Returns:
        dict of :class:`DiT` keyword arguments.

    Example:
        >>> config = dit_config_from_torch_state_dict(torch.load("DiT-XL-2-256x256.pt", weights_only=True))
        >>> config["hidden_dim"], config["num_layers"], config["num_heads"], config["image_size"]
        (1152, 28, 16, 32)
    """
    state_dict = _unwrap(state_dict)
    proj = _get(state_dict, "x_embedder.proj.weight", 4)
    hidden_dim, in_channels, patch, patch_w = proj.shape
    if patch != patch_w:
        raise ValueError(f"'x_embedder.proj.weight' has a non-square patch kernel {proj.shape}.")
    pos_embed = _get(state_dict, "pos_embed", 3)
    num_tokens = pos_embed.shape[1]
    grid = int(round(num_tokens**0.5))
    if pos_embed.shape[0] != 1 or pos_embed.shape[2] != hidden_dim or grid * grid != num_tokens:
        raise ValueError(
            f"'pos_embed' has shape {pos_embed.shape}; expected (1, grid**2, {hidden_dim}) for a square patch grid."
        )
    fc1 = _get(state_dict, "blocks.0.mlp.fc1.weight", 2)
    final = _get(state_dict, "final_layer.linear.weight", 2)
    out_channels, remainder = divmod(final.shape[0], patch * patch)
    if remainder or out_channels not in (in_channels, 2 * in_channels):
        raise ValueError(
            f"'final_layer.linear.weight' has {final.shape[0]} outputs; expected patch_size**2 * in_channels "
            f"= {patch * patch * in_channels} or twice that (learned sigma)."
        )
    table = _get(state_dict, "y_embedder.embedding_table.weight", 2)
    if table.shape[0] < 2:
        raise ValueError(f"'y_embedder.embedding_table.weight' has {table.shape[0]} rows; need classes + null class.")
    config = dict(
        image_size=grid * int(patch),
        in_channels=int(in_channels),
        patch_size=int(patch),
        hidden_dim=int(hidden_dim),
        num_layers=_num_blocks(state_dict),
        mlp_ratio=fc1.shape[0] / hidden_dim,
        num_classes=int(table.shape[0]) - 1,
        learn_sigma=out_channels == 2 * in_channels,
        pos_embed_order=_pos_embed_order(pos_embed[0], grid, int(hidden_dim)),
    )
    num_heads = config_overrides.pop("num_heads", None)
    config["num_heads"] = _infer_num_heads(config["hidden_dim"]) if num_heads is None else num_heads
    config.update(config_overrides)
    return config


class _WeightCopier:
    """Copies state-dict entries into Keras variables, checking shapes and tracking unused keys."""

    def __init__(self, state_dict):
        self.state_dict = state_dict
        self.unused = set(state_dict)

    def take(self, key):
        if key not in self.state_dict:
            raise ValueError(f"The state dict has no {key!r}, which the DiT being built needs.")
        self.unused.discard(key)
        return _to_numpy(self.state_dict[key], key)

    def assign(self, variable, value, key):
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"State dict entry {key!r} converts to shape {tuple(value.shape)}, but {variable.path} has shape "
                f"{tuple(variable.shape)}; do the config overrides fit the checkpoint?"
            )
        variable.assign(value)

    def linear(self, dense, key, rows=None):
        """Copy the torch ``Linear`` ``key`` (weight ``(out, in)``, bias) into ``dense``; ``rows`` slices outputs."""
        weight, bias = self.take(f"{key}.weight"), self.take(f"{key}.bias")
        if rows is not None:
            weight, bias = weight[rows], bias[rows]
        self.assign(dense.kernel, weight.T, f"{key}.weight")
        self.assign(dense.bias, bias, f"{key}.bias")


def dit_from_torch_state_dict(state_dict, **config_overrides):
    """A :class:`DiT` carrying the weights of an official DiT (facebookresearch/DiT) state dict.

    The configuration is inferred (see :func:`dit_config_from_torch_state_dict`);
    every weight is copied with the layout changes the two implementations need
    (transposed Linear weights, the Conv2d patch kernel flattened to the
    ``(p_row, p_col, C)`` patch order, the fused ``qkv`` split into query, key
    and value). The result reproduces the official ``DiT.forward(x, t, y)``
    with inputs and outputs channels-last: ``latents (B, H, W, C)``, timesteps
    in ``[0, 1000)``, labels with ``num_classes`` as the null class.

    Args:
        state_dict: mapping of official key names to torch tensors or numpy
            arrays (``torch.load(path, weights_only=True)``), or an official
            training checkpoint holding one under ``"ema"``.
        **config_overrides: :class:`DiT` arguments replacing the inferred ones,
            e.g. ``num_heads`` or ``dtype``.

    Returns:
        a built :class:`DiT`.

    Raises:
        ValueError: naming the key and the shapes when an entry is missing,
            has an unexpected shape, or is left over (a different architecture).

    Example:
        >>> state_dict = torch.load("DiT-XL-2-256x256.pt", map_location="cpu", weights_only=True)
        >>> backbone = dit_from_torch_state_dict(state_dict)
        >>> backbone.save_to_preset("dit_xl_2_256")
    """
    state_dict = _unwrap(state_dict)
    config = dit_config_from_torch_state_dict(state_dict, **config_overrides)
    model = DiT(**config)
    copier = _WeightCopier(state_dict)
    copier.unused.discard("pos_embed")  # fixed table, checked by the config inference

    conv = copier.take("x_embedder.proj.weight")  # (D, C, p, p) -> (p * p * C, D)
    kernel = np.transpose(conv, (2, 3, 1, 0)).reshape(-1, conv.shape[0])
    copier.assign(model.patch_embedding.projection.kernel, kernel, "x_embedder.proj.weight")
    copier.assign(model.patch_embedding.projection.bias, copier.take("x_embedder.proj.bias"), "x_embedder.proj.bias")
    copier.linear(model.timestep_embedding.dense_1, "t_embedder.mlp.0")
    copier.linear(model.timestep_embedding.dense_2, "t_embedder.mlp.2")
    key = "y_embedder.embedding_table.weight"
    copier.assign(model.label_embedding.table.embeddings, copier.take(key), key)

    width = config["hidden_dim"]
    for i, block in enumerate(model.blocks):
        prefix = f"blocks.{i}"
        attention = block.attention
        for n, dense in enumerate((attention.query, attention.key, attention.value)):
            copier.linear(dense, f"{prefix}.attn.qkv", rows=slice(n * width, (n + 1) * width))
        copier.linear(attention.output_projection, f"{prefix}.attn.proj")
        copier.linear(block.mlp.fc1, f"{prefix}.mlp.fc1")
        copier.linear(block.mlp.fc2, f"{prefix}.mlp.fc2")
        copier.linear(block.modulation.projection, f"{prefix}.adaLN_modulation.1")
    copier.linear(model.final_layer.projection, "final_layer.linear")
    copier.linear(model.final_layer.modulation.projection, "final_layer.adaLN_modulation.1")

    if copier.unused:
        raise ValueError(
            f"The state dict has entries this DiT has no place for: {sorted(copier.unused)[:10]}"
            f"{' ...' if len(copier.unused) > 10 else ''}; it is not the official DiT architecture, or "
            f"`num_layers` was overridden below the checkpoint's {_num_blocks(state_dict)} blocks."
        )
    return model


def load_torch_state_dict(path):
    """Load a PyTorch checkpoint's tensors on the CPU (``torch.load(..., weights_only=True)``).

    Needs the optional ``torch`` dependency (``pip install keras-vdiff[torch]``);
    works whatever ``KERAS_BACKEND`` is. ``weights_only=True`` refuses pickled
    code, so a checkpoint can only contain tensors and plain containers.

    Args:
        path: a ``.pt`` / ``.pth`` file.

    Returns:
        the loaded object (a state dict for the released DiT checkpoints).

    Example:
        >>> state_dict = load_torch_state_dict("DiT-XL-2-256x256.pt")
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading a PyTorch checkpoint needs torch: `pip install keras-vdiff[torch]` (or any torch >= 2.0)."
        ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # pickle / zip errors of a file that is not a checkpoint
        raise ValueError(f"Could not read {path!r} as a PyTorch checkpoint: {error}") from error
