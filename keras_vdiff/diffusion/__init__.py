"""Diffusion engine: schedules, Gaussian and flow-matching processes, samplers, guidance, noise priors.

The engine sits below the tasks (``docs/ARCHITECTURE.md``) and imports none of
them; ``FrameConditionedDiffusion`` is a task (``keras_vdiff.tasks``), forwarded
here with a ``DeprecationWarning`` for code that looked for it in this package.
"""

import warnings

from keras_vdiff.diffusion.flow_matching import FlowMatching
from keras_vdiff.diffusion.frame_masks import first_frame_mask, frame_condition_channels, frame_mask, interpolation_mask
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.diffusion.guidance import combine_guidance, guidance_scales
from keras_vdiff.diffusion.noise import mixed_video_noise
from keras_vdiff.diffusion.samplers import SAMPLERS, Sampler, get_sampler
from keras_vdiff.diffusion.schedules import NoiseSchedule, shift_flow_time
from keras_vdiff.diffusion.thresholding import Thresholding


def __getattr__(name):
    if name != "FrameConditionedDiffusion":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        "keras_vdiff.diffusion.FrameConditionedDiffusion is deprecated: it is a task, "
        "kv.FrameConditionedDiffusion (keras_vdiff.tasks.FrameConditionedDiffusion).",
        DeprecationWarning,
        stacklevel=2,
    )
    from keras_vdiff.tasks.frame_conditioned import FrameConditionedDiffusion

    return FrameConditionedDiffusion
