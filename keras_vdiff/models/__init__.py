"""Backbones: one module per single-file family, one folder per multi-file family (``latent_tokens/``,
``unet/``), each a config-driven ``VideoBackbone`` with presets.

Importing this package registers every backbone preset: each family's presets are a plain data dict
(``DIT_PRESETS`` ... beside the single-file families, ``presets.py`` in a family folder), registered
here for the single-file families and by the folder's ``__init__`` for the others.
"""

from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.models.cogvideox import COGVIDEOX_PRESETS, CogVideoX
from keras_vdiff.models.dit import DIT_PRESETS, DiT
from keras_vdiff.models.gentron import GENTRON_PRESETS, GenTron
from keras_vdiff.models.latte import LATTE_PRESETS, Latte
from keras_vdiff.models.video_dit import VIDEO_DIT_PRESETS, VideoDiT
from keras_vdiff.models.wan import WAN_PRESETS, Wan
from keras_vdiff.models.unet import MakeAVideoUNet, UNet2D, VDMUNet, inflate_unet
from keras_vdiff.models.latent_tokens import RIN, SnapVideo
from keras_vdiff.models.conversion import dit_from_torch_state_dict
from keras_vdiff.presets.registry import register_preset

for _presets in (COGVIDEOX_PRESETS, DIT_PRESETS, GENTRON_PRESETS, LATTE_PRESETS, VIDEO_DIT_PRESETS, WAN_PRESETS):
    for _name, _preset in _presets.items():
        register_preset(_name, **_preset)
