"""Two options for RIN's ungrouped interface: local mixing and a soft locality prior.

:class:`InterfaceConv` is the depthwise 3D convolution over the token grid that
the authors' RIN code can add after each write step; :class:`LatentLocalityBias`
is keras_vdiff's soft, learned locality prior on the read and write logits (a
soft form of FiT's groups).
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.layers.core import Dense
from keras_vdiff.models.latent_tokens.grouping import checked_grid_size
from keras_vdiff.validation import check_int


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
            check_int(norm_groups, "norm_groups")
        grid_size = checked_grid_size(grid_size)
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
        self.pointwise = Dense(dim, kernel_initializer="zeros", name="pointwise", dtype=self.dtype_policy)
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
            check_int(value, name)
        grid_size = checked_grid_size(grid_size)
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
