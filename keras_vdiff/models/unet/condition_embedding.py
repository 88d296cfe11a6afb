"""The U-Net's conditioning vector (``UNetConditionEmbedding``)."""

import keras
from keras import ops

from keras_vdiff.layers.embeddings import LabelEmbedding, PooledTextEmbedding, TimestepEmbedding
from keras_vdiff.validation import check_int


@keras.saving.register_keras_serializable(package="keras_vdiff")
class UNetConditionEmbedding(keras.layers.Layer):
    """The U-Net's conditioning vector: ``TimestepEmbedding(t) (+ label | + pooled text) (+ fps) (+ aug_level)``.

    The sum is what every ``ResBlock`` broadcast-adds (or turns into scale and
    shift) over its feature maps (DDPM; the MNIST lab's broadcast-add conditioning).

    Args:
        hidden_dim: embedding width.
        frequency_dim: sinusoid features of the timestep (even).
        num_classes: class count for class conditioning (label ``num_classes``
            is the null class), or None.
        text_dim: width of ``pooled_text`` for text conditioning (a
            ``PooledTextEmbedding``, learned null for an all-zero ``text_mask``), or None.
        fps_conditioning: add an embedding of the frame rate (Make-A-Video); its
            last layer starts at zero, so a model without fps training ignores it.
        aug_level_conditioning: add an embedding of the noise-conditioning augmentation level of a
            super-resolution stage's low-resolution input (Ho et al. 2021, CDM; Imagen Video): ``aug_level``
            in [0, 1] is embedded like a timestep (times 1000), its last layer also starting at zero.

    The width is ``hidden_dim`` (``4 * dim`` in the U-Nets).

    Call: ``timesteps (B,)``, ``class_labels (B,)`` int or None, ``fps (B,)`` or None,
    ``pooled_text (B, text_dim)`` and ``text_mask (B, L)`` or None, ``aug_level (B,)`` or None.

    Example:
        >>> emb = UNetConditionEmbedding(64, num_classes=10)
        >>> emb(keras.ops.array([1.0, 5.0]), keras.ops.array([3, 10])).shape
        (2, 64)
    """

    def __init__(self, hidden_dim, frequency_dim=64, num_classes=None, fps_conditioning=False, text_dim=None,
                 aug_level_conditioning=False, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = check_int(hidden_dim, "hidden_dim")
        self.frequency_dim = check_int(frequency_dim, "frequency_dim")
        self.num_classes = num_classes
        self.text_dim = None if text_dim is None else check_int(text_dim, "text_dim")
        if num_classes is not None and text_dim is not None:
            raise ValueError("Pass `num_classes` (class conditioning) or `text_dim` (text conditioning), not both.")
        self.fps_conditioning = fps_conditioning
        self.aug_level_conditioning = bool(aug_level_conditioning)
        dtype = self.dtype_policy
        self.time_embedding = TimestepEmbedding(hidden_dim, frequency_dim=frequency_dim, name="time", dtype=dtype)
        self.label_embedding = None
        if num_classes is not None:
            self.label_embedding = LabelEmbedding(num_classes, hidden_dim, dropout_prob=0.0, name="label", dtype=dtype)
        self.text_embedding = None
        if text_dim is not None:
            self.text_embedding = PooledTextEmbedding(hidden_dim, name="pooled_text", dtype=dtype)
        self.fps_embedding = self._zero_started_embedding("fps") if fps_conditioning else None
        self.aug_level_embedding = self._zero_started_embedding("aug_level") if aug_level_conditioning else None

    def _zero_started_embedding(self, name):
        """A scalar's ``TimestepEmbedding`` whose last layer starts at zero: it adds nothing until trained."""
        embedding = TimestepEmbedding(self.hidden_dim, frequency_dim=self.frequency_dim, name=name,
                                      dtype=self.dtype_policy)
        embedding.dense_2.kernel_initializer = keras.initializers.Zeros()
        return embedding

    def build(self, timesteps_shape, class_labels_shape=None, fps_shape=None, pooled_text_shape=None,
              text_mask_shape=None, aug_level_shape=None):
        self.time_embedding.build(timesteps_shape)
        if self.label_embedding is not None:
            self.label_embedding.build(timesteps_shape)
        if self.text_embedding is not None:
            self.text_embedding.build((None, self.text_dim), text_mask_shape)
        for embedding in (self.fps_embedding, self.aug_level_embedding):
            if embedding is not None:
                embedding.build(timesteps_shape)
        self.built = True

    def call(self, timesteps, class_labels=None, fps=None, pooled_text=None, text_mask=None, aug_level=None):
        emb = self.time_embedding(timesteps)
        if self.label_embedding is not None:
            if class_labels is None:
                raise ValueError("A class-conditional U-Net needs `class_labels`.")
            emb = emb + self.label_embedding(class_labels)
        if self.text_embedding is not None:
            if pooled_text is None:
                raise ValueError("A text-conditional U-Net needs `pooled_text`.")
            emb = emb + self.text_embedding(pooled_text, text_mask)
        if self.fps_embedding is not None and fps is not None:
            emb = emb + self.fps_embedding(fps)
        if self.aug_level_embedding is not None and aug_level is not None:
            emb = emb + self.aug_level_embedding(ops.cast(aug_level, emb.dtype) * 1000.0)
        return emb

    def load_image_weights(self, source):
        """Copy the timestep and label embeddings of an image U-Net (the fps embedding stays at zero)."""
        self.time_embedding.set_weights(source.time_embedding.get_weights())
        if (self.label_embedding is None) != (source.label_embedding is None):
            raise ValueError("Cannot load the condition embedding: class conditioning differs.")
        if self.label_embedding is not None:
            self.label_embedding.set_weights(source.label_embedding.get_weights())
        if (self.text_embedding is None) != (source.text_embedding is None):
            raise ValueError("Cannot load the condition embedding: text conditioning differs.")
        if self.text_embedding is not None:
            self.text_embedding.set_weights(source.text_embedding.get_weights())

    def compute_output_shape(self, timesteps_shape, class_labels_shape=None, fps_shape=None, pooled_text_shape=None,
                             text_mask_shape=None, aug_level_shape=None):
        return (timesteps_shape[0], self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            frequency_dim=self.frequency_dim,
            num_classes=self.num_classes,
            fps_conditioning=self.fps_conditioning,
            text_dim=self.text_dim,
            aug_level_conditioning=self.aug_level_conditioning,
        )
        return config
