"""VideoFusion's mixed noise prior (Luo et al. 2023): a base noise shared by all frames plus per-frame residuals.

``eps_i = sqrt(shared) * b + sqrt(1 - shared) * r_i`` with ``b, r_i ~ N(0, I)``:
every frame keeps unit variance and any two frames correlate by ``shared``.
Used for the initial sampling noise and for the training noise.
"""

import keras
from keras import ops


def mixed_video_noise(shape, shared_weight=0.0, seed=None, dtype="float32"):
    """Gaussian noise (B, F, H, W, C) whose frames share a fraction ``shared_weight`` of their variance.

    Args:
        shape: the video shape ``(B, F, H, W, C)``; any other rank gets plain noise
            (images have no frames to share across).
        shared_weight: lambda in [0, 1]; 0 is i.i.d. noise, 1 identical frames.
        seed: an int or ``keras.random.SeedGenerator``.

    Example:
        >>> noise = mixed_video_noise((2, 8, 16, 16, 4), shared_weight=0.5, seed=0)
    """
    if not 0.0 <= shared_weight <= 1.0:
        raise ValueError(f"`shared_weight` must lie in [0, 1], got {shared_weight!r}.")
    shape = tuple(shape)
    if shared_weight == 0.0 or len(shape) != 5:
        return keras.random.normal(shape, dtype=dtype, seed=seed)
    base_seed, residual_seed = (seed, seed + 1) if isinstance(seed, int) else (seed, seed)
    base = keras.random.normal((shape[0], 1) + shape[2:], dtype=dtype, seed=base_seed)
    residual = keras.random.normal(shape, dtype=dtype, seed=residual_seed)
    return shared_weight**0.5 * base + (1.0 - shared_weight) ** 0.5 * residual
