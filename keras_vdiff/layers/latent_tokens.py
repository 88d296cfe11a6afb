"""Latent-token computation of RIN and SnapVideo's FiT: read, process, write.

A small set of learned latent tokens does the heavy computation; the patch
tokens (the "interface") only exchange information with them by
cross-attention. Shape story of one :class:`LatentReadWriteBlock`::

    patches (B, G, P, Dx)   G groups of P patch tokens (a group = a spatial
                            region over all frames in FiT; G = 1 in RIN)
    latents (B, G*L, Dl)    L latents per group, flattened in group order
    cond    (B, M, Dc)      timestep token + text tokens + text registers

    0 local      patches (B*G, P, Dx)  l x [+= SelfAttn(LN); += MLP] within each group (FiT; l = 0 by default)
    1 condition  latents (B, G*L, Dl)  += CrossAttn(LN(latents), LN(cond), cond_mask); += MLP
    2 read       latents (B*G, L, Dl)  += CrossAttn(LN(latents), LN(patches of the group)); += MLP
    3 process    latents (B, G*L, Dl)  k x [+= SelfAttn(LN); += MLP]       (global over groups)
    4 write      patches (B*G, P, Dx)  += CrossAttn(LN(patches), LN(latents of the group)); += MLP

Every step is a pre-norm residual, so the write step *adds* to the patch
tokens (the thesis' pseudocode overwrote them), and every attention keeps the
batch axis apart (the thesis' first text cross-attention mixed the prompts of
a batch). Steps 0, 2 and 4 fold the groups into the batch axis, so a group's
patches only see each other and their own latents and are only written from
them; only the global step 3 mixes groups. With ``use_adaln`` (SnapVideo v2) the MLP after
step 1 and the sub-layers of step 3 are modulated by a pooled condition,
``x + gate * f(LN(x) * (1 + scale) + shift)``, adaLN-Zero initialised.

Also here: two options for RIN's ungrouped latents, a depthwise 3D
convolution over the token grid after each write (:class:`InterfaceConv`,
from the authors' code) and a soft, learned locality prior on the read and
write logits (:class:`LatentLocalityBias`, ours); the patch grouping of
FiT (:func:`group_patches`); the space-time position table of the patch
tokens (:func:`spacetime_position_table`: inside a group the frames must be
told apart, or every frame gets the same update);
the learned initial latents, latent self-conditioning (Chen et al. 2023 / RIN),
the text-register encoder of CAD-RIN / SnapVideo v1 and
:class:`ConditionTokens`, the token set the latents read in step 1.

References: Jabri, Fleet & Chen, "Scalable Adaptive Computation for Iterative
Generation" (RIN, 2023); Chen, Li & Hinton, "FIT: Far-reaching Interleaved
Transformers" (2023); Menapace et al., "Snap Video" (2024); the thesis seed
000, sections 3.2.3 and 7.5-7.6.
"""

import keras
from keras import ops

import numpy as np

from keras_vdiff.layers.attention import Attention
from keras_vdiff.layers.embeddings import (
    LabelEmbedding,
    PooledTextEmbedding,
    TimestepEmbedding,
    sincos_embedding_3d,
)
from keras_vdiff.layers.modulation import AdaLNModulation, expand_to, modulate
from keras_vdiff.layers.transformer import MLP

CONDITIONINGS = (None, "class", "text")


def _norm(name, affine=True, center=True):
    return keras.layers.LayerNormalization(
        epsilon=1e-6, center=affine and center, scale=affine, name=name, dtype="float32"
    )


def _normed(norm, x):
    return ops.cast(norm(x), x.dtype)


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def _checked_grid_size(grid_size):
    grid_size = tuple(grid_size)
    if len(grid_size) != 2:
        raise ValueError(f"`grid_size` must be (rows, cols), got {grid_size!r}.")
    for value in grid_size:
        _check_positive("grid_size", value)
    return grid_size


# ---------------------------------------------------------------------------------------------
# Grouping (FiT): spatial regions spanning all frames.
# ---------------------------------------------------------------------------------------------


def group_grid(num_groups, grid_size):
    """Split a ``(rows, cols)`` patch grid into ``num_groups`` equal rectangles.

    Args:
        num_groups: an int (a square number, split ``sqrt x sqrt``, e.g. 4 -> 2x2,
            49 -> 7x7) or a pair ``(group_rows, group_cols)``.
        grid_size: ``(rows, cols)`` of the per-frame patch grid.

    Returns:
        ``(group_rows, group_cols)``.
    """
    rows, cols = grid_size
    if isinstance(num_groups, int) and not isinstance(num_groups, bool):
        side = int(round(num_groups**0.5))
        if num_groups <= 0 or side * side != num_groups:
            raise ValueError(
                f"`num_groups`={num_groups!r} must be a square number (1, 4, 9, 49, ...) "
                "or a pair (group_rows, group_cols)."
            )
        pair = (side, side)
    else:
        pair = tuple(num_groups)
        if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
            raise ValueError(f"`num_groups` must be a square int or a pair of positive ints, got {num_groups!r}.")
    if rows % pair[0] or cols % pair[1]:
        raise ValueError(
            f"`num_groups`={num_groups!r} ({pair[0]}x{pair[1]} regions) does not divide the "
            f"{rows}x{cols} patch grid evenly."
        )
    return pair


