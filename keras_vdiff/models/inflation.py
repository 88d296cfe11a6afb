"""Deprecated module path: the U-Nets live in ``keras_vdiff.models.unet`` (one folder for the family)."""

import warnings

from keras_vdiff.models.unet import MakeAVideoUNet, inflate_unet  # noqa: F401

warnings.warn(
    "`keras_vdiff.models.inflation` is deprecated: import from `keras_vdiff.models` (or `keras_vdiff.models.unet`).",
    DeprecationWarning,
    stacklevel=2,
)
