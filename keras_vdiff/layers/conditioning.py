"""The backbone side of the conditioning contract: names, input spec and the condition embedding.

Every keras_vdiff backbone takes one input dict::

    latents        (B, [F,] H, W, C)   the noisy latents
    timesteps      (B,)                 diffusion time (0 .. num_timesteps - 1, or flow time x 1000)
    conditioning=None:    nothing else
    conditioning="class": class_labels (B,) int32; label ``num_classes`` is the null class (guidance)
    conditioning="text":  text_embeddings (B, L, text_dim), text_mask (B, L) (1 = token, 0 = padding),
                          pooled_text (B, text_dim); an all-zero ``text_mask`` row is the null prompt

plus, for some families, ``previous_latents`` (latent self-conditioning) or extra
input channels. The task model (``VideoDiffusion``) fills this dict; the names
here are the contract between the two, so both import them from this module.
``ConditionEmbedding`` turns the condition into the adaLN vector
``c = t_emb (+ label_emb | + pooled_text_emb)`` shared by the transformer
backbones; the latent-token family extends it with condition tokens
(``keras_vdiff.models.latent_tokens.ConditionTokens``).
"""

import keras

from keras_vdiff.layers.embeddings import LabelEmbedding, PooledTextEmbedding, TimestepEmbedding
from keras_vdiff.validation import check_int

CONDITIONINGS = (None, "class", "text")
TEXT_KEYS = ("text_embeddings", "text_mask", "pooled_text")
CLASS_KEYS = ("class_labels",)
CONDITION_KEYS = {None: (), "class": CLASS_KEYS, "text": TEXT_KEYS}


def check_conditioning(conditioning, num_classes=None, text_dim=None):
    """Validate a backbone's ``conditioning`` with its ``num_classes`` / ``text_dim``."""
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"`conditioning` must be one of {CONDITIONINGS}, got {conditioning!r}.")
    for needed, name, value in (("class", "num_classes", num_classes), ("text", "text_dim", text_dim)):
        if conditioning == needed:
            try:
                check_int(value, name)
            except ValueError:
                raise ValueError(
                    f"`conditioning={needed!r}` needs a positive integer `{name}`, got {value!r}."
                ) from None


def condition_inputs(conditioning, text_dim=None):
    """The ``keras.Input`` s of a backbone's condition, keyed by the contract's names.

    ``"class"``: ``class_labels (B,)`` int32. ``"text"``: ``text_embeddings (B, L, text_dim)``,
    ``text_mask (B, L)`` (1 = token, 0 = padding), ``pooled_text (B, text_dim)``; ``L`` is free.
    """
    if conditioning == "class":
        return {"class_labels": keras.Input(shape=(), dtype="int32", name="class_labels")}
    if conditioning == "text":
        return {
            "text_embeddings": keras.Input(shape=(None, text_dim), name="text_embeddings"),
            "text_mask": keras.Input(shape=(None,), name="text_mask"),
            "pooled_text": keras.Input(shape=(text_dim,), name="pooled_text"),
        }
    return {}


def backbone_inputs(latent_shape, conditioning=None, text_dim=None):
    """The whole input dict of a backbone: ``latents``, ``timesteps`` and the condition's inputs.

    Args:
        latent_shape: per-example latent shape, ``(F, H, W, C)`` or ``(H, W, C)``.
        conditioning: ``None``, ``"class"`` or ``"text"``.
        text_dim: width of the text inputs (``"text"``).
    """
    return {
        "latents": keras.Input(shape=tuple(latent_shape), name="latents"),
        "timesteps": keras.Input(shape=(), name="timesteps"),
        **condition_inputs(conditioning, text_dim),
    }


@keras.saving.register_keras_serializable(package="keras_vdiff")
class ConditionEmbedding(keras.layers.Layer):
    """The adaLN condition vector of a backbone: ``c = t_emb (+ y_emb | + pooled_text_emb)``.

    - unconditional: ``c = TimestepEmbedding(t)``;
    - ``"class"``: ``+ LabelEmbedding(y)`` (label ``num_classes`` is the null class; DiT / Latte);
    - ``"text"``: ``+ PooledTextEmbedding(pooled_text, text_mask)`` (GenTron, thesis:
      ``c = t_emb + y_pool``); an all-zero ``text_mask`` row selects the learned null embedding.

    Args:
        hidden_dim: width of ``c``.
        conditioning: ``None``, ``"class"`` or ``"text"``.
        num_classes: number of classes (class conditioning).
        class_dropout_prob: in-model label dropping during training (keep 0 when the
            task model drops conditions itself).

    Call:
        ``timesteps (B,)``, ``class_labels (B,)``, ``pooled_text (B, Dt)``, ``text_mask (B, L)`` -> ``(B, D)``.

    Example:
        >>> emb = ConditionEmbedding(32, conditioning="class", num_classes=10)
        >>> emb(keras.ops.array([1.0, 500.0]), class_labels=keras.ops.array([3, 10])).shape
        (2, 32)
    """

    def __init__(self, hidden_dim, conditioning=None, num_classes=None, class_dropout_prob=0.0, **kwargs):
        super().__init__(**kwargs)
        check_int(hidden_dim, "hidden_dim")
        check_conditioning(conditioning, num_classes, text_dim=1)
        self.hidden_dim = hidden_dim
        self.conditioning = conditioning
        self.num_classes = num_classes
        self.class_dropout_prob = class_dropout_prob
        self.timestep_embedding = TimestepEmbedding(hidden_dim, name="timestep_embedding", dtype=self.dtype_policy)
        if conditioning == "class":
            self.label_embedding = LabelEmbedding(
                num_classes, hidden_dim, dropout_prob=class_dropout_prob, name="label_embedding",
                dtype=self.dtype_policy,
            )
        elif conditioning == "text":
            self._create_text_layers()
            self.pooled_text_embedding = PooledTextEmbedding(
                hidden_dim, name="pooled_text_embedding", dtype=self.dtype_policy
            )

    def _create_text_layers(self):
        """Hook for subclasses: text layers created before the pooled-text embedding (the weights' order)."""

    def build(self, timesteps_shape, class_labels_shape=None, pooled_text_shape=None, text_mask_shape=None):
        self.timestep_embedding.build(timesteps_shape)
        if self.conditioning == "class":
            self.label_embedding.build(class_labels_shape or (None,))
        elif self.conditioning == "text":
            if pooled_text_shape is None:
                raise ValueError(f"A text-conditioned {type(self).__name__} is built from the `pooled_text` shape.")
            self.pooled_text_embedding.build(pooled_text_shape, text_mask_shape)
        self.built = True

    def call(self, timesteps, class_labels=None, pooled_text=None, text_mask=None, training=None):
        c = self.timestep_embedding(timesteps)
        if self.conditioning == "class":
            c = c + self.label_embedding(class_labels, training=training)
        elif self.conditioning == "text":
            c = c + self.pooled_text_embedding(pooled_text, text_mask)
        return c

    def compute_output_shape(self, timesteps_shape, *args, **kwargs):
        return (timesteps_shape[0], self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            conditioning=self.conditioning,
            num_classes=self.num_classes,
            class_dropout_prob=self.class_dropout_prob,
        )
        return config

    def embed(self, inputs, training=None):
        """``c`` from a backbone's input dict (uses only the keys the conditioning needs)."""
        if self.conditioning == "class":
            return self(inputs["timesteps"], class_labels=inputs["class_labels"], training=training)
        if self.conditioning == "text":
            return self(inputs["timesteps"], pooled_text=inputs["pooled_text"], text_mask=inputs["text_mask"])
        return self(inputs["timesteps"])
