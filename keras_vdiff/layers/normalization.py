"""The one LayerNorm factory of keras_vdiff, and its dtype-preserving call.

Transformer norms run in float32 (``dtype="float32"``) so mixed-precision
models normalise in full precision; :func:`normed` casts the result back to the
input's dtype. ``affine=False`` is the adaLN form (shift and scale come from the
condition), ``center=False`` keeps the scale without an offset.

Example:
    >>> norm = layer_norm("norm1")                 # adaLN: no parameters
    >>> normed(norm, keras.ops.ones((2, 5, 8))).shape
    (2, 5, 8)
"""

import keras
from keras import ops

from keras_vdiff.layers.core import LayerNormalization


def layer_norm(name, affine=False, center=None, epsilon=1e-6, dtype="float32"):
    """A LayerNormalization (``keras_vdiff.layers.core``, Keras' own with a lean PyTorch call) over the last axis.

    Args:
        name: layer name (it is part of the weight paths: keep it stable).
        affine: learn a scale (and, unless ``center=False``, an offset).
        center: learn the offset; defaults to ``affine``. Ignored without ``affine``.
        epsilon: variance epsilon.
        dtype: the layer's dtype policy (``"float32"``: normalise in full precision).
    """
    center = affine if center is None else (affine and center)
    return LayerNormalization(epsilon=epsilon, center=center, scale=affine, name=name, dtype=dtype)


def normed(norm, x):
    """``norm(x)`` cast back to the dtype of ``x``."""
    return ops.cast(norm(x), x.dtype)
