"""Position, timestep, label and pooled-text embeddings.

Fixed sin-cos tables follow the MAE / DiT convention: for a position ``p`` and
``d/2`` frequencies ``omega_i = 1 / 10000^(i / (d/2))`` the embedding is
``[sin(p * omega), cos(p * omega)]``. Multi-axis tables split the width between
the axes and concatenate the per-axis tables.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_vdiff.layers.core import Dense
from keras_vdiff.validation import check_int


def sincos_embedding_1d(positions, dim, max_period=10000.0):
    """Sin-cos embedding of 1D positions (Vaswani et al. 2017; DiT/MAE layout).

    Args:
        positions: an int (the table has positions ``0..positions-1``) or an
            array of (possibly fractional) positions.
        dim: even embedding width.
        max_period: the longest wavelength.

    Returns:
        float32 numpy array ``(len(positions), dim)``: ``[sin | cos]`` halves.

    Example:
        >>> sincos_embedding_1d(10, 64).shape
        (10, 64)
    """
    check_int(dim, "dim")
    if dim % 2:
        raise ValueError(f"`dim` must be even for a sin-cos table, got {dim}.")
    if np.isscalar(positions):
        check_int(positions, "positions")
        positions = np.arange(positions)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1)
    omega = 1.0 / max_period ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = positions[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype("float32")


SINCOS_2D_ORDERS = ("rows_first", "columns_first")


def sincos_embedding_2d(grid_height, grid_width, dim, max_period=10000.0, order="rows_first", interpolation_scale=1.0):
    """Sin-cos table over a ``grid_height x grid_width`` patch grid (DiT).

    Half of the width encodes the row, half the column. Rows are the slow axis
    of the tokens, so the table matches tokens flattened as ``(h w)``.

    Args:
        grid_height, grid_width: patch grid size.
        dim: table width, divisible by 4.
        max_period: the longest wavelength.
        order: which coordinate fills the first half of the channels:
            ``"rows_first"`` (this project's models) or ``"columns_first"``
            (the official DiT / MAE ``get_2d_sincos_pos_embed``, whose
            ``meshgrid(w, h)`` puts the column coordinate first).
        interpolation_scale: positions are divided by it (PixArt / diffusers'
            ``PatchEmbed``: a model trained on a grid ``s`` times finer than 32x32
            patches sees the positions of the coarse grid).

    Returns:
        float32 numpy array ``(grid_height * grid_width, dim)``.

    Example:
        >>> sincos_embedding_2d(4, 4, 64).shape
        (16, 64)
    """
    check_int(grid_height, "grid_height")
    check_int(grid_width, "grid_width")
    if dim % 4:
        raise ValueError(f"`dim` must be divisible by 4 for a 2D sin-cos table, got {dim}.")
    if order not in SINCOS_2D_ORDERS:
        raise ValueError(f"`order` must be one of {SINCOS_2D_ORDERS}, got {order!r}.")
    if not interpolation_scale > 0:
        raise ValueError(f"`interpolation_scale` must be positive, got {interpolation_scale!r}.")
    rows = np.repeat(np.arange(grid_height), grid_width) / interpolation_scale
    cols = np.tile(np.arange(grid_width), grid_height) / interpolation_scale
    rows = sincos_embedding_1d(rows, dim // 2, max_period)
    cols = sincos_embedding_1d(cols, dim // 2, max_period)
    halves = [rows, cols] if order == "rows_first" else [cols, rows]
    return np.concatenate(halves, axis=1)


def sincos_embedding_3d(frames, grid_height, grid_width, dim, temporal_dim=None, max_period=10000.0,
                        order="rows_first", interpolation_scale=1.0, temporal_interpolation_scale=1.0):
    """Sin-cos table over frames x rows x columns (full-3D attention models).

    The width is split into a temporal part (``temporal_dim``, default ``dim // 4``
    rounded to an even number, as in CogVideoX) and a 2D spatial part.
    ``order`` and ``interpolation_scale`` are the spatial table's (see
    :func:`sincos_embedding_2d`); frame positions are divided by
    ``temporal_interpolation_scale``. CogVideoX (diffusers'
    ``get_3d_sincos_pos_embed``) is ``temporal_dim=dim // 4, order="columns_first"``
    with its config's two interpolation scales.

    Returns:
        float32 numpy array ``(frames * grid_height * grid_width, dim)``, tokens
        flattened as ``(f h w)``.

    Example:
        >>> sincos_embedding_3d(4, 2, 2, 64).shape
        (16, 64)
    """
    check_int(frames, "frames")
    if temporal_dim is None:
        temporal_dim = max(2, (dim // 4) // 2 * 2)
    spatial_dim = dim - temporal_dim
    if temporal_dim % 2 or spatial_dim % 4 or spatial_dim <= 0:
        raise ValueError(
            f"Cannot split `dim`={dim} into an even temporal part ({temporal_dim}) and a spatial part "
            f"divisible by 4 ({spatial_dim}); pass a compatible `temporal_dim`."
        )
    tokens = grid_height * grid_width
    if not temporal_interpolation_scale > 0:
        raise ValueError(f"`temporal_interpolation_scale` must be positive, got {temporal_interpolation_scale!r}.")
    frame_positions = np.arange(frames) / temporal_interpolation_scale
    temporal = np.repeat(sincos_embedding_1d(frame_positions, temporal_dim, max_period), tokens, axis=0)
    spatial = sincos_embedding_2d(grid_height, grid_width, spatial_dim, max_period, order=order,
                                  interpolation_scale=interpolation_scale)
    spatial = np.tile(spatial, (frames, 1))
    return np.concatenate([temporal, spatial], axis=1)


def rope_frequencies(positions, head_dim, max_wavelength=10000.0):
    """Rotation angles for (multi-axis) rotary position embedding.

    ``positions`` is ``(seq,)`` for 1D RoPE or ``(seq, n_axes)`` for axial
    RoPE (e.g. ``n_axes=3`` for frame, row, column). ``head_dim`` is split into
    ``n_axes`` equal even parts; each part rotates with its own axis' position.

    Returns:
        float32 numpy array ``(seq, head_dim // 2)`` of angles.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim == 1:
        positions = positions[:, None]
    n_axes = positions.shape[1]
    if head_dim % (2 * n_axes):
        raise ValueError(
            f"`head_dim`={head_dim} must be divisible by 2 * number of RoPE axes ({2 * n_axes})."
        )
    part = head_dim // n_axes
    inv_freq = 1.0 / max_wavelength ** (np.arange(0, part, 2, dtype=np.float64) / part)
    angles = [positions[:, a:a + 1] * inv_freq[None, :] for a in range(n_axes)]
    return np.concatenate(angles, axis=1).astype("float32")


def apply_rope(x, angles):
    """Rotate query/key features by RoPE angles (Su et al. 2021, RoFormer).

    Args:
        x: ``(batch, seq, heads, head_dim)``.
        angles: ``(seq, head_dim // 2)`` from :func:`rope_frequencies`.

    Pairs are formed from the two halves of the head (the "rotate half"
    layout used by keras-hub's ``RotaryEmbedding``), computed in float32.
    """
    dtype = x.dtype
    x = ops.cast(x, "float32")
    angles = ops.convert_to_tensor(angles, "float32")
    cos = ops.cos(angles)[None, :, None, :]
    sin = ops.sin(angles)[None, :, None, :]
    x1, x2 = ops.split(x, 2, axis=-1)
    rotated = ops.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return ops.cast(rotated, dtype)


def timestep_sinusoids(timesteps, dim, max_period=10000.0, frequency_shift=0):
    """DiT's sinusoidal timestep features ``[cos | sin]`` in float32.

    Frequency ``i`` of ``dim / 2`` is ``max_period ** (-i / (dim / 2 - frequency_shift))``:
    shift 0 is DiT's and PixArt's table, shift 1 the one diffusers'
    ``DiTTransformer2DModel`` uses (``Timesteps(downscale_freq_shift=1)``).

    Args:
        timesteps: ``(batch,)`` float or int tensor.
        dim: number of features (even).
        max_period: the longest period.
        frequency_shift: subtracted from ``dim / 2`` in the exponent's denominator.
    """
    half = dim // 2
    if not 0 <= frequency_shift < half:
        raise ValueError(f"`frequency_shift` must lie in [0, {half}), got {frequency_shift!r}.")
    # float32 in the references' order of arithmetic (DiT, diffusers), built with ops: no NumPy table to convert
    # on every call (a graph break under torch.compile).
    freqs = ops.exp(-math.log(max_period) * ops.arange(half, dtype="float32") / (half - frequency_shift))
    args = ops.cast(ops.reshape(timesteps, (-1, 1)), "float32") * freqs[None, :]
    return ops.concatenate([ops.cos(args), ops.sin(args)], axis=-1)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class TimestepEmbedding(keras.layers.Layer):
    """Sinusoidal timestep features followed by an MLP (DiT, Peebles & Xie 2023).

    ``t -> [cos, sin](t * time_scale * freqs) -> Dense -> SiLU -> Dense``.
    Works for discrete timesteps ``t in [0, T)`` (``time_scale=1``) and for
    continuous ``t in [0, 1]`` (use ``time_scale=1000`` so the frequencies see
    the same range as the discrete case).

    Args:
        hidden_dim: output width.
        frequency_dim: number of sinusoid features (DiT: 256).
        max_period: longest sinusoid period.
        time_scale: multiplier applied to the timesteps before the sinusoids.
        frequency_shift: see :func:`timestep_sinusoids` (diffusers' DiT: 1).

    Example:
        >>> emb = TimestepEmbedding(64)
        >>> emb(keras.ops.array([0.0, 500.0])).shape
        (2, 64)
    """

    def __init__(self, hidden_dim, frequency_dim=256, max_period=10000.0, time_scale=1.0, frequency_shift=0,
                 **kwargs):
        super().__init__(**kwargs)
        check_int(hidden_dim, "hidden_dim")
        if frequency_dim % 2:
            raise ValueError(f"`frequency_dim` must be even, got {frequency_dim}.")
        self.hidden_dim = hidden_dim
        self.frequency_dim = frequency_dim
        self.max_period = max_period
        self.time_scale = time_scale
        self.frequency_shift = frequency_shift
        self.dense_1 = Dense(hidden_dim, name="dense_1", dtype=self.dtype_policy)
        self.dense_2 = Dense(hidden_dim, name="dense_2", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.dense_1.build((None, self.frequency_dim))
        self.dense_2.build((None, self.hidden_dim))
        self.built = True

    def call(self, timesteps):
        t = ops.cast(timesteps, "float32") * self.time_scale
        features = timestep_sinusoids(t, self.frequency_dim, self.max_period, self.frequency_shift)
        features = ops.cast(features, self.compute_dtype)
        return self.dense_2(ops.silu(self.dense_1(features)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            frequency_dim=self.frequency_dim,
            max_period=self.max_period,
            time_scale=self.time_scale,
            frequency_shift=self.frequency_shift,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class LabelEmbedding(keras.layers.Layer):
    """Class-label table with an extra null class for classifier-free guidance (DiT).

    The table has ``num_classes + 1`` rows; row ``num_classes`` is the null
    (unconditional) class. During training each label is replaced by the null
    class with probability ``dropout_prob``; at inference nothing is dropped.
    ``force_drop`` (bool tensor ``(batch,)``) drops chosen labels explicitly.

    Args:
        num_classes: number of real classes.
        hidden_dim: embedding width.
        dropout_prob: training-time label-drop probability.
        seed: seed of the dropping randomness.

    Example:
        >>> emb = LabelEmbedding(10, 64, dropout_prob=0.1)
        >>> emb(keras.ops.array([3, 7, 10])).shape   # 10 is the null class
        (3, 64)
    """

    def __init__(self, num_classes, hidden_dim, dropout_prob=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        check_int(num_classes, "num_classes")
        check_int(hidden_dim, "hidden_dim")
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"`dropout_prob` must be in [0, 1), got {dropout_prob}.")
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.dropout_prob = dropout_prob
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.table = keras.layers.Embedding(
            num_classes + 1,
            hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="table",
            dtype=self.dtype_policy,
        )

    @property
    def null_class(self):
        return self.num_classes

    def build(self, input_shape):
        self.table.build(input_shape)
        self.built = True

    def drop_labels(self, labels, force_drop=None, training=False):
        """Labels with dropped entries replaced by the null class."""
        labels = ops.cast(labels, "int32")
        drop = None
        if training and self.dropout_prob > 0:
            u = keras.random.uniform(ops.shape(labels), seed=self.seed_generator)
            drop = u < self.dropout_prob
        if force_drop is not None:
            force_drop = ops.cast(force_drop, "bool")
            drop = force_drop if drop is None else ops.logical_or(drop, force_drop)
        if drop is None:
            return labels
        return ops.where(drop, ops.full_like(labels, self.num_classes), labels)

    def call(self, labels, training=None, force_drop=None):
        return self.table(self.drop_labels(labels, force_drop=force_drop, training=bool(training)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            hidden_dim=self.hidden_dim,
            dropout_prob=self.dropout_prob,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class PooledTextEmbedding(keras.layers.Layer):
    """Projects a pooled text embedding to the model width, with a learned null.

    ``Dense -> SiLU -> Dense`` of ``pooled_text`` (GenTron / thesis: the pooled
    prompt is added to the timestep embedding for adaLN). Where the text mask
    of a sample is all zero (the classifier-free-guidance null prompt), the
    output is a learned null embedding instead, so the unconditional branch is
    a real, trainable condition and not whatever a zero vector projects to.

    Args:
        hidden_dim: output width.

    Example:
        >>> emb = PooledTextEmbedding(64)
        >>> emb(keras.ops.ones((2, 32)), keras.ops.array([[1, 1], [0, 0]])).shape
        (2, 64)
    """

    def __init__(self, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        check_int(hidden_dim, "hidden_dim")
        self.hidden_dim = hidden_dim
        self.dense_1 = Dense(hidden_dim, name="dense_1", dtype=self.dtype_policy)
        self.dense_2 = Dense(hidden_dim, name="dense_2", dtype=self.dtype_policy)

    def build(self, pooled_text_shape, text_mask_shape=None):
        self.dense_1.build(pooled_text_shape)
        self.dense_2.build((None, self.hidden_dim))
        self.null_embedding = self.add_weight(
            name="null_embedding",
            shape=(self.hidden_dim,),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.built = True

    def call(self, pooled_text, text_mask=None):
        x = self.dense_2(ops.silu(self.dense_1(pooled_text)))
        if text_mask is None:
            return x
        has_text = ops.any(ops.cast(text_mask, "bool"), axis=-1, keepdims=True)
        null = ops.cast(self.null_embedding, x.dtype)[None, :]
        return ops.where(has_text, x, null)

    def compute_output_shape(self, pooled_text_shape, text_mask_shape=None):
        return (pooled_text_shape[0], self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim)
        return config
