"""Patch packing (NaViT, Dehghani et al. 2023; Sora's native sizes): several videos' tokens in one sequence.

Videos of different shapes give token sequences of different lengths. Packed,
they share one sequence ``(1, sum N_i, D)`` (padded to a fixed length if asked),
and a block-diagonal attention mask keeps each token's attention inside its own
video, so packed attention equals each video's attention on its own. A token's
segment id says which video it belongs to (``-1``: padding, which attends to
nothing and is attended by nothing; ``Attention`` returns zeros for it).

Positions travel with the tokens: pack each video's RoPE angles the same way
(``pack_tokens`` on ``(N_i, head_dim / 2)`` arrays) and pass them as ``rope``.

Example:
    >>> packed, segments = pack_tokens([tokens_a, tokens_b])      # (N_a, D), (N_b, D)
    >>> out = attention(packed, mask=block_diagonal_mask(segments))
    >>> out_a, out_b = unpack_tokens(out, [len(tokens_a), len(tokens_b)])
"""

import numpy as np
from keras import ops

from keras_vdiff.validation import check_int


def pack_tokens(sequences, length=None):
    """Concatenate token sequences ``[(N_i, ...), ...]`` into ``(1, L, ...)`` and their segment ids ``(1, L)``.

    Args:
        sequences: a non-empty list of arrays / tensors ``(N_i, ...)`` with equal trailing shapes
            (tokens ``(N_i, D)``, or RoPE angles ``(N_i, head_dim / 2)``).
        length: pad the packed sequence to this many tokens (one compiled shape for
            every pack; padding has segment id ``-1``); default: ``sum N_i``.

    Returns:
        ``(packed (1, L, ...), segment_ids (1, L) int32)``.
    """
    if not isinstance(sequences, (list, tuple)) or not sequences:
        raise ValueError(f"`sequences` must be a non-empty list of (tokens, ...) arrays, got {type(sequences)}.")
    sequences = [ops.convert_to_tensor(s) for s in sequences]
    trailing = {tuple(s.shape[1:]) for s in sequences}
    if len(trailing) != 1:
        raise ValueError(f"`sequences` must share their trailing shape (token width), got {sorted(trailing)}.")
    lengths = [int(s.shape[0]) for s in sequences]
    total = sum(lengths)
    length = total if length is None else check_int(length, "length")
    if length < total:
        raise ValueError(f"`length`={length} is shorter than the {total} tokens of the sequences.")
    segments = np.concatenate([np.full(n, k, np.int32) for k, n in enumerate(lengths)]
                              + [np.full(length - total, -1, np.int32)])
    if length > total:
        pad = ops.zeros((length - total,) + tuple(sequences[0].shape[1:]), dtype=sequences[0].dtype)
        sequences = sequences + [pad]
    return ops.concatenate(sequences, axis=0)[None], ops.convert_to_tensor(segments[None])


def block_diagonal_mask(segment_ids):
    """``(B, L, L)`` boolean mask: token ``i`` may attend to token ``j`` iff both belong to the same video
    (equal segment ids, padding ``-1`` excluded): the ``mask`` of ``Attention``."""
    segment_ids = ops.convert_to_tensor(segment_ids)
    if len(segment_ids.shape) != 2:
        raise ValueError(f"`segment_ids` must be (batch, tokens), got shape {tuple(segment_ids.shape)}.")
    same = ops.equal(segment_ids[:, :, None], segment_ids[:, None, :])
    valid = ops.greater_equal(segment_ids, 0)
    return ops.logical_and(same, ops.logical_and(valid[:, :, None], valid[:, None, :]))


def unpack_tokens(packed, lengths):
    """Split a packed ``(1, L, ...)`` sequence back into ``[(N_i, ...), ...]`` (padding dropped)."""
    lengths = [check_int(n, "lengths") for n in lengths]
    if len(packed.shape) < 2 or packed.shape[0] != 1:
        raise ValueError(f"`packed` must be one packed sequence (1, L, ...), got shape {tuple(packed.shape)}.")
    if sum(lengths) > packed.shape[1]:
        raise ValueError(f"`lengths` {lengths} sum to more than the {packed.shape[1]} packed tokens.")
    starts = np.cumsum([0] + lengths)
    return [packed[0, int(a):int(b)] for a, b in zip(starts[:-1], starts[1:])]
