"""A small trainable text encoder for closed-vocabulary captions (MovingMNIST).

It is trained jointly with the diffusion backbone (it is a sub-layer of
``VideoDiffusion``, so ``fit`` updates it), which is how the thesis' models
learn their caption embeddings (notes-000: "text in both the backbone and the
diffusion process").

Strings or token ids? ``VideoDiffusion`` calls ``text_encoder(captions)`` in
two places: in ``compute_loss`` during ``fit`` (inside a compiled train step,
where JAX and PyTorch cannot carry Python strings) and in ``generate`` with the
user's prompts (eager, Python strings). This encoder therefore accepts both:
``__call__`` tokenizes strings with its :class:`WordTokenizer` in numpy and
passes integer ids on; integer ids go straight through. Fit batches carry
token ids (``encoder.tokenizer(captions)``, or
``keras_vdiff.data.pipelines.text_video_batches``), prompts stay strings.
"""

import keras
import keras_hub
from keras import ops

from keras_vdiff.text.word_tokenizer import WordTokenizer, is_text_batch

__all__ = ["SmallTextEncoder", "masked_mean"]


def masked_mean(embeddings, mask):
    """Mean of ``embeddings (B, L, D)`` over the tokens where ``mask (B, L)`` is 1; zeros if none."""
    mask = ops.cast(mask, embeddings.dtype)[..., None]
    total = ops.sum(embeddings * mask, axis=1)
    count = ops.maximum(ops.sum(mask, axis=1), 1.0)
    return total / count


@keras.saving.register_keras_serializable(package="keras_vdiff")
class SmallTextEncoder(keras.layers.Layer):
    """Word embedding + learned positions + a few Transformer encoder layers.

    Returns the ``text_encoder`` contract of ``VideoDiffusion``:
    ``(embeddings (B, L, D), mask (B, L), pooled (B, D))``. ``mask`` is 1.0 on
    word tokens and 0.0 on padding (token id 0); padded positions are also
    excluded from the self-attention and from ``pooled`` (the masked mean of the
    output tokens), and their embeddings are zeroed.

    Args:
        vocabulary: the words of the closed vocabulary (list), a dict
            ``word -> id`` with ``[PAD]`` = 0 and ``[UNK]`` = 1, or a
            :class:`WordTokenizer`. ``SmallTextEncoder.from_texts(captions)``
            builds it from a list of captions.
        sequence_length: tokens per caption (padded / truncated).
        hidden_dim: width ``D`` of the embeddings.
        num_layers: number of ``keras_hub.layers.TransformerEncoder`` layers.
        num_heads: attention heads per layer.
        intermediate_dim: width of the MLP (default ``4 * hidden_dim``).
        dropout: dropout rate inside the Transformer layers.
        lowercase: lower-case captions before tokenizing.

    Call:
        ``encoder(texts)`` with a string / list of strings, or
        ``encoder(token_ids)`` with integer ids ``(B, L)``.

    Example:
        >>> captions = ["The digit 7 is moving left and right", "The digit 2 is moving up and down"]
        >>> encoder = SmallTextEncoder.from_texts(captions, hidden_dim=32)
        >>> embeddings, mask, pooled = encoder(captions)
        >>> embeddings.shape, mask.shape, pooled.shape
        ((2, 8, 32), (2, 8), (2, 32))

    Reference: Transformer encoder (Vaswani et al. 2017); the text branch of the
    thesis' text-to-video models (notes-000, MovingMNIST captions).
    """

    def __init__(
        self,
        vocabulary,
        sequence_length=16,
        hidden_dim=64,
        num_layers=2,
        num_heads=4,
        intermediate_dim=None,
        dropout=0.0,
        lowercase=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(vocabulary, WordTokenizer):
            tokenizer = vocabulary
            vocabulary = tokenizer.get_vocabulary()[2:]
            sequence_length = tokenizer.sequence_length
            lowercase = tokenizer.lowercase
        else:
            tokenizer = WordTokenizer(vocabulary, sequence_length=sequence_length, lowercase=lowercase)
        for name, value, minimum in (("hidden_dim", hidden_dim, 1), ("num_layers", num_layers, 0),
                                     ("num_heads", num_heads, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
        if hidden_dim % num_heads:
            raise ValueError(f"`hidden_dim` ({hidden_dim}) must be divisible by `num_heads` ({num_heads}).")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1), got {dropout!r}.")
        self.tokenizer = tokenizer
        self.vocabulary = tokenizer.get_vocabulary()[2:]
        self.sequence_length = tokenizer.sequence_length
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = float(dropout)
        self.lowercase = tokenizer.lowercase
        self.token_embedding = keras.layers.Embedding(
            tokenizer.vocabulary_size, hidden_dim, name="token_embedding", dtype=self.dtype_policy
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            self.sequence_length, name="position_embedding", dtype=self.dtype_policy
        )
        self.encoder_layers = [
            keras_hub.layers.TransformerEncoder(
                intermediate_dim=intermediate_dim or 4 * hidden_dim,
                num_heads=num_heads,
                dropout=self.dropout,
                activation="gelu",
                normalize_first=True,
                name=f"transformer_{i}",
                dtype=self.dtype_policy,
            )
            for i in range(num_layers)
        ]
        self.output_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="output_norm", dtype="float32")
        # Variables exist from construction on: VideoDiffusion trains through compute_loss, and on JAX
        # a stateless train step only updates variables that existed before fit.
        self.build((None, self.sequence_length))

    @classmethod
    def from_texts(cls, texts, sequence_length=None, **kwargs):
        """An encoder whose vocabulary is every word of ``texts`` (e.g. the training captions)."""
        tokenizer = WordTokenizer.from_texts(texts, sequence_length=sequence_length,
                                             lowercase=kwargs.pop("lowercase", True))
        return cls(tokenizer, **kwargs)

    def __call__(self, inputs, *args, **kwargs):
        if is_text_batch(inputs):
            inputs = self.tokenizer(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def build(self, token_ids_shape):
        shape = (token_ids_shape[0], self.sequence_length)
        self.token_embedding.build(shape)
        features = shape + (self.hidden_dim,)
        self.position_embedding.build(features)
        for layer in self.encoder_layers:
            layer.build(features)
        self.output_norm.build(features)

    def call(self, token_ids, training=False):
        if len(token_ids.shape) != 2 or (token_ids.shape[1] is not None
                                         and token_ids.shape[1] > self.sequence_length):
            raise ValueError(
                f"`token_ids` must have shape (batch, length <= {self.sequence_length}); got {token_ids.shape}."
            )
        token_ids = ops.cast(token_ids, "int32")
        training = bool(training) and self.trainable  # frozen: inference mode (no dropout)
        mask = ops.not_equal(token_ids, WordTokenizer.pad_id)
        x = self.token_embedding(token_ids)
        x = x + self.position_embedding(x)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=mask, training=training)
        x = self.output_norm(ops.cast(x, "float32"))
        mask = ops.cast(mask, "float32")
        x = x * mask[..., None]
        return x, mask, masked_mean(x, mask)

    def compute_output_shape(self, token_ids_shape):
        batch, length = token_ids_shape[0], token_ids_shape[1]
        return (batch, length, self.hidden_dim), (batch, length), (batch, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary=list(self.vocabulary),
            sequence_length=self.sequence_length,
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            lowercase=self.lowercase,
        )
        return config
