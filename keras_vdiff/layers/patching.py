"""Patch embedding (per-frame 2D and tubelet 3D) and its inverse.

Shape story (channels-last):

    video  (B, F, H, W, C)
      -> patches (B, F/pt, (H/p)(W/p), pt*p*p*C)      [rearrange]
      -> tokens  (B, F/pt, N, D)                      [Dense == Conv3D(k=s=(pt,p,p))]

An image ``(B, H, W, C)`` gives tokens ``(B, N, D)``. ``Unpatchify`` is the pure
rearrangement back: tokens whose width is ``pt*p*p*C_out`` become a video.
"""

import keras
from keras import ops

from keras_vdiff.layers.core import Dense
from keras_vdiff.validation import check_int


def patchify(x, patch_size, tubelet_size=1):
    """Rearrange a video/image into flattened patches (no weights).

    ``(B, F, H, W, C) -> (B, F/pt, (H/p)(W/p), pt*p*p*C)`` and
    ``(B, H, W, C) -> (B, (H/p)(W/p), p*p*C)``. Patch features are ordered
    ``(pt, p_row, p_col, C)``.
    """
    shape = x.shape
    if len(shape) == 4:
        b = ops.shape(x)[0]
        _, h, w, c = shape
        _validate_grid(h, w, patch_size)
        x = ops.reshape(x, (b, h // patch_size, patch_size, w // patch_size, patch_size, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # b hp wp p p c
        return ops.reshape(x, (b, (h // patch_size) * (w // patch_size), patch_size * patch_size * c))
    if len(shape) != 5:
        raise ValueError(f"Expected an image (B, H, W, C) or a video (B, F, H, W, C), got shape {shape}.")
    b = ops.shape(x)[0]
    _, f, h, w, c = shape
    _validate_grid(h, w, patch_size)
    if f is not None and f % tubelet_size:
        raise ValueError(f"Frame count {f} is not divisible by `tubelet_size`={tubelet_size}.")
    pt, p = tubelet_size, patch_size
    x = ops.reshape(x, (b, f // pt, pt, h // p, p, w // p, p, c))
    x = ops.transpose(x, (0, 1, 3, 5, 2, 4, 6, 7))  # b ft hp wp pt p p c
    return ops.reshape(x, (b, f // pt, (h // p) * (w // p), pt * p * p * c))


def _validate_grid(h, w, patch_size):
    if h is None or w is None:
        raise ValueError("Patch embedding needs static height and width; got None.")
    if h % patch_size or w % patch_size:
        raise ValueError(
            f"Height {h} and width {w} must be divisible by `patch_size`={patch_size}."
        )


def unpatchify(tokens, patch_size, out_channels, grid_size, tubelet_size=1):
    """Inverse of :func:`patchify`.

    Args:
        tokens: ``(B, F', N, pt*p*p*C)`` or ``(B, N, p*p*C)``.
        grid_size: ``(rows, cols)`` of the patch grid, ``rows * cols == N``.
    """
    rows, cols = grid_size
    p, pt, c = patch_size, tubelet_size, out_channels
    shape = tokens.shape
    b = ops.shape(tokens)[0]
    expected = pt * p * p * c if len(shape) == 4 else p * p * c
    if shape[-1] != expected:
        raise ValueError(
            f"Token width {shape[-1]} does not match tubelet_size*patch_size^2*out_channels = {expected}."
        )
    if shape[-2] is not None and shape[-2] != rows * cols:
        raise ValueError(f"Got {shape[-2]} tokens for a {rows}x{cols} patch grid.")
    if len(shape) == 3:
        x = ops.reshape(tokens, (b, rows, cols, p, p, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (b, rows * p, cols * p, c))
    f = shape[1]
    x = ops.reshape(tokens, (b, f, rows, cols, pt, p, p, c))
    x = ops.transpose(x, (0, 1, 4, 2, 5, 3, 6, 7))  # b ft pt hp p wp p c
    return ops.reshape(x, (b, f * pt, rows * p, cols * p, c))


@keras.saving.register_keras_serializable(package="keras_vdiff")
class PatchEmbedding(keras.layers.Layer):
    """Video or image to patch tokens (ViT; Latte's uniform and tubelet embeddings).

    ``tubelet_size=1`` embeds every frame's ``p x p`` patches separately (Latte's
    "uniform frame patch embedding", its better variant); ``tubelet_size=pt``
    embeds ``pt x p x p`` tubes (ViViT / Latte "compression frame", RIN). The
    projection is a Dense over flattened patches, which is exactly a
    convolution with kernel = stride = patch, initialised Xavier-uniform as DiT.

    Args:
        patch_size: spatial patch size ``p``.
        hidden_dim: token width ``D``.
        tubelet_size: temporal patch size ``pt``.
        use_bias: whether the projection has a bias.

    Call:
        ``(B, F, H, W, C) -> (B, F/pt, (H/p)(W/p), D)``;
        ``(B, H, W, C) -> (B, (H/p)(W/p), D)``.

    Example:
        >>> emb = PatchEmbedding(patch_size=2, hidden_dim=64)
        >>> emb(keras.ops.zeros((1, 8, 16, 16, 4))).shape
        (1, 8, 64, 64)
    """

    def __init__(self, patch_size=2, hidden_dim=64, tubelet_size=1, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        check_int(patch_size, "patch_size")
        check_int(hidden_dim, "hidden_dim")
        check_int(tubelet_size, "tubelet_size")
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.tubelet_size = tubelet_size
        self.use_bias = use_bias
        self.projection = Dense(
            hidden_dim,
            use_bias=use_bias,
            kernel_initializer="glorot_uniform",
            name="projection",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        if len(input_shape) == 4:
            patch_dim = self.patch_size**2 * channels
        elif len(input_shape) == 5:
            patch_dim = self.tubelet_size * self.patch_size**2 * channels
        else:
            raise ValueError(
                f"PatchEmbedding expects (B, H, W, C) or (B, F, H, W, C) input, got {input_shape}."
            )
        self.projection.build((None, patch_dim))
        self.built = True

    def call(self, x):
        return self.projection(patchify(x, self.patch_size, self.tubelet_size))

    def compute_output_shape(self, input_shape):
        p = self.patch_size
        if len(input_shape) == 4:
            b, h, w, _ = input_shape
            return (b, (h // p) * (w // p), self.hidden_dim)
        b, f, h, w, _ = input_shape
        f = None if f is None else f // self.tubelet_size
        return (b, f, (h // p) * (w // p), self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            patch_size=self.patch_size,
            hidden_dim=self.hidden_dim,
            tubelet_size=self.tubelet_size,
            use_bias=self.use_bias,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class Unpatchify(keras.layers.Layer):
    """Tokens back to a video or image: the inverse rearrangement of ``PatchEmbedding``.

    The tokens must already carry ``tubelet_size * patch_size**2 * out_channels``
    features (DiT's ``FinalLayer`` projects to that width).

    Args:
        patch_size: spatial patch size.
        out_channels: channels of the output video.
        tubelet_size: temporal patch size.
        grid_size: ``(rows, cols)`` of the patch grid; ``None`` means square.

    Example:
        >>> un = Unpatchify(patch_size=2, out_channels=4)
        >>> un(keras.ops.zeros((1, 8, 64, 16))).shape
        (1, 8, 16, 16, 4)
    """

    def __init__(self, patch_size=2, out_channels=4, tubelet_size=1, grid_size=None, **kwargs):
        super().__init__(**kwargs)
        check_int(patch_size, "patch_size")
        check_int(out_channels, "out_channels")
        check_int(tubelet_size, "tubelet_size")
        self.patch_size = patch_size
        self.out_channels = out_channels
        self.tubelet_size = tubelet_size
        self.grid_size = tuple(grid_size) if grid_size is not None else None

    def _grid(self, num_tokens):
        if self.grid_size is not None:
            return self.grid_size
        side = int(round(num_tokens**0.5))
        if side * side != num_tokens:
            raise ValueError(
                f"{num_tokens} tokens do not form a square grid; pass `grid_size=(rows, cols)`."
            )
        return side, side

    def call(self, tokens):
        grid = self._grid(tokens.shape[-2])
        return unpatchify(tokens, self.patch_size, self.out_channels, grid, self.tubelet_size)

    def compute_output_shape(self, input_shape):
        rows, cols = self._grid(input_shape[-2])
        p = self.patch_size
        if len(input_shape) == 3:
            return (input_shape[0], rows * p, cols * p, self.out_channels)
        f = None if input_shape[1] is None else input_shape[1] * self.tubelet_size
        return (input_shape[0], f, rows * p, cols * p, self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            patch_size=self.patch_size,
            out_channels=self.out_channels,
            tubelet_size=self.tubelet_size,
            grid_size=self.grid_size,
        )
        return config
