"""Forwarding of the layers that moved to their model family's folder (deprecated paths).

The latent-token layers (SnapVideo-FiT, RIN) now live in
``keras_vdiff.models.latent_tokens`` and the U-Net blocks in
``keras_vdiff.models.unet``. ``kv.layers.<Name>`` and the old modules
``keras_vdiff.layers.latent_tokens`` / ``keras_vdiff.layers.unet_blocks`` still
give them, on first use and with a ``DeprecationWarning``. The layers keep
their registered names (``keras_vdiff>ConditionTokens`` ...), so saved models
load. The forwarding is lazy, so importing ``keras_vdiff.layers`` never imports
``keras_vdiff.models`` (the floors only import downwards).
"""

import importlib
import warnings

LATENT_TOKEN_NAMES = (
    "ConditionTokens", "InterfaceConv", "LatentLocalityBias", "LatentReadWriteBlock", "LatentSelfConditioning",
    "LearnedLatents", "PreNormResidual", "TextRegisterEncoder", "group_grid", "group_patches",
    "spacetime_position_table", "ungroup_patches",
)
UNET_NAMES = (
    "CONV_TYPES", "EMBEDDING_MODES", "NEGATIVE_LOGIT", "Downsample", "ResBlock", "SpatialAttention",
    "TemporalAttention", "UNetConditionEmbedding", "Upsample", "copy_image_weights", "relative_position_buckets",
)
NEW_HOMES = {
    "keras_vdiff.layers.latent_tokens": ("keras_vdiff.models.latent_tokens", LATENT_TOKEN_NAMES),
    "keras_vdiff.layers.unet_blocks": ("keras_vdiff.models.unet", UNET_NAMES),
}


def forward(module_name, name):
    """``name`` of the deprecated module ``module_name``, taken from its new home, with a warning."""
    for old, (new_home, names) in NEW_HOMES.items():
        if name in names and module_name in (old, "keras_vdiff.layers"):
            warnings.warn(
                f"`{module_name}.{name}` is deprecated: import it from `{new_home}`.", DeprecationWarning,
                stacklevel=3,
            )
            return getattr(importlib.import_module(new_home), name)
    raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
