"""Conditions given as extra channels of the backbone's ``latents`` input, shared by the conditioned tasks.

A task that shows the backbone a per-pixel condition next to the noisy latents
(``FrameConditionedDiffusion``: the known frames and their mask;
``SuperResolutionDiffusion``: the upsampled low-resolution video) reaches the
backbone in one of two ways:

- a backbone built with ``num_extra_input_channels`` equal to the condition's
  channels (the U-Nets, ``inflate_unet``) receives ``[z_t | condition]``
  concatenated on the channel axis;
- any other backbone (the DiT-family transformers, ...) receives
  ``z_t + P condition``, ``P`` a zero-initialised per-pixel linear map owned
  by the task (a patch embedding is linear, so this is a restricted form of
  widening its input).
"""

import keras
from keras import ops


def concatenates_condition(backbone, condition_channels, purpose):
    """Whether ``backbone`` takes the condition concatenated (True) or through a projection (False).

    Args:
        backbone: the task's backbone.
        condition_channels: the condition's channel count.
        purpose: what the condition is for, to name in the error (e.g. ``"masked-frame conditioning"``).

    Raises: ``ValueError`` when ``num_extra_input_channels`` is neither 0 nor ``condition_channels``.
    """
    extra = int(getattr(backbone, "num_extra_input_channels", 0))
    if extra not in (0, condition_channels):
        raise ValueError(
            f"The backbone has num_extra_input_channels={extra}; {purpose} needs {condition_channels} "
            "(concatenated) or 0 (added)."
        )
    return extra > 0


def condition_projection(channels, condition_channels):
    """The zero-initialised ``P``: a built ``Dense(channels)`` without bias, named ``condition_projection``."""
    projection = keras.layers.Dense(channels, use_bias=False, kernel_initializer="zeros", name="condition_projection")
    projection.build((None, condition_channels))
    return projection


def with_condition(latents, condition, projection_kernel=None):
    """The backbone's ``latents`` input: ``[latents | condition]``, or ``latents + condition @ projection_kernel``.

    Args:
        latents: ``(..., C)`` noisy latents.
        condition: ``(..., K)`` the condition, on the same grid.
        projection_kernel: None to concatenate, else the ``(K, C)`` kernel of ``P`` as a tensor (the
            compiled sampling loop passes it explicitly so that it is never a stale constant).
    """
    latents = ops.cast(latents, "float32")
    condition = ops.cast(condition, "float32")
    if projection_kernel is None:
        return ops.concatenate([latents, condition], axis=-1)
    return latents + ops.matmul(condition, ops.cast(projection_kernel, "float32"))


def projection_task_inputs(projection):
    """The ``task_inputs`` entry a sampling plan carries for ``projection`` (empty when concatenating)."""
    if projection is None:
        return {}
    # an explicit argument of the compiled loop, which maps only the backbone's variables
    return {"condition_projection_kernel": ops.convert_to_tensor(projection.kernel)}
