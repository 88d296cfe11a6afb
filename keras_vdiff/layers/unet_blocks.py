"""Deprecated module path: the U-Net blocks moved to ``keras_vdiff.models.unet``.

Names are forwarded on first use with a ``DeprecationWarning`` (see ``layers/moved.py``).
"""

from keras_vdiff.layers.moved import UNET_NAMES, forward


def __getattr__(name):
    return forward(__name__, name)


def __dir__():
    return sorted(UNET_NAMES)
