"""The latent-token family: SnapVideo-FiT and RIN, their layers and presets.

A small set of learned latents does the heavy computation and exchanges
information with the patch tokens only by cross-attention (read / process /
write, ``read_write_block.py``). The files, by concept:

- ``grouping.py``: FiT's spatial groups over all frames, the space-time position table;
- ``interface.py``: RIN's interface options (``InterfaceConv``, ``LatentLocalityBias``);
- ``latents.py``: ``LearnedLatents``, ``LatentSelfConditioning``;
- ``condition_tokens.py``: ``ConditionTokens`` (timestep / label / text + registers), ``TextRegisterEncoder``;
- ``read_write_block.py``: ``LatentReadWriteBlock`` and its ``PreNormResidual`` sub-layers;
- ``backbone.py``: the shared builder and ``LatentTokenBackbone``;
- ``snapvideo.py``, ``rin.py``: the two backbones; ``presets.py``: their presets (data).

Importing this package registers the presets.
"""

from keras_vdiff.models.latent_tokens.backbone import LatentTokenBackbone, build_latent_token_network
from keras_vdiff.models.latent_tokens.condition_tokens import ConditionTokens, TextRegisterEncoder
from keras_vdiff.models.latent_tokens.grouping import (
    group_grid,
    group_patches,
    spacetime_position_table,
    ungroup_patches,
)
from keras_vdiff.models.latent_tokens.interface import InterfaceConv, LatentLocalityBias
from keras_vdiff.models.latent_tokens.latents import LatentSelfConditioning, LearnedLatents
from keras_vdiff.models.latent_tokens.presets import RIN_PRESETS, SNAPVIDEO_PRESETS
from keras_vdiff.models.latent_tokens.read_write_block import LatentReadWriteBlock, PreNormResidual
from keras_vdiff.models.latent_tokens.rin import RIN
from keras_vdiff.models.latent_tokens.snapvideo import SnapVideo
from keras_vdiff.presets.registry import register_preset

for _class_name, _presets in (("SnapVideo", SNAPVIDEO_PRESETS), ("RIN", RIN_PRESETS)):
    for _name, _preset in _presets.items():
        register_preset(_name, _class_name, **_preset)
