"""FiT's grouping of patch tokens into spatial regions over all frames, and their space-time positions.

``group_patches`` / ``ungroup_patches`` move between the token grid ``(B, F, N, D)``
and the groups ``(B, G, F*rh*rw, D)`` the read and write steps fold into the batch;
``spacetime_position_table`` gives each patch token a frame *and* a place (inside a
group the frames must be told apart, or every frame gets the same update).
"""

import numpy as np
from keras import ops

from keras_vdiff.layers.embeddings import sincos_embedding_3d
from keras_vdiff.validation import check_int


def checked_grid_size(grid_size):
    grid_size = tuple(grid_size)
    if len(grid_size) != 2:
        raise ValueError(f"`grid_size` must be (rows, cols), got {grid_size!r}.")
    for value in grid_size:
        check_int(value, "grid_size")
    return grid_size


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
