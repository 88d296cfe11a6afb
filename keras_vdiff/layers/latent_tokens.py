"""Deprecated module path: the latent-token layers moved to ``keras_vdiff.models.latent_tokens``.

Names are forwarded on first use with a ``DeprecationWarning`` (see ``layers/moved.py``).
"""

from keras_vdiff.layers.moved import LATENT_TOKEN_NAMES, forward


def __getattr__(name):
    return forward(__name__, name)


def __dir__():
    return sorted(LATENT_TOKEN_NAMES)
