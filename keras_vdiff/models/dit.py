"""DiT: the class-conditional image Diffusion Transformer (Peebles & Xie 2023).

::

    latents (B, H, W, C) -> PatchEmbedding + 2D sin-cos -> tokens (B, N, D)
    c = TimestepEmbedding(t) + LabelEmbedding(y)          (y = num_classes is the null class)
    N x DiTBlock(tokens, c)                               (adaLN-Zero)
    FinalLayer(tokens, c) -> Unpatchify -> (B, H, W, C_out)

``C_out = 2 * C`` with ``learn_sigma`` (noise prediction + variance
interpolation, improved DDPM), as in the paper's models.
"""

import keras
from keras import ops

from keras_vdiff.layers.embeddings import SINCOS_2D_ORDERS, LabelEmbedding, TimestepEmbedding, sincos_embedding_2d
from keras_vdiff.layers.modulation import FinalLayer
from keras_vdiff.layers.patching import PatchEmbedding, Unpatchify
from keras_vdiff.layers.transformer import DiTBlock
from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.models.native_sizes import unpatchify_at
from keras_vdiff.validation import check_int, check_pair

# The paper's model sizes (Table 1): depth, width, heads.
DIT_SIZES = {
    "small": dict(num_layers=12, hidden_dim=384, num_heads=6),
    "base": dict(num_layers=12, hidden_dim=768, num_heads=12),
    "large": dict(num_layers=24, hidden_dim=1024, num_heads=16),
    "xlarge": dict(num_layers=28, hidden_dim=1152, num_heads=16),
}