def group_patches(tokens, grid_size, groups):
    """``(B, F, rows*cols, D) -> (B, G, F*rh*rw, D)``: spatial regions over all frames.

    Group ``g = gy * group_cols + gx`` holds the ``rh x rw`` patches of region
    ``(gy, gx)`` of every frame, ordered ``(frame, row, col)``.

    Args:
        tokens: patch tokens ``(B, F, N, D)`` with ``N = rows * cols`` flattened ``(h w)``.
        grid_size: ``(rows, cols)``.
        groups: ``(group_rows, group_cols)`` from :func:`group_grid`.
    """
    rows, cols = grid_size
    gy, gx = groups
    rh, rw = rows // gy, cols // gx
    f, d = tokens.shape[1], tokens.shape[-1]
    x = ops.reshape(tokens, (-1, f, gy, rh, gx, rw, d))
    x = ops.transpose(x, (0, 2, 4, 1, 3, 5, 6))  # b gy gx f rh rw d
    return ops.reshape(x, (-1, gy * gx, f * rh * rw, d))


def ungroup_patches(grouped, frames, grid_size, groups):
    """Inverse of :func:`group_patches`: ``(B, G, F*rh*rw, D) -> (B, F, rows*cols, D)``."""
    rows, cols = grid_size
    gy, gx = groups
    rh, rw = rows // gy, cols // gx
    d = grouped.shape[-1]
    x = ops.reshape(grouped, (-1, gy, gx, frames, rh, rw, d))
    x = ops.transpose(x, (0, 3, 1, 4, 2, 5, 6))  # b f gy rh gx rw d
    return ops.reshape(x, (-1, frames, rows * cols, d))


