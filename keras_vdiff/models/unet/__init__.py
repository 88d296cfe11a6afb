"""The U-Net family: the DDPM / ADM image U-Net, VDM's 3D U-Net, Make-A-Video's inflation, their blocks.

- ``blocks.py``: ``ResBlock``, ``Downsample``, ``Upsample`` (image or video, optional temporal parts);
- ``attention.py``: ``SpatialAttention`` (with LDM's text cross-attention), ``TemporalAttention`` (VDM);
- ``condition_embedding.py``: ``UNetConditionEmbedding`` (timestep + label | pooled text (+ fps));
- ``unet2d.py``: the shared graph (``build_unet_graph``), ``UNetBackbone`` and ``UNet2D``;
- ``vdm_unet.py``: ``VDMUNet``; ``inflation.py``: ``MakeAVideoUNet`` and ``inflate_unet``;
- ``presets.py``: the presets (data), registered when this package is imported.
"""

from keras_vdiff.models.unet.attention import (
    NEGATIVE_LOGIT,
    SpatialAttention,
    TemporalAttention,
    relative_position_buckets,
)
from keras_vdiff.models.unet.blocks import (
    CONV_TYPES,
    EMBEDDING_MODES,
    Downsample,
    ResBlock,
    Upsample,
    copy_image_weights,
    group_norm,
)
from keras_vdiff.models.unet.condition_embedding import UNetConditionEmbedding
from keras_vdiff.models.unet.inflation import MakeAVideoUNet, inflate_unet
from keras_vdiff.models.unet.presets import UNET_PRESETS
from keras_vdiff.models.unet.unet2d import UNet2D, UNetBackbone, build_unet_graph
from keras_vdiff.models.unet.vdm_unet import VDMUNet
from keras_vdiff.presets.registry import register_preset

for _name, _preset in UNET_PRESETS.items():
    register_preset(_name, **_preset)
