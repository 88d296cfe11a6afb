"""The learned initial latent tokens and latent self-conditioning (RIN, FiT)."""

import keras
from keras import ops

from keras_vdiff.layers.core import Dense
from keras_vdiff.layers.normalization import layer_norm, normed
from keras_vdiff.validation import check_int


@keras.saving.register_keras_serializable(package="keras_vdiff")
class LearnedLatents(keras.layers.Layer):
    """The learned initial latent tokens, broadcast over the batch (RIN / FiT).

    Args:
        num_latents: number of latent tokens (all groups together).
        latent_dim: width of each latent.
        initializer_stddev: standard deviation of the normal initialisation.

    Call:
        ``reference (B, ...)`` (any tensor with the batch size) -> ``(B, num_latents, latent_dim)``.

    Example:
        >>> latents = LearnedLatents(32, 64)(keras.ops.zeros((2, 5)))
        >>> latents.shape
        (2, 32, 64)
    """

    def __init__(self, num_latents, latent_dim, initializer_stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        check_int(num_latents, "num_latents")
        check_int(latent_dim, "latent_dim")
        self.num_latents = num_latents
        self.latent_dim = latent_dim
        self.initializer_stddev = initializer_stddev

    def build(self, reference_shape=None):
        self.latents = self.add_weight(
            name="latents",
            shape=(self.num_latents, self.latent_dim),
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_stddev),
        )
        self.built = True

    def call(self, reference):
        batch = ops.shape(reference)[0]
        latents = ops.cast(self.latents, self.compute_dtype)[None]
        return ops.broadcast_to(latents, (batch, self.num_latents, self.latent_dim))

    def compute_output_shape(self, reference_shape):
        return (reference_shape[0], self.num_latents, self.latent_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_latents=self.num_latents, latent_dim=self.latent_dim, initializer_stddev=self.initializer_stddev
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class LatentSelfConditioning(keras.layers.Layer):
    """Latent self-conditioning: ``latents + LayerNorm(Dense(previous_latents))`` (RIN, FiT).

    The previous call's output latents (from the previous denoising step, or a
    first stop-gradient pass in training) are projected and normalised, then
    added to the learned initial latents. The projection has no bias and the
    norm no offset, so an all-zero ``previous_latents`` ("no self-conditioning",
    the first sampling step and the untouched 10% of training) adds exactly
    zero, at initialisation and after training.

    Args:
        latent_dim: width of the latents.
        epsilon: LayerNorm epsilon.

    Call:
        ``latents (B, N, Dl)``, ``previous_latents (B, N, Dl)`` -> ``(B, N, Dl)``.

    Example:
        >>> sc = LatentSelfConditioning(64)
        >>> sc(keras.ops.ones((2, 8, 64)), keras.ops.zeros((2, 8, 64))).shape
        (2, 8, 64)
    """

    def __init__(self, latent_dim, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        check_int(latent_dim, "latent_dim")
        self.latent_dim = latent_dim
        self.epsilon = epsilon
        self.projection = Dense(latent_dim, use_bias=False, name="projection", dtype=self.dtype_policy)
        self.norm = layer_norm("norm", affine=True, center=False, epsilon=epsilon)

    def build(self, latents_shape, previous_latents_shape=None):
        self.projection.build(previous_latents_shape or latents_shape)
        self.norm.build(tuple(latents_shape[:-1]) + (self.latent_dim,))
        self.built = True

    def call(self, latents, previous_latents):
        return latents + normed(self.norm, self.projection(previous_latents))

    def compute_output_shape(self, latents_shape, previous_latents_shape=None):
        return tuple(latents_shape)

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, epsilon=self.epsilon)
        return config
