"""Classifier-free guidance (Ho & Salimans 2022) on one batched forward pass.

The task model stacks the conditional and the null inputs into one batch of
``2B``; ``combine_guidance`` splits the backbone output into the two halves
and returns ``null + scale * (cond - null)`` on the prediction channels. With
learned variance the variance channels are taken from the conditional half
(improved DDPM / DiT practice). ``guidance_scales`` gives one scale per
sampling step: constant, or Imagen Video's oscillating guidance that
alternates a high and a low scale (``oscillate(15, 1)``, Ho et al. 2022).
"""

import numpy as np
from keras import ops

GUIDANCE_SCHEDULES = ("constant", "oscillating")


def combine_guidance(output, scale, prediction_channels):
    """Guided output (B, ..., C_out) from a stacked (2B, ..., C_out) output (cond first, null second).

    Args:
        output: backbone output of the stacked batch.
        scale: guidance scale (python float or scalar tensor); 1 gives the conditional output.
        prediction_channels: number of leading channels that are the prediction;
            the remaining (variance) channels come from the conditional half.

    Example:
        >>> out = backbone(stacked_inputs)                 # (2B, H, W, 2C)
        >>> guided = combine_guidance(out, 4.0, prediction_channels=C)   # (B, H, W, 2C)
    """
    output = ops.cast(output, "float32")
    cond, null = ops.split(output, 2, axis=0)
    guided = null[..., :prediction_channels] + scale * (
        cond[..., :prediction_channels] - null[..., :prediction_channels]
    )
    if ops.shape(output)[-1] == prediction_channels:
        return guided
    return ops.concatenate([guided, cond[..., prediction_channels:]], axis=-1)


def guidance_scales(steps, scale, schedule="constant", low_scale=1.0):
    """One guidance scale per sampling step as float32 numpy (steps,).

    Args:
        steps: number of sampling steps.
        scale: the (high) guidance scale.
        schedule: ``"constant"``, or ``"oscillating"``: ``scale`` at even steps
            (starting high) and ``low_scale`` at odd steps.
        low_scale: the low value of the oscillating schedule.
    """
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"`guidance_schedule` must be one of {GUIDANCE_SCHEDULES}, got {schedule!r}.")
    scales = np.full((steps,), scale, dtype=np.float32)
    if schedule == "oscillating":
        scales[1::2] = low_scale
    return scales
