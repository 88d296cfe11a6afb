"""Deprecated module path: SnapVideo lives in ``keras_vdiff.models.latent_tokens`` (with RIN and their layers)."""

import warnings

from keras_vdiff.models.latent_tokens import LatentTokenBackbone, SnapVideo, build_latent_token_network  # noqa: F401

warnings.warn(
    "`keras_vdiff.models.snapvideo` is deprecated: import `SnapVideo` from `keras_vdiff.models` "
    "(or `keras_vdiff.models.latent_tokens`).",
    DeprecationWarning,
    stacklevel=2,
)
