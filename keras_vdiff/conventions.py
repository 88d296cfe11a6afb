"""Conventions shared by every trainable model of keras_vdiff: the pixel range of videos and the batch loss.

The lowest floor (imports only Keras and numpy; see ``docs/ARCHITECTURE.md``):
the task (``keras_vdiff.tasks``) and the autoencoders (``keras_vdiff.autoencoders``)
both train on batches of videos given as uint8 pixels in ``[0, 255]`` or floats
in ``[-1, 1]``, and both reduce per-example losses the same way, so the two
sides read these helpers from here rather than one importing the other.

Example:
    >>> videos_to_unit_range(np.array([0, 255], np.uint8))   # -> [-1., 1.]
    >>> unit_range_to_uint8(np.array([-1.0, 0.0, 1.0]))      # -> [0, 128, 255]
"""

import keras
import numpy as np
from keras import ops

__all__ = ["videos_to_unit_range", "unit_range_to_uint8", "batch_loss"]


def videos_to_unit_range(videos):
    """uint8 / integer pixels in [0, 255] -> float32 in [-1, 1]; floats are taken as already in [-1, 1]."""
    dtype = keras.backend.standardize_dtype(videos.dtype)
    videos_float = ops.cast(videos, "float32")
    if "int" in dtype:
        return videos_float / 127.5 - 1.0
    return videos_float


def unit_range_to_uint8(videos):
    """float in [-1, 1] (numpy) -> uint8 in [0, 255], clipped and rounded."""
    return np.round((np.clip(np.asarray(videos, np.float32), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def batch_loss(per_example, sample_weight=None, extra_losses=()):
    """The scalar training loss: per-example losses, optionally weighted, averaged, plus ``extra_losses``.

    ``extra_losses`` are the model's own regularisation terms (``model.losses``).
    """
    if sample_weight is not None:
        per_example = per_example * ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
    loss = ops.mean(per_example)
    if extra_losses:
        loss = loss + ops.sum(extra_losses)
    return loss
