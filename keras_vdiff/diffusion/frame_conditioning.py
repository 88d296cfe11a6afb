"""Deprecated module path: the masks are ``keras_vdiff.diffusion.frame_masks``, the task ``keras_vdiff.tasks``.

The engine-level helpers (``frame_condition``, ``first_frame_mask``, ...) are
re-exported from ``frame_masks`` without a warning; ``FrameConditionedDiffusion``
is a task (it imports the task floor), so it is forwarded lazily and its
old path warns. New code: ``kv.FrameConditionedDiffusion`` or
``from keras_vdiff.tasks import FrameConditionedDiffusion``.
"""

import warnings

from keras_vdiff.diffusion.frame_masks import (  # noqa: F401
    MASK_MODES,
    first_frame_mask,
    frame_condition,
    frame_condition_channels,
    frame_mask,
    interpolation_mask,
    mask_known_frames,
    masked_frame_inputs,
    substitute_frames,
    training_masks,
)

# Deprecated names of this module, forwarded from the task floor on first use: an import at the top
# would make the diffusion engine import the tasks above it (tests/test_import_floors.py lists this
# forward as the one allowed exception).
_FORWARDED = ("FrameConditionedDiffusion", "PASSTHROUGH_INPUTS")


def __getattr__(name):
    if name not in _FORWARDED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"keras_vdiff.diffusion.frame_conditioning.{name} is deprecated: import it from "
        "keras_vdiff.tasks.frame_conditioned (FrameConditionedDiffusion is also kv.FrameConditionedDiffusion).",
        DeprecationWarning,
        stacklevel=2,
    )
    from keras_vdiff.tasks import frame_conditioned

    return getattr(frame_conditioned, name)
