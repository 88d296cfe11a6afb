"""Deprecated module path: RIN lives in ``keras_vdiff.models.latent_tokens`` (with SnapVideo and their layers)."""

import warnings

from keras_vdiff.models.latent_tokens import RIN  # noqa: F401

warnings.warn(
    "`keras_vdiff.models.rin` is deprecated: import `RIN` from `keras_vdiff.models` "
    "(or `keras_vdiff.models.latent_tokens`).",
    DeprecationWarning,
    stacklevel=2,
)
