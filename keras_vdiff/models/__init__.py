"""Backbones: one module per family, each a config-driven ``VideoBackbone`` with presets."""

from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.models.dit import DiT
