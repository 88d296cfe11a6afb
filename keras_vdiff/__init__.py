"""keras_vdiff: a Keras 3 model zoo for video diffusion.

Every module is written in ``keras.ops`` so the same code trains with ``model.fit``
and samples with a compiled loop on TensorFlow, JAX or PyTorch (``KERAS_BACKEND``).
"""

from keras_vdiff import layers
from keras_vdiff import models
from keras_vdiff import diffusion
from keras_vdiff import data
from keras_vdiff import metrics
from keras_vdiff import text
from keras_vdiff import autoencoders
from keras_vdiff import presets
from keras_vdiff import tasks
from keras_vdiff.tasks import FrameConditionedDiffusion, TextToVideoPreprocessor, VideoDiffusion
from keras_vdiff.tasks import Cascade, SuperResolutionDiffusion, temporal_super_resolution
from keras_vdiff.tasks import GuidanceConditionedDiffusion, GuidedDistillation, ProgressiveDistillation
from keras_vdiff import training
from keras_vdiff import convert
from keras_vdiff import distribution

__version__ = "0.1.0"