def spacetime_position_table(frames, rows, cols, dim):
    """Fixed sin-cos positions of patch tokens ``(frames, rows * cols, dim)`` over time *and* space.

    The read and write cross-attentions are permutation invariant: without a
    temporal component two patches at the same place in different frames of a
    group would be indistinguishable to the latents (and would be written the
    same update), which yields static videos. A quarter of the width (a
    multiple of 4, at least 4) encodes the frame, the rest the 2D position.

    Args:
        frames: token frames ``F``.
        rows, cols: patch grid.
        dim: token width, a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"The patch token width must be divisible by 4 for the sin-cos table, got {dim}.")
    temporal = max(4, (dim // 4) // 4 * 4)
    if temporal >= dim:
        raise ValueError(f"The patch token width {dim} is too small for a space-time sin-cos table (>= 8).")
    table = sincos_embedding_3d(frames, rows, cols, dim, temporal_dim=temporal)
    return np.reshape(table, (frames, rows * cols, dim)).astype("float32")


# ---------------------------------------------------------------------------------------------
# Local mixing of the interface (RIN's optional depthwise convolution).
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_vdiff")
class InterfaceConv(keras.layers.Layer):
    """Local mixing of the patch tokens: ``x + Dense(SiLU(GroupNorm(DepthwiseConv3D(x))))``.

    The read and write cross-attentions of RIN treat the interface as a set: a
    token learns about its neighbours only through the latents. The authors'
    implementation of RIN (the ``conv_kernel_size`` option of its tape
    denoiser) can add a depthwise convolution over the token grid after every
    write step, a cheap local path beside the global one. Here it is a
    depthwise 3D convolution over ``(frames, rows, cols)`` of the token grid
    ('same' zero padding), a GroupNorm, SiLU and a pointwise projection that
    starts at zero, so a fresh layer is the identity and the local path is
    learned.

    Args:
        kernel_size: odd side of the cubic depthwise kernel (3: the 26 neighbours of a token).
        grid_size: ``(rows, cols)`` of the per-frame token grid.
        norm_groups: GroupNorm groups (default ``min(dim // 4, 32)``, at least 1, dividing the width).

    Call:
        ``tokens (B, F, N, D)`` with ``N = rows * cols`` -> ``(B, F, N, D)``.

    Example:
        >>> conv = InterfaceConv(3, grid_size=(4, 4))
        >>> conv(keras.ops.ones((2, 5, 16, 32))).shape
        (2, 5, 16, 32)
    """

    def __init__(self, kernel_size, grid_size, norm_groups=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be an odd positive integer, got {kernel_size!r}.")
        if norm_groups is not None:
            _check_positive("norm_groups", norm_groups)
        grid_size = _checked_grid_size(grid_size)
        self.kernel_size = kernel_size
        self.grid_size = grid_size
        self.norm_groups = norm_groups

    def build(self, tokens_shape):
        dim = tokens_shape[-1]
        groups = self.norm_groups or max(1, min(dim // 4, 32))
        if dim % groups:
            raise ValueError(f"`norm_groups`={groups} must divide the token width {dim}.")
        k = self.kernel_size
        self.depthwise_kernel = self.add_weight(
            name="depthwise_kernel", shape=(k, k, k, dim),
            initializer=keras.initializers.RandomNormal(stddev=float(k**3) ** -0.5),
        )
        self.depthwise_bias = self.add_weight(name="depthwise_bias", shape=(dim,), initializer="zeros")
        self.norm = keras.layers.GroupNormalization(groups, epsilon=1e-6, dtype="float32", name="norm")
        self.norm.build((None, None, None, None, dim))
        self.pointwise = keras.layers.Dense(dim, kernel_initializer="zeros", name="pointwise", dtype=self.dtype_policy)
        self.pointwise.build((None, dim))
        self.built = True

    def depthwise(self, grid):
        """The depthwise 3D convolution of ``grid (B, F, rows, cols, D)``, 'same' zero padding."""
        k, half = self.kernel_size, self.kernel_size // 2
        frames, rows, cols = grid.shape[1], grid.shape[2], grid.shape[3]
        padded = ops.pad(grid, ((0, 0), (half, half), (half, half), (half, half), (0, 0)))
        kernel = ops.cast(self.depthwise_kernel, grid.dtype)
        out = ops.cast(self.depthwise_bias, grid.dtype)
        for a in range(k):
            for b in range(k):
                for c in range(k):
                    out = out + kernel[a, b, c] * padded[:, a:a + frames, b:b + rows, c:c + cols, :]
        return out

    def call(self, tokens):
        if len(tokens.shape) != 4:
            raise ValueError(f"`tokens` must be (batch, frames, rows * cols, dim), got shape {tokens.shape}.")
        rows, cols = self.grid_size
        if tokens.shape[2] is not None and tokens.shape[2] != rows * cols:
            raise ValueError(f"`tokens` has {tokens.shape[2]} tokens per frame; `grid_size` {self.grid_size} "
                             f"needs {rows * cols}.")
        frames, dim = tokens.shape[1], tokens.shape[-1]
        grid = ops.reshape(tokens, (-1, frames, rows, cols, dim))
        h = ops.cast(self.norm(self.depthwise(grid)), tokens.dtype)
        h = self.pointwise(ops.silu(h))
        return tokens + ops.reshape(h, (-1, frames, rows * cols, dim))

    def compute_output_shape(self, tokens_shape):
        return tuple(tokens_shape)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, grid_size=list(self.grid_size), norm_groups=self.norm_groups)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class LatentLocalityBias(keras.layers.Layer):
    """A soft, learned locality prior for the read and write steps of ungrouped latents.

    FiT's groups make reads and writes local by construction; RIN's latents
    start with near-uniform attention over the whole video and must learn
    where to look. This layer gives every latent a spatial *anchor* on an
    ``anchor_grid`` laid evenly over the per-frame token grid (consecutive
    latents share an anchor; anchors span all frames, like FiT's regions) and
    biases the attention logits of both steps by ``-strength_h * d^2``, with
    ``d`` the distance, in token cells, between a latent's anchor and a token,
    and ``strength_h = exp(log_strength_h)`` learned per head and step. As a
    strength goes to 0 the prior vanishes (RIN as published); it is soft, so a
    head can learn to look further. This is keras_vdiff's addition, not part
    of RIN or FiT.

    Args:
        num_latents: latents ``L`` (a multiple of the anchor count).
        grid_size: ``(rows, cols)`` of the per-frame token grid.
        frames: token frames (tubelets) ``F``; tokens are ordered ``(frame, row, col)``.
        num_heads: heads of the read step; ``patch_num_heads``: heads of the write step.
        anchor_grid: ``(anchor_rows, anchor_cols)``; default the largest square ``s x s`` with
            ``s <= min(rows, cols)`` and ``s * s`` dividing ``num_latents``.
        initial_strength: starting ``strength`` (1.0: a token one cell away gets ``e^-1`` of the weight).

    Call:
        ``reference`` (any tensor) -> ``(read_bias (1, num_heads, L, F*rows*cols),
        write_bias (1, patch_num_heads, F*rows*cols, L))``.

    Example:
        >>> bias = LatentLocalityBias(32, (4, 4), frames=5, num_heads=4, patch_num_heads=2)
        >>> read, write = bias(keras.ops.zeros((1,)))
        >>> read.shape, write.shape
        ((1, 4, 32, 80), (1, 2, 80, 32))
    """

    def __init__(self, num_latents, grid_size, frames, num_heads, patch_num_heads, anchor_grid=None,
                 initial_strength=1.0, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("num_latents", num_latents), ("frames", frames), ("num_heads", num_heads),
                            ("patch_num_heads", patch_num_heads)):
            _check_positive(name, value)
        grid_size = _checked_grid_size(grid_size)
        if anchor_grid is None:
            side = max(s for s in range(1, min(grid_size) + 1) if num_latents % (s * s) == 0)
            anchor_grid = (side, side)
        anchor_grid = tuple(anchor_grid)
        if len(anchor_grid) != 2 or not all(isinstance(v, int) and v > 0 for v in anchor_grid):
            raise ValueError(f"`anchor_grid` must be a pair of positive ints, got {anchor_grid!r}.")
        if num_latents % (anchor_grid[0] * anchor_grid[1]):
            raise ValueError(f"`num_latents`={num_latents} must be a multiple of the {anchor_grid[0]}x"
                             f"{anchor_grid[1]} anchors of `anchor_grid`.")
        if not initial_strength > 0:
            raise ValueError(f"`initial_strength` must be positive, got {initial_strength!r}.")
        self.num_latents = num_latents
        self.grid_size = grid_size
        self.frames = frames
        self.num_heads = num_heads
        self.patch_num_heads = patch_num_heads
        self.anchor_grid = anchor_grid
        self.initial_strength = float(initial_strength)
        self.squared_distances = self.anchor_distances()

    def anchor_distances(self):
        """``(L, F*rows*cols)`` float32: squared distance, in token cells, of each latent's anchor to each token."""
        rows, cols = self.grid_size
        ar, ac = self.anchor_grid
        per_anchor = self.num_latents // (ar * ac)
        anchor = np.arange(self.num_latents) // per_anchor
        # Anchor centres spread evenly over the grid, in token coordinates (0 .. rows - 1).
        ay = ((anchor // ac) + 0.5) * rows / ar - 0.5
        ax = ((anchor % ac) + 0.5) * cols / ac - 0.5
        ty, tx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        d2 = (ay[:, None] - ty.reshape(-1)[None]) ** 2 + (ax[:, None] - tx.reshape(-1)[None]) ** 2
        return np.tile(d2, (1, self.frames)).astype("float32")  # tokens ordered (frame, row, col)

    def build(self, reference_shape=None):
        init = keras.initializers.Constant(float(np.log(self.initial_strength)))
        self.read_log_strength = self.add_weight(name="read_log_strength", shape=(self.num_heads,), initializer=init)
        self.write_log_strength = self.add_weight(name="write_log_strength", shape=(self.patch_num_heads,),
                                                  initializer=init)
        self.built = True

    def call(self, reference):
        d2 = ops.convert_to_tensor(self.squared_distances)
        read = -ops.exp(self.read_log_strength)[:, None, None] * d2[None]
        write = -ops.exp(self.write_log_strength)[:, None, None] * ops.transpose(d2)[None]
        return ops.cast(read[None], self.compute_dtype), ops.cast(write[None], self.compute_dtype)

    def compute_output_shape(self, reference_shape=None):
        tokens = self.frames * self.grid_size[0] * self.grid_size[1]
        return (1, self.num_heads, self.num_latents, tokens), (1, self.patch_num_heads, tokens, self.num_latents)

    def get_config(self):
        config = super().get_config()
        config.update(num_latents=self.num_latents, grid_size=list(self.grid_size), frames=self.frames,
                      num_heads=self.num_heads, patch_num_heads=self.patch_num_heads,
                      anchor_grid=list(self.anchor_grid), initial_strength=self.initial_strength)
        return config


# ---------------------------------------------------------------------------------------------
# Learned latents and latent self-conditioning.
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_vdiff")
class LearnedLatents(keras.layers.Layer):
    """The learned initial latent tokens, broadcast over the batch (RIN / FiT).

    Args:
        num_latents: number of latent tokens (all groups together).
        latent_dim: width of each latent.
        initializer_stddev: standard deviation of the normal initialisation.

    Call:
        ``reference (B, ...)`` (any tensor with the batch size) -> ``(B, num_latents, latent_dim)``.

    Example:
        >>> latents = LearnedLatents(32, 64)(keras.ops.zeros((2, 5)))
        >>> latents.shape
        (2, 32, 64)
    """

    def __init__(self, num_latents, latent_dim, initializer_stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        _check_positive("num_latents", num_latents)
        _check_positive("latent_dim", latent_dim)
        self.num_latents = num_latents
        self.latent_dim = latent_dim
        self.initializer_stddev = initializer_stddev

    def build(self, reference_shape=None):
        self.latents = self.add_weight(
            name="latents",
            shape=(self.num_latents, self.latent_dim),
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_stddev),
        )
        self.built = True

    def call(self, reference):
        batch = ops.shape(reference)[0]
        latents = ops.cast(self.latents, self.compute_dtype)[None]
        return ops.broadcast_to(latents, (batch, self.num_latents, self.latent_dim))

    def compute_output_shape(self, reference_shape):
        return (reference_shape[0], self.num_latents, self.latent_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_latents=self.num_latents, latent_dim=self.latent_dim, initializer_stddev=self.initializer_stddev
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class LatentSelfConditioning(keras.layers.Layer):
    """Latent self-conditioning: ``latents + LayerNorm(Dense(previous_latents))`` (RIN, FiT).

    The previous call's output latents (from the previous denoising step, or a
    first stop-gradient pass in training) are projected and normalised, then
    added to the learned initial latents. The projection has no bias and the
    norm no offset, so an all-zero ``previous_latents`` ("no self-conditioning",
    the first sampling step and the untouched 10% of training) adds exactly
    zero, at initialisation and after training.

    Args:
        latent_dim: width of the latents.
        epsilon: LayerNorm epsilon.

    Call:
        ``latents (B, N, Dl)``, ``previous_latents (B, N, Dl)`` -> ``(B, N, Dl)``.

    Example:
        >>> sc = LatentSelfConditioning(64)
        >>> sc(keras.ops.ones((2, 8, 64)), keras.ops.zeros((2, 8, 64))).shape
        (2, 8, 64)
    """

    def __init__(self, latent_dim, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        _check_positive("latent_dim", latent_dim)
        self.latent_dim = latent_dim
        self.epsilon = epsilon
        self.projection = keras.layers.Dense(latent_dim, use_bias=False, name="projection", dtype=self.dtype_policy)
        self.norm = keras.layers.LayerNormalization(
            epsilon=epsilon, center=False, scale=True, name="norm", dtype="float32"
        )

    def build(self, latents_shape, previous_latents_shape=None):
        self.projection.build(previous_latents_shape or latents_shape)
        self.norm.build(tuple(latents_shape[:-1]) + (self.latent_dim,))
        self.built = True

    def call(self, latents, previous_latents):
        return latents + _normed(self.norm, self.projection(previous_latents))

    def compute_output_shape(self, latents_shape, previous_latents_shape=None):
        return tuple(latents_shape)

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, epsilon=self.epsilon)
        return config


# ---------------------------------------------------------------------------------------------
# Text registers (CAD-RIN / SnapVideo v1).
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_vdiff")
class TextRegisterEncoder(keras.layers.Layer):
    """Text tokens + learned register tokens through a few self-attention layers (CAD-RIN).

    ``text (B, L, Dt) -> Dense(D)``, concatenated with ``num_registers``
    learned tokens (Darcet et al. 2024, "Vision Transformers Need Registers"),
    then ``num_layers`` pre-norm self-attention + MLP layers in which padded
    text tokens are never attended to. Returns the tokens and their mask
    (registers always valid), so an all-padding (null) prompt still yields the
    learned registers: a trainable unconditional context.

    Args:
        hidden_dim: width of the output tokens.
        num_heads: attention heads.
        num_registers: number of learned register tokens (thesis: 16).
        num_layers: self-attention layers (thesis: 2).
        mlp_ratio: MLP expansion.

    Call:
        ``text_embeddings (B, L, Dt)``, ``text_mask (B, L)`` ->
        ``(tokens (B, L + R, D), mask (B, L + R))``.

    Example:
        >>> enc = TextRegisterEncoder(64, num_heads=4, num_registers=4)
        >>> tokens, mask = enc(keras.ops.ones((2, 7, 32)), keras.ops.ones((2, 7)))
        >>> tokens.shape, mask.shape
        ((2, 11, 64), (2, 11))
    """

    def __init__(self, hidden_dim, num_heads, num_registers=16, num_layers=2, mlp_ratio=4.0, **kwargs):
        super().__init__(**kwargs)
        _check_positive("hidden_dim", hidden_dim)
        _check_positive("num_heads", num_heads)
        if not isinstance(num_registers, int) or num_registers < 0:
            raise ValueError(f"`num_registers` must be an integer >= 0, got {num_registers!r}.")
        if not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"`num_layers` must be an integer >= 0, got {num_layers!r}.")
        if hidden_dim % num_heads:
            raise ValueError(f"`hidden_dim`={hidden_dim} must be divisible by `num_heads`={num_heads}.")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.num_registers = num_registers
        self.num_layers = num_layers
        self.mlp_ratio = mlp_ratio
        policy = self.dtype_policy
        self.input_projection = keras.layers.Dense(hidden_dim, name="input_projection", dtype=policy)
        head_dim = hidden_dim // num_heads
        self.attentions = [
            PreNormResidual(Attention(num_heads, head_dim, name=f"attention_{i}", dtype=policy),
                            name=f"self_attention_{i}", dtype=policy)
            for i in range(num_layers)
        ]
        self.mlps = [
            PreNormResidual(MLP(hidden_dim, mlp_ratio, name=f"mlp_{i}", dtype=policy), name=f"ff_{i}", dtype=policy)
            for i in range(num_layers)
        ]
        self.output_norm = _norm("output_norm")

    def build(self, text_embeddings_shape, text_mask_shape=None):
        self.input_projection.build(text_embeddings_shape)
        if self.num_registers:
            self.registers = self.add_weight(
                name="registers",
                shape=(self.num_registers, self.hidden_dim),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )
        shape = (None, None, self.hidden_dim)
        for attention, mlp in zip(self.attentions, self.mlps):
            attention.build(shape)
            mlp.build(shape)
        self.output_norm.build(shape)
        self.built = True

    def call(self, text_embeddings, text_mask):
        x = self.input_projection(text_embeddings)
        mask = ops.cast(text_mask, "bool")
        if self.num_registers:
            batch = ops.shape(x)[0]
            registers = ops.broadcast_to(
                ops.cast(self.registers, x.dtype)[None], (batch, self.num_registers, self.hidden_dim)
            )
            x = ops.concatenate([x, registers], axis=1)
            mask = ops.concatenate([mask, ops.ones((batch, self.num_registers), dtype="bool")], axis=1)
        for attention, mlp in zip(self.attentions, self.mlps):
            x = mlp(attention(x, context_mask=mask))
        return _normed(self.output_norm, x), mask

    def compute_output_shape(self, text_shape, mask_shape=None):
        length = None if text_shape[1] is None else text_shape[1] + self.num_registers
        return (text_shape[0], length, self.hidden_dim), (text_shape[0], length)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            num_registers=self.num_registers,
            num_layers=self.num_layers,
            mlp_ratio=self.mlp_ratio,
        )
        return config


# ---------------------------------------------------------------------------------------------
# The read / process / write block.
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_vdiff")
class PreNormResidual(keras.layers.Layer):
    """``x + f(LN(x))``, or with a pooled condition ``x + gate * f(LN(x) * (1 + scale) + shift)``.

    A sub-layer of :class:`LatentReadWriteBlock`. ``inner`` is an :class:`Attention`
    (called with the optional ``context`` / ``mask``) or an :class:`MLP`. With
    ``adaln`` the LayerNorm has no affine parameters and shift, scale and gate
    come from an adaLN-Zero :class:`AdaLNModulation` of the pooled condition.

    Args:
        inner: the wrapped attention or MLP layer.
        adaln: modulate by the pooled condition (SnapVideo v2).
        context_norm: also LayerNorm the attention context (read and write steps).

    Example:
        >>> res = PreNormResidual(MLP(64))
        >>> res(keras.ops.ones((2, 5, 64))).shape
        (2, 5, 64)
    """

    def __init__(self, inner, adaln=False, context_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.adaln = adaln
        self.context_norm = context_norm
        self.norm = _norm("norm", affine=not adaln)
        self.modulation = None
        self.context_norm_layer = _norm("context_norm") if context_norm else None

    def build(self, x_shape, condition_shape=None, context_shape=None, context_mask_shape=None,
              attention_bias_shape=None):
        self.norm.build(x_shape)
        if self.adaln:
            self.modulation = AdaLNModulation(x_shape[-1], 3, name="modulation", dtype=self.dtype_policy)
            self.modulation.build(condition_shape or (None, x_shape[-1]))
        if self.context_norm_layer is not None:
            self.context_norm_layer.build(context_shape)
        if isinstance(self.inner, Attention):
            self.inner.build(x_shape, context_shape)
        else:
            self.inner.build(x_shape)
        self.built = True

    def call(self, x, condition=None, context=None, context_mask=None, attention_bias=None):
        h = _normed(self.norm, x)
        if self.adaln:
            if condition is None:
                raise ValueError("This sub-layer uses adaLN: pass the pooled `condition`.")
            shift, scale, gate = self.modulation(condition)
            h = modulate(h, shift, scale)
        if isinstance(self.inner, Attention):
            if context is not None and self.context_norm_layer is not None:
                context = _normed(self.context_norm_layer, context)
            out = self.inner(h, context=context, mask=context_mask, bias=attention_bias)
        else:
            out = self.inner(h)
        if self.adaln:
            out = expand_to(gate, out) * out
        return x + out

    def compute_output_shape(self, x_shape, *args, **kwargs):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            inner=keras.saving.serialize_keras_object(self.inner), adaln=self.adaln, context_norm=self.context_norm
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config, inner=keras.saving.deserialize_keras_object(config["inner"]))
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class LatentReadWriteBlock(keras.layers.Layer):
    """One read -> process -> write block of RIN / SnapVideo-FiT (see the module docstring).

    Args:
        patch_dim: width ``Dx`` of the patch tokens.
        latent_dim: width ``Dl`` of the latent tokens.
        latents_per_group: latents ``L`` that belong to each group.
        num_heads: heads of the attentions on the latents (head width ``latent_dim // num_heads``).
        patch_num_heads: heads of the write cross-attention (head width ``patch_dim // patch_num_heads``);
            defaults to ``num_heads``.
        num_latent_layers: global latent self-attention + MLP layers ``k`` (thesis: 4).
            0 keeps every group fully separate (used to test group isolation).
        num_local_layers: FiT's local layers: self-attention + MLP among the patch tokens of each
            group (groups folded into the batch), before the read step. The thesis' SnapVideo has
            none (default 0).
        mlp_ratio: MLP expansion.
        condition_attention: run step 1 (latents read the condition tokens).
        use_adaln: SnapVideo v2 adaLN-Zero on the pooled condition in the condition MLP and the
            latent self-attention layers.

    Call:
        ``patches (B, G, P, Dx)``, ``latents (B, G*L, Dl)``, ``condition_tokens (B, M, Dc)``,
        ``condition_mask (B, M)``, ``pooled_condition (B, Dp)`` (with ``use_adaln``), optional
        attention-logit biases ``read_bias (1, num_heads, L, P)`` and ``write_bias
        (1, patch_num_heads, P, L)`` (the same for every group; :class:`LatentLocalityBias`) ->
        ``(patches (B, G, P, Dx), latents (B, G*L, Dl))``.

    Example:
        >>> block = LatentReadWriteBlock(patch_dim=32, latent_dim=64, latents_per_group=4, num_heads=4)
        >>> x, z = block(keras.ops.ones((2, 4, 10, 32)), keras.ops.ones((2, 16, 64)),
        ...              keras.ops.ones((2, 3, 64)), keras.ops.ones((2, 3)))
        >>> x.shape, z.shape
        ((2, 4, 10, 32), (2, 16, 64))
    """

    def __init__(
        self,
        patch_dim,
        latent_dim,
        latents_per_group,
        num_heads,
        patch_num_heads=None,
        num_latent_layers=4,
        mlp_ratio=4.0,
        condition_attention=True,
        num_local_layers=0,
        use_adaln=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("patch_dim", patch_dim), ("latent_dim", latent_dim),
                            ("latents_per_group", latents_per_group), ("num_heads", num_heads)):
            _check_positive(name, value)
        patch_num_heads = patch_num_heads or num_heads
        if not isinstance(num_latent_layers, int) or num_latent_layers < 0:
            raise ValueError(f"`num_latent_layers` must be an integer >= 0, got {num_latent_layers!r}.")
        if not isinstance(num_local_layers, int) or isinstance(num_local_layers, bool) or num_local_layers < 0:
            raise ValueError(f"`num_local_layers` must be an integer >= 0, got {num_local_layers!r}.")
        if latent_dim % num_heads:
            raise ValueError(f"`latent_dim`={latent_dim} must be divisible by `num_heads`={num_heads}.")
        if patch_dim % patch_num_heads:
            raise ValueError(f"`patch_dim`={patch_dim} must be divisible by `patch_num_heads`={patch_num_heads}.")
        self.patch_dim = patch_dim
        self.latent_dim = latent_dim
        self.latents_per_group = latents_per_group
        self.num_heads = num_heads
        self.patch_num_heads = patch_num_heads
        self.num_latent_layers = num_latent_layers
        self.mlp_ratio = mlp_ratio
        self.condition_attention = condition_attention
        self.use_adaln = use_adaln
        self.num_local_layers = num_local_layers

        policy = self.dtype_policy
        head = latent_dim // num_heads
        patch_head = patch_dim // patch_num_heads

        def attention(name, heads, width, **kw):
            return Attention(heads, width, name=f"{name}_attention", dtype=policy, **kw)

        def mlp(name, width):
            return MLP(width, mlp_ratio, name=f"{name}_mlp", dtype=policy)

        def residual(name, inner, adaln=False, context_norm=False):
            return PreNormResidual(inner, adaln=adaln, context_norm=context_norm, name=name, dtype=policy)

        if condition_attention:
            self.condition_cross = residual(
                "condition_cross", attention("condition", num_heads, head), context_norm=True
            )
            self.condition_mlp = residual("condition_ff", mlp("condition", latent_dim), adaln=use_adaln)
        self.local_attentions = [
            residual(f"local_self_{i}", attention(f"local_{i}", patch_num_heads, patch_head))
            for i in range(num_local_layers)
        ]
        self.local_mlps = [residual(f"local_ff_{i}", mlp(f"local_{i}", patch_dim)) for i in range(num_local_layers)]
        self.read_cross = residual("read_cross", attention("read", num_heads, head), context_norm=True)
        self.read_mlp = residual("read_ff", mlp("read", latent_dim))
        self.latent_attentions = [
            residual(f"latent_self_{i}", attention(f"latent_{i}", num_heads, head), adaln=use_adaln)
            for i in range(num_latent_layers)
        ]
        self.latent_mlps = [
            residual(f"latent_ff_{i}", mlp(f"latent_{i}", latent_dim), adaln=use_adaln)
            for i in range(num_latent_layers)
        ]
        self.write_cross = residual(
            "write_cross", attention("write", patch_num_heads, patch_head, output_dim=patch_dim), context_norm=True
        )
        self.write_mlp = residual("write_ff", mlp("write", patch_dim))

    def build(self, patches_shape, latents_shape=None, condition_tokens_shape=None, condition_mask_shape=None,
              pooled_condition_shape=None, read_bias_shape=None, write_bias_shape=None):
        pooled = pooled_condition_shape or (None, self.latent_dim)
        latent_shape = (None, None, self.latent_dim)
        patch_shape = (None, None, self.patch_dim)
        if self.condition_attention:
            self.condition_cross.build(latent_shape, pooled, condition_tokens_shape or latent_shape)
            self.condition_mlp.build(latent_shape, pooled)
        for attention, mlp in zip(self.local_attentions, self.local_mlps):
            attention.build(patch_shape)
            mlp.build(patch_shape)
        self.read_cross.build(latent_shape, pooled, patch_shape)
        self.read_mlp.build(latent_shape, pooled)
        for attention, mlp in zip(self.latent_attentions, self.latent_mlps):
            attention.build(latent_shape, pooled)
            mlp.build(latent_shape, pooled)
        self.write_cross.build(patch_shape, pooled, latent_shape)
        self.write_mlp.build(patch_shape, pooled)
        self.built = True

    def local(self, patches):
        """FiT's local layers: self-attention among each group's patch tokens only.

        ``patches (B, G, P, Dx)`` -> ``(B, G, P, Dx)``; the identity when ``num_local_layers=0``.
        """
        if not self.local_attentions:
            return patches
        groups, tokens = patches.shape[1], patches.shape[2]
        x = ops.reshape(patches, (-1, tokens, self.patch_dim))
        for attention, mlp in zip(self.local_attentions, self.local_mlps):
            x = mlp(attention(x))
        return ops.reshape(x, (-1, groups, tokens, self.patch_dim))

    def read(self, patches, latents, bias=None):
        """Step 2: every group's latents read that group's patch tokens (groups folded into the batch).

        ``patches (B, G, P, Dx)``, ``latents (B, G*L, Dl)`` -> latents ``(B, G*L, Dl)``.
        """
        groups, tokens = patches.shape[1], patches.shape[2]
        context = ops.reshape(patches, (-1, tokens, self.patch_dim))
        z = ops.reshape(latents, (-1, self.latents_per_group, self.latent_dim))
        z = self.read_mlp(self.read_cross(z, context=context, attention_bias=bias))
        return ops.reshape(z, (-1, groups * self.latents_per_group, self.latent_dim))

    def write(self, patches, latents, bias=None):
        """Step 4: every group's patch tokens read from that group's latents, added residually.

        ``patches (B, G, P, Dx)``, ``latents (B, G*L, Dl)`` -> patches ``(B, G, P, Dx)``.
        """
        groups, tokens = patches.shape[1], patches.shape[2]
        x = ops.reshape(patches, (-1, tokens, self.patch_dim))
        context = ops.reshape(latents, (-1, self.latents_per_group, self.latent_dim))
        x = self.write_mlp(self.write_cross(x, context=context, attention_bias=bias))
        return ops.reshape(x, (-1, groups, tokens, self.patch_dim))

    def call(self, patches, latents, condition_tokens=None, condition_mask=None, pooled_condition=None,
             read_bias=None, write_bias=None):
        if len(patches.shape) != 4:
            raise ValueError(f"`patches` must be grouped as (batch, groups, tokens, dim), got shape {patches.shape}.")
        expected = patches.shape[1] * self.latents_per_group
        if latents.shape[1] is not None and latents.shape[1] != expected:
            raise ValueError(
                f"`latents` has {latents.shape[1]} tokens; {patches.shape[1]} groups x "
                f"{self.latents_per_group} latents_per_group = {expected} expected."
            )
        if self.use_adaln and pooled_condition is None:
            raise ValueError("This block was built with `use_adaln=True`: pass `pooled_condition`.")
        c = pooled_condition
        if self.condition_attention:
            if condition_tokens is None:
                raise ValueError("This block was built with `condition_attention=True`: pass `condition_tokens`.")
            latents = self.condition_cross(latents, context=condition_tokens, context_mask=condition_mask)
            latents = self.condition_mlp(latents, c)
        patches = self.local(patches)
        latents = self.read(patches, latents, read_bias)
        for attention, mlp in zip(self.latent_attentions, self.latent_mlps):
            latents = mlp(attention(latents, c), c)
        return self.write(patches, latents, write_bias), latents

    def compute_output_shape(self, patches_shape, latents_shape=None, *args, **kwargs):
        return tuple(patches_shape), tuple(latents_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            patch_dim=self.patch_dim,
            latent_dim=self.latent_dim,
            latents_per_group=self.latents_per_group,
            num_heads=self.num_heads,
            patch_num_heads=self.patch_num_heads,
            num_latent_layers=self.num_latent_layers,
            mlp_ratio=self.mlp_ratio,
            condition_attention=self.condition_attention,
            use_adaln=self.use_adaln,
            num_local_layers=self.num_local_layers,
        )
        return config


# ---------------------------------------------------------------------------------------------
# The condition tokens the latents read (step 1) and the pooled condition (adaLN, final layer).
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_vdiff")
class ConditionTokens(keras.layers.Layer):
    """Timestep, class or text as the token set read by the latents, plus a pooled vector.

    ::

        t_emb = TimestepEmbedding(t)                                   (B, D)
        None:    tokens = [t_emb]                                      pooled = t_emb
        "class": tokens = [t_emb, LabelEmbedding(y)]                   pooled = t_emb + y_emb
        "text":  tokens = [t_emb, TextRegisterEncoder(text, mask)]     pooled = t_emb + PooledTextEmbedding(pooled_text)

    The mask is 1 for the timestep (and label) token and for the text
    registers, and follows ``text_mask`` on the text tokens (thesis appendix
    7.5: "only mask out empty tokens in text, don't mask timestep"). The
    pooled vector drives SnapVideo v2's adaLN and the final layer; for the
    null prompt (all-zero mask) it uses the learned null text embedding.

    Args:
        hidden_dim: width ``D`` of the tokens (the latent width).
        conditioning: ``None``, ``"class"`` or ``"text"``.
        num_classes: classes of ``"class"`` (label ``num_classes`` is the null class).
        num_heads: heads of the text-register encoder.
        num_registers: learned text register tokens (thesis: 16).
        text_layers: self-attention layers of the text-register encoder (thesis: 2).
        class_dropout_prob: in-model label dropping (keep 0 with ``VideoDiffusion``).

    Call:
        ``timesteps (B,)``, ``class_labels (B,)`` | ``text_embeddings (B, L, Dt)``, ``text_mask (B, L)``,
        ``pooled_text (B, Dt)`` -> ``(tokens (B, M, D), mask (B, M), pooled (B, D))`` with
        ``M = 1``, ``2`` or ``1 + L + num_registers``.

    Example:
        >>> cond = ConditionTokens(64, conditioning="class", num_classes=10)
        >>> tokens, mask, pooled = cond(keras.ops.ones((2,)), class_labels=keras.ops.array([1, 10]))
        >>> tokens.shape, mask.shape, pooled.shape
        ((2, 2, 64), (2, 2), (2, 64))
    """

    def __init__(self, hidden_dim, conditioning=None, num_classes=None, num_heads=1, num_registers=16,
                 text_layers=2, class_dropout_prob=0.0, **kwargs):
        super().__init__(**kwargs)
        _check_positive("hidden_dim", hidden_dim)
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"`conditioning` must be one of {CONDITIONINGS}, got {conditioning!r}.")
        if conditioning == "class":
            _check_positive("num_classes", num_classes)
        self.hidden_dim = hidden_dim
        self.conditioning = conditioning
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.num_registers = num_registers
        self.text_layers = text_layers
        self.class_dropout_prob = class_dropout_prob
        policy = self.dtype_policy
        self.timestep_embedding = TimestepEmbedding(hidden_dim, name="timestep_embedding", dtype=policy)
        if conditioning == "class":
            self.label_embedding = LabelEmbedding(
                num_classes, hidden_dim, dropout_prob=class_dropout_prob, name="label_embedding", dtype=policy
            )
        elif conditioning == "text":
            self.text_encoder = TextRegisterEncoder(
                hidden_dim, num_heads, num_registers=num_registers, num_layers=text_layers,
                name="text_encoder", dtype=policy,
            )
            self.pooled_text_embedding = PooledTextEmbedding(hidden_dim, name="pooled_text_embedding", dtype=policy)

    def build(self, timesteps_shape, class_labels_shape=None, text_embeddings_shape=None, text_mask_shape=None,
              pooled_text_shape=None):
        self.timestep_embedding.build(timesteps_shape)
        if self.conditioning == "class":
            self.label_embedding.build(class_labels_shape or (None,))
        elif self.conditioning == "text":
            if text_embeddings_shape is None or pooled_text_shape is None:
                raise ValueError("A text ConditionTokens is built from `text_embeddings` and `pooled_text` shapes.")
            self.text_encoder.build(text_embeddings_shape, text_mask_shape)
            self.pooled_text_embedding.build(pooled_text_shape, text_mask_shape)
        self.built = True

    def call(self, timesteps, class_labels=None, text_embeddings=None, text_mask=None, pooled_text=None,
             training=None):
        t = self.timestep_embedding(timesteps)
        batch = ops.shape(t)[0]
        tokens, pooled = [t[:, None, :]], t
        masks = [ops.ones((batch, 1), dtype=t.dtype)]
        if self.conditioning == "class":
            if class_labels is None:
                raise ValueError("A class-conditional ConditionTokens needs `class_labels`.")
            y = self.label_embedding(class_labels, training=training)
            tokens.append(y[:, None, :])
            masks.append(ops.ones((batch, 1), dtype=t.dtype))
            pooled = pooled + y
        elif self.conditioning == "text":
            if text_embeddings is None or text_mask is None or pooled_text is None:
                raise ValueError(
                    "A text-conditional ConditionTokens needs `text_embeddings`, `text_mask` and `pooled_text`."
                )
            text, mask = self.text_encoder(text_embeddings, text_mask)
            tokens.append(ops.cast(text, t.dtype))
            masks.append(ops.cast(mask, t.dtype))
            pooled = pooled + self.pooled_text_embedding(pooled_text, text_mask)
        tokens = tokens[0] if len(tokens) == 1 else ops.concatenate(tokens, axis=1)
        mask = masks[0] if len(masks) == 1 else ops.concatenate(masks, axis=1)
        return tokens, mask, pooled

    def compute_output_shape(self, timesteps_shape, class_labels_shape=None, text_embeddings_shape=None,
                             *args, **kwargs):
        batch = timesteps_shape[0]
        if self.conditioning == "text":
            length = text_embeddings_shape[1]
            count = None if length is None else 1 + length + self.num_registers
        else:
            count = 2 if self.conditioning == "class" else 1
        return (batch, count, self.hidden_dim), (batch, count), (batch, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            conditioning=self.conditioning,
            num_classes=self.num_classes,
            num_heads=self.num_heads,
            num_registers=self.num_registers,
            text_layers=self.text_layers,
            class_dropout_prob=self.class_dropout_prob,
        )
        return config
