"""Backbones: one module per family, each a config-driven ``VideoBackbone`` with presets.

Importing this package registers every backbone preset.
"""

from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.models.dit import DiT
from keras_vdiff.models.gentron import GenTron
from keras_vdiff.models.latte import Latte
from keras_vdiff.models.video_dit import VideoDiT
from keras_vdiff.models.unet import UNet2D
from keras_vdiff.models.vdm_unet import VDMUNet
from keras_vdiff.models.inflation import MakeAVideoUNet, inflate_unet
from keras_vdiff.models.snapvideo import SnapVideo
from keras_vdiff.models.rin import RIN
from keras_vdiff.models.conversion import dit_from_torch_state_dict
