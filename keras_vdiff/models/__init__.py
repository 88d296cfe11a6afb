"""Backbones: one module per single-file family, one folder per multi-file family (``latent_tokens/``,
``unet/``), each a config-driven ``VideoBackbone`` with presets.

Importing this package registers every backbone preset.
"""

from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.models.dit import DiT
from keras_vdiff.models.gentron import GenTron
from keras_vdiff.models.latte import Latte
from keras_vdiff.models.video_dit import VideoDiT
from keras_vdiff.models.unet import MakeAVideoUNet, UNet2D, VDMUNet, inflate_unet
from keras_vdiff.models.latent_tokens import RIN, SnapVideo
from keras_vdiff.models.conversion import dit_from_torch_state_dict
