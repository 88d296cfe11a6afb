"""Tasks: the models users train and sample, built from a backbone, a diffusion process and encoders.

- ``VideoDiffusion`` (``video_diffusion.py``): ``fit`` and ``generate`` (prepare / sample / decode);
- ``FrameConditionedDiffusion`` (``frame_conditioned.py``): image-to-video, interpolation, prediction;
- ``ProgressiveDistillation``, ``GuidedDistillation``, ``GuidanceConditionedDiffusion`` (``distillation.py``):
  few-step, guidance-free students;
- ``SuperResolutionDiffusion`` (``super_resolution.py``), ``Cascade`` and ``temporal_super_resolution``
  (``cascade.py``): cascaded super-resolution (base -> TSR -> SSR);
- ``TextToVideoPreprocessor`` (``text_to_video_preprocessor.py``): prompts to token ids (the tokenizer);
- ``conditioning.py``: the task side of the conditioning contract; ``sampling.py``: the sampling step;
  ``pipeline_presets.py``: pipeline presets as keras-hub preset folders.

The task floor sits above ``diffusion`` and the models (``docs/ARCHITECTURE.md``).
"""

from keras_vdiff.tasks.text_to_video_preprocessor import TextToVideoPreprocessor
from keras_vdiff.tasks.video_diffusion import VideoDiffusion
from keras_vdiff.tasks.frame_conditioned import FrameConditionedDiffusion
from keras_vdiff.tasks.super_resolution import SuperResolutionDiffusion
from keras_vdiff.tasks.cascade import Cascade, temporal_super_resolution
from keras_vdiff.tasks.distillation import GuidanceConditionedDiffusion, GuidedDistillation, ProgressiveDistillation