@keras.saving.register_keras_serializable(package="keras_vdiff")
class DiT(VideoBackbone):
    """Class-conditional image DiT with adaLN-Zero blocks.

    Args:
        image_size: latent height/width (int or pair). ImageNet-256 DiTs use 32.
        in_channels: latent channels (4 for an SD VAE, 1 for MNIST pixels).
        patch_size: 2, 4 or 8 in the paper (any divisor of the image size works).
        hidden_dim, num_layers, num_heads, mlp_ratio: transformer size.
        num_classes: number of classes; label ``num_classes`` is the null class.
        learn_sigma: also output the improved-DDPM variance channels.
        class_dropout_prob: label drop rate inside the model during training.
            Keep 0 when training through ``VideoDiffusion``, which drops
            conditions itself (``condition_dropout``).
        pos_embed_order: channel layout of the fixed 2D sin-cos position
            table: ``"rows_first"`` (default, this project's layout) or
            ``"columns_first"`` (the official DiT checkpoints' layout; set by
            ``dit_from_torch_state_dict``). Both encode the same positions.
        timestep_frequency_shift: the timestep sinusoids' frequency shift
            (0: the paper's; 1: diffusers' ``DiTTransformer2DModel``).
        mlp_norm_epsilon: epsilon of the LayerNorm before each MLP (the paper's
            1e-6; diffusers' ``DiTTransformer2DModel`` uses its ``norm_eps``, 1e-5).
        dtype: dtype policy, e.g. ``"mixed_bfloat16"``.

    Inputs: ``{"latents": (B, H, W, C), "timesteps": (B,), "class_labels": (B,) int}``.
    Output: ``(B, H, W, out_channels)``.

    Example:
        >>> model = DiT(image_size=8, in_channels=1, patch_size=2, hidden_dim=32,
        ...             num_layers=2, num_heads=2, num_classes=10)
        >>> out = model({"latents": keras.ops.zeros((2, 8, 8, 1)),
        ...              "timesteps": keras.ops.array([1.0, 2.0]),
        ...              "class_labels": keras.ops.array([3, 10])})
        >>> out.shape
        (2, 8, 8, 2)
    """

    is_video = False
    conditioning = "class"
    native_sizes = True  # any height / width of the patches (`at_shape`)

    def __init__(
        self,
        image_size=32,
        in_channels=4,
        patch_size=2,
        hidden_dim=1152,
        num_layers=28,
        num_heads=16,
        mlp_ratio=4.0,
        num_classes=1000,
        learn_sigma=True,
        class_dropout_prob=0.0,
        pos_embed_order="rows_first",
        timestep_frequency_shift=0,
        mlp_norm_epsilon=1e-6,
        dtype=None,
        **kwargs,
    ):
        height, width = check_pair(image_size, "image_size")
        check_int(in_channels, "in_channels")
        check_int(patch_size, "patch_size")
        check_int(num_layers, "num_layers")
        check_int(num_classes, "num_classes")
        if height % patch_size or width % patch_size:
            raise ValueError(f"`image_size`={image_size} must be divisible by `patch_size`={patch_size}.")
        if hidden_dim % num_heads or hidden_dim % 4:
            raise ValueError(
                f"`hidden_dim`={hidden_dim} must be divisible by `num_heads`={num_heads} and by 4."
            )
        if pos_embed_order not in SINCOS_2D_ORDERS:
            raise ValueError(f"`pos_embed_order` must be one of {SINCOS_2D_ORDERS}, got {pos_embed_order!r}.")
        out_channels = in_channels * (2 if learn_sigma else 1)
        grid = (height // patch_size, width // patch_size)

        # === Layers ===
        self.patch_embedding = PatchEmbedding(patch_size, hidden_dim, name="patch_embedding", dtype=dtype)
        self.timestep_embedding = TimestepEmbedding(
            hidden_dim, frequency_shift=timestep_frequency_shift, name="timestep_embedding", dtype=dtype
        )
        self.label_embedding = LabelEmbedding(
            num_classes, hidden_dim, dropout_prob=class_dropout_prob, name="label_embedding", dtype=dtype
        )
        self.blocks = [
            DiTBlock(hidden_dim, num_heads, mlp_ratio, mlp_norm_epsilon=mlp_norm_epsilon, name=f"block_{i}", dtype=dtype)
            for i in range(num_layers)
        ]
        self.final_layer = FinalLayer(patch_size * patch_size * out_channels, name="final_layer", dtype=dtype)
        self.unpatchify = Unpatchify(patch_size, out_channels, grid_size=grid, name="unpatchify", dtype=dtype)

        # === Functional model ===
        self.patch_size, self.hidden_dim, self.pos_embed_order = patch_size, hidden_dim, pos_embed_order
        latents = keras.Input(shape=(height, width, in_channels), name="latents")
        timesteps = keras.Input(shape=(), name="timesteps")
        class_labels = keras.Input(shape=(), dtype="int32", name="class_labels")
        inputs = {"latents": latents, "timesteps": timesteps, "class_labels": class_labels}
        outputs = self._forward(inputs, (height, width, in_channels))
        super().__init__(
            inputs=inputs,
            outputs=outputs,
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.image_size = image_size
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma
        self.class_dropout_prob = class_dropout_prob
        self.pos_embed_order = pos_embed_order
        self.timestep_frequency_shift = timestep_frequency_shift
        self.mlp_norm_epsilon = mlp_norm_epsilon
        self.out_channels = out_channels
        self.latent_shape = (height, width, in_channels)

    def _forward(self, inputs, latent_shape):
        """The forward pass at ``latent_shape`` ``(H, W, C)`` (positions computed for it; ``at_shape``)."""
        grid = (latent_shape[0] // self.patch_size, latent_shape[1] // self.patch_size)
        x = self.patch_embedding(inputs["latents"])
        table = sincos_embedding_2d(grid[0], grid[1], self.hidden_dim, order=self.pos_embed_order)
        x = x + ops.cast(table[None], x.dtype)
        c = self.timestep_embedding(inputs["timesteps"]) + self.label_embedding(inputs["class_labels"])
        for block in self.blocks:
            x = block(x, c)
        return unpatchify_at(self.unpatchify, grid)(self.final_layer(x, c))

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size,
            in_channels=self.in_channels,
            patch_size=self.patch_size,
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            num_classes=self.num_classes,
            learn_sigma=self.learn_sigma,
            class_dropout_prob=self.class_dropout_prob,
            pos_embed_order=self.pos_embed_order,
            timestep_frequency_shift=self.timestep_frequency_shift,
            mlp_norm_epsilon=self.mlp_norm_epsilon,
        )
        return config


# === Presets === (data; registered by keras_vdiff.models)
DIT_PRESETS = {
    **{
        f"dit_{size}_patch{patch}": dict(
            class_name="DiT",
            config=dict(image_size=32, in_channels=4, patch_size=patch, num_classes=1000, learn_sigma=True, **dims),
            description=f"DiT-{size[0].upper() if size != 'xlarge' else 'XL'}/{patch} (Peebles & Xie 2023): "
                        f"ImageNet-256 latents 32x32x4, 1000 classes, learned sigma; random init.",
            metadata=dict(paper="arXiv:2212.09748"),
        )
        for size, dims in DIT_SIZES.items()
        for patch in (2, 4, 8)
    },
    "dit_mnist": dict(
        class_name="DiT",
        config=dict(image_size=28, in_channels=1, patch_size=2, hidden_dim=64, num_layers=6, num_heads=4,
                    num_classes=10, learn_sigma=False),
        description="The thesis' MNIST DiT (28x28x1, patch 2, width 64; depth 6 and 4 heads are our choice, the "
                    "thesis gives none); random init.",
        metadata=dict(paper="thesis seed 000, Table 4.1"),
    ),
    "dit_tiny": dict(
        class_name="DiT",
        config=dict(image_size=16, in_channels=3, patch_size=4, hidden_dim=64, num_layers=2, num_heads=4,
                    num_classes=4, learn_sigma=False),
        description="A tiny DiT for tests and CPU experiments (16x16x3, 4 classes).",
    ),
}
