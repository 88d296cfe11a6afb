"""Deprecated module path: ``VideoDiffusion`` lives in ``keras_vdiff.tasks`` (``kv.VideoDiffusion``).

Kept so that code and saved configs naming ``keras_vdiff.video_diffusion`` keep
working; importing it warns once. New code imports::

    from keras_vdiff.tasks import VideoDiffusion                      # or kv.VideoDiffusion
    from keras_vdiff.conventions import unit_range_to_uint8, videos_to_unit_range, batch_loss

See ``docs/ARCHITECTURE.md`` for where each piece lives now.
"""

import warnings

from keras_vdiff.conventions import batch_loss, unit_range_to_uint8, videos_to_unit_range  # noqa: F401
from keras_vdiff.layers.conditioning import TEXT_KEYS  # noqa: F401
from keras_vdiff.presets.pipeline_format import LEGACY_CONFIG_FILE as CONFIG_FILE  # noqa: F401
from keras_vdiff.presets.pipeline_format import LEGACY_WEIGHTS_FILE as WEIGHTS_FILE  # noqa: F401
from keras_vdiff.tasks.conditioning import MAX_SEED, checked_labels, checked_prompts, checked_seed  # noqa: F401
from keras_vdiff.tasks.video_diffusion import PROCESSES, VideoDiffusion  # noqa: F401

warnings.warn(
    "keras_vdiff.video_diffusion is deprecated: import VideoDiffusion from keras_vdiff.tasks (or use "
    "kv.VideoDiffusion), and the pixel helpers from keras_vdiff.conventions.",
    DeprecationWarning,
    stacklevel=2,
)
