"""Thresholding of the predicted clean sample x0 during sampling.

- static: clip x0 to ``[-clip_range, clip_range]`` (DDPM's ``clip_denoised``; the
  thesis' "clamp x0", which its DiT needed to produce valid images).
- dynamic (Imagen, Saharia et al. 2022): per example, ``s`` = the ``percentile``
  quantile of ``|x0|``, ``s = clip(s, 1, max_value)``, then ``x0 = clip(x0, -s, s) / s``.
"""

from keras import ops

THRESHOLDING_KINDS = (None, "static", "dynamic")


class Thresholding:
    """A thresholding rule for x0 (a plain callable on float32 tensors).

    Args:
        kind: ``None`` (off), ``"static"`` or ``"dynamic"``.
        clip_range: bound of the static clip.
        percentile: quantile of ``|x0|`` of the dynamic rule (Imagen uses 0.995).
        max_value: upper bound of the dynamic ``s`` (``None``: unbounded, as Imagen).

    Example:
        >>> threshold = Thresholding("dynamic", percentile=0.995)
        >>> x0 = threshold(x0)
    """

    def __init__(self, kind=None, clip_range=1.0, percentile=0.995, max_value=None):
        if kind not in THRESHOLDING_KINDS:
            raise ValueError(f"`thresholding` must be one of {THRESHOLDING_KINDS}, got {kind!r}.")
        if not 0.0 < percentile <= 1.0:
            raise ValueError(f"`percentile` must lie in (0, 1], got {percentile!r}.")
        if clip_range <= 0:
            raise ValueError(f"`clip_range` must be positive, got {clip_range!r}.")
        self.kind = kind
        self.clip_range = float(clip_range)
        self.percentile = float(percentile)
        self.max_value = None if max_value is None else float(max_value)

    @classmethod
    def from_argument(cls, value):
        """Accept None, a kind name, a dict of arguments or a ``Thresholding``."""
        if isinstance(value, Thresholding):
            return value
        if isinstance(value, dict):
            return cls(**value)
        return cls(value)

    def __call__(self, x0):
        if self.kind is None:
            return x0
        if self.kind == "static":
            return ops.clip(x0, -self.clip_range, self.clip_range)
        flat = ops.reshape(ops.abs(x0), (ops.shape(x0)[0], -1))
        s = ops.quantile(flat, self.percentile, axis=1)
        s = ops.maximum(s, 1.0)
        if self.max_value is not None:
            s = ops.minimum(s, self.max_value)
        s = ops.reshape(s, (-1,) + (1,) * (len(x0.shape) - 1))
        return ops.minimum(ops.maximum(x0, -s), s) / s
