"""T5's encoder (Raffel et al. 2020) and its tokenizer, with transformers' ``T5EncoderModel`` numerics.

The text encoder of PixArt-alpha, Latte, CogVideoX and SD3 is the encoder half
of T5 v1.1 XXL. :class:`T5Encoder` is that stack written in ``keras.ops``:

- token embedding (no scaling, no absolute positions);
- per block: RMS norm -> self-attention (no bias, **no** ``1/sqrt(d)`` scaling
  of the logits, a learned relative-position bias added to them) -> residual;
  RMS norm -> feed-forward (``act(x W_gate) * (x W_up)`` when gated, T5 v1.1's
  GEGLU with the tanh GELU; ``act(x W_up)`` otherwise, T5's ReLU) -> residual;
- a final RMS norm. No dropout: the encoder is for pretrained, frozen use.

The relative-position bias (a ``(buckets, heads)`` table looked up by the
bucket of ``key_position - query_position``) belongs to the first block and is
shared by all blocks, as in T5. UMT5 (Wan) gives every block its own table:
:class:`T5Attention` owns its table when built with ``relative_attention_buckets``,
so :class:`UMT5Encoder` is this encoder with ``per_layer_position_bias = True``
(every block builds one, each block adds its own).

RMS norms run in float32 (``dtype="float32"`` layers, the result cast back), so
``dtype="bfloat16"`` keeps T5's float32 variance as transformers does; the
attention softmax runs in float32 too. float16 is refused: T5 v1.1's
activations overflow it (transformers needs clamping for it).

:class:`T5Tokenizer` turns prompts into the ``{"token_ids", "padding_mask"}``
the encoder reads, as transformers' ``T5Tokenizer(..., padding="max_length",
truncation=True, add_special_tokens=True)`` does: sentencepiece pieces (or a
``tokenizer.json`` through the ``tokenizers`` package), special tokens written
in the text kept whole, the content cut to ``sequence_length - 1``, ``</s>``
appended, ``<pad>`` after it. ``keras_vdiff.convert.t5.tokenizer_from_folder``
builds one from a pipeline's ``tokenizer/`` folder.

Example:
    >>> from keras_vdiff.convert.t5 import tokenizer_from_folder
    >>> encoder = kv.convert.from_diffusers("Latte-1/text_encoder", dtype="bfloat16")
    >>> tokenizer = tokenizer_from_folder("Latte-1/tokenizer", sequence_length=120)
    >>> embeddings, mask, pooled = encoder(tokenizer(["a dog running on the beach"]))
    >>> embeddings.shape, mask.shape, pooled.shape
    ((1, 120, 4096), (1, 120), (1, 4096))
"""

import math
import os
import re

import keras
import numpy as np
from keras import ops

from keras_vdiff.layers.normalization import normed
from keras_vdiff.presets.pipeline_format import TOKENIZER_ASSETS_DIR
from keras_vdiff.text.small_text_encoder import masked_mean
from keras_vdiff.text.word_tokenizer import is_text_batch

__all__ = ["T5Encoder", "UMT5Encoder", "T5Tokenizer", "T5Attention", "T5EncoderBlock", "relative_position_buckets"]

# activation name -> function; "gelu_tanh" is transformers' "gelu_new" / "gelu_pytorch_tanh" (T5 v1.1).
ACTIVATIONS = {
    "relu": keras.activations.relu,
    "gelu": lambda x: keras.activations.gelu(x, approximate=False),
    "gelu_tanh": lambda x: keras.activations.gelu(x, approximate=True),
    "silu": keras.activations.silu,
}
SUPPORTED_DTYPES = ("float32", "bfloat16")
MASKED = -1e9  # added to the logits of padded keys (float32; exp underflows to exactly 0)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def relative_position_buckets(num_buckets, max_distance, bidirectional=True):
    """The bucket of every relative position ``-max_distance..max_distance`` (int32 numpy, index ``r + max_distance``).

    T5's bucketing (Mesh TensorFlow's): half the buckets for each direction when
    bidirectional; within one, distances below ``num_buckets // 2`` get a
    bucket each, longer ones share logarithmically wider buckets up to
    ``max_distance``, and every distance beyond it falls in the last bucket, so
    the table covers any sequence length once positions are clipped to
    ``±max_distance``. Computed in float32 numpy like transformers' float32 torch
    (the tests compare the two for every distance).
    """
    relative = np.arange(-max_distance, max_distance + 1, dtype=np.int64)
    buckets = np.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).astype(np.int64) * num_buckets
        distance = np.abs(relative)
    else:
        distance = -np.minimum(relative, 0)
    exact = num_buckets // 2
    scaled = np.maximum(distance, 1).astype(np.float32) / np.float32(exact)
    large = exact + (np.log(scaled) / np.float32(math.log(max_distance / exact))
                     * np.float32(num_buckets - exact)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    buckets += np.where(distance < exact, distance, large)
    return buckets.astype(np.int32)


INITIALIZERS = ("t5", "zeros")


def _initializer(kind, stddev):
    """transformers' ``N(0, stddev^2)`` (``kind="t5"``), or zeros for weights about to be overwritten (fast)."""
    if kind == "zeros":
        return "zeros"
    return keras.initializers.RandomNormal(mean=0.0, stddev=float(stddev))


class T5Attention(keras.layers.Layer):
    """T5 self-attention: bias-free projections, unscaled logits plus an additive bias (position + padding).

    Args:
        num_heads: heads.
        head_dim: width of each head (T5's ``d_kv``).
        relative_attention_buckets: build this layer's own relative-position
            table ``(buckets, num_heads)`` (T5: the first block only); ``None``: none.
        relative_attention_max_distance: the distance beyond which positions share a bucket.
        initializer: ``"t5"`` (transformers' initialisation) or ``"zeros"``.

    Call:
        ``x (B, L, D)``, ``bias`` float32 broadcastable to ``(B, heads, L, L)`` -> ``(B, L, D)``.
    """

    def __init__(self, num_heads, head_dim, relative_attention_buckets=None, relative_attention_max_distance=128,
                 initializer="t5", **kwargs):
        super().__init__(**kwargs)
        self.initializer = initializer
        self.num_heads = _positive_int("num_heads", num_heads)
        self.head_dim = _positive_int("head_dim", head_dim)
        self.relative_attention_buckets = relative_attention_buckets
        self.relative_attention_max_distance = int(relative_attention_max_distance)
        self.inner_dim = self.num_heads * self.head_dim
        self._bucket_table = None
        if relative_attention_buckets is not None:
            buckets = _positive_int("relative_attention_buckets", relative_attention_buckets)
            if buckets < 4:
                raise ValueError(f"`relative_attention_buckets` must be >= 4, got {buckets}.")
            if self.relative_attention_max_distance <= buckets // 4:  # the exact buckets of one direction
                raise ValueError(
                    f"`relative_attention_max_distance` ({self.relative_attention_max_distance}) must exceed "
                    f"relative_attention_buckets // 4 ({buckets // 4}), the distances that get a bucket each."
                )
            self._bucket_table = relative_position_buckets(buckets, self.relative_attention_max_distance)

    def build(self, input_shape):
        width = input_shape[-1]

        def dense(units, stddev, name):
            return keras.layers.Dense(units, use_bias=False, kernel_initializer=_initializer(self.initializer, stddev),
                                      name=name, dtype=self.dtype_policy)

        # transformers' initialisation (queries smaller: T5 does not scale the logits).
        self.query = dense(self.inner_dim, (width * self.head_dim) ** -0.5, "query")
        self.key = dense(self.inner_dim, width ** -0.5, "key")
        self.value = dense(self.inner_dim, width ** -0.5, "value")
        self.output_projection = dense(width, self.inner_dim ** -0.5, "output_projection")
        for layer in (self.query, self.key, self.value):
            layer.build(input_shape)
        self.output_projection.build(tuple(input_shape[:-1]) + (self.inner_dim,))
        if self._bucket_table is not None:
            self.relative_attention_bias = self.add_weight(
                name="relative_attention_bias", shape=(self.relative_attention_buckets, self.num_heads),
                initializer=_initializer(self.initializer, width ** -0.5),
            )
        self.built = True

    @property
    def has_relative_attention_bias(self):
        return self._bucket_table is not None

    def position_bias(self, length):
        """The learned bias ``(1, heads, length, length)`` float32 of this layer's relative-position table."""
        positions = ops.arange(length, dtype="int32")
        relative = positions[None, :] - positions[:, None]  # key - query
        limit = self.relative_attention_max_distance
        index = ops.clip(relative, -limit, limit) + limit
        buckets = ops.take(ops.convert_to_tensor(self._bucket_table), index, axis=0)  # (L, L)
        bias = ops.take(ops.cast(self.relative_attention_bias, "float32"), buckets, axis=0)  # (L, L, heads)
        return ops.transpose(bias, (2, 0, 1))[None]

    def _heads(self, x):
        return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], self.num_heads, self.head_dim))

    def call(self, x, bias):
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        # Keras casts `bias` to the compute dtype on the way in (bfloat16: what transformers' bias is in).
        logits = ops.cast(ops.einsum("bqhd,bkhd->bhqk", q, k), "float32") + ops.cast(bias, "float32")
        weights = ops.cast(ops.softmax(logits, axis=-1), v.dtype)
        out = ops.einsum("bhqk,bkhd->bqhd", weights, v)
        out = ops.reshape(out, (ops.shape(x)[0], ops.shape(x)[1], self.inner_dim))
        return self.output_projection(out)

    def compute_output_shape(self, x_shape, bias_shape=None):
        return tuple(x_shape)


class T5EncoderBlock(keras.layers.Layer):
    """One T5 encoder block: pre-norm self-attention and pre-norm feed-forward, each residual.

    Args:
        num_heads, head_dim: the attention's.
        intermediate_dim: feed-forward width (T5's ``d_ff``).
        activation: ``"gelu_tanh"`` (T5 v1.1), ``"gelu"``, ``"relu"`` (T5) or ``"silu"``.
        gated: ``act(x W_gate) * (x W_up)`` (T5 v1.1) instead of ``act(x W_up)``.
        layer_norm_epsilon: RMS norm epsilon.
        relative_attention_buckets: give this block's attention its own position table.
        relative_attention_max_distance, initializer: see :class:`T5Attention`.
    """

    def __init__(self, num_heads, head_dim, intermediate_dim, activation="gelu_tanh", gated=True,
                 layer_norm_epsilon=1e-6, relative_attention_buckets=None, relative_attention_max_distance=128,
                 initializer="t5", **kwargs):
        super().__init__(**kwargs)
        self.initializer = initializer
        self.intermediate_dim = _positive_int("intermediate_dim", intermediate_dim)
        self.activation = activation
        self.gated = bool(gated)
        self.attention = T5Attention(num_heads, head_dim, relative_attention_buckets, relative_attention_max_distance,
                                     initializer=initializer, name="self_attention", dtype=self.dtype_policy)
        norm = dict(epsilon=float(layer_norm_epsilon), dtype="float32")
        self.attention_norm = keras.layers.RMSNormalization(name="attention_norm", **norm)
        self.feed_forward_norm = keras.layers.RMSNormalization(name="feed_forward_norm", **norm)

    def build(self, input_shape):
        width = input_shape[-1]

        def dense(units, stddev, name):
            return keras.layers.Dense(units, use_bias=False, kernel_initializer=_initializer(self.initializer, stddev),
                                      name=name, dtype=self.dtype_policy)

        hidden_shape = tuple(input_shape[:-1]) + (self.intermediate_dim,)
        if self.gated:
            self.gate_projection = dense(self.intermediate_dim, width ** -0.5, "gate_projection")
            self.gate_projection.build(input_shape)
        self.up_projection = dense(self.intermediate_dim, width ** -0.5, "up_projection")
        self.down_projection = dense(width, self.intermediate_dim ** -0.5, "down_projection")
        self.up_projection.build(input_shape)
        self.down_projection.build(hidden_shape)
        self.attention.build(input_shape)
        self.attention_norm.build(input_shape)
        self.feed_forward_norm.build(input_shape)
        self.built = True

    def call(self, x, bias):
        x = x + self.attention(normed(self.attention_norm, x), bias)
        h = normed(self.feed_forward_norm, x)
        act = ACTIVATIONS[self.activation]
        h = act(self.gate_projection(h)) * self.up_projection(h) if self.gated else act(self.up_projection(h))
        return x + self.down_projection(h)

    def compute_output_shape(self, x_shape, bias_shape=None):
        return tuple(x_shape)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class T5Encoder(keras.layers.Layer):
    """The T5 encoder stack as a ``VideoDiffusion`` text encoder (transformers' ``T5EncoderModel``).

    Args:
        vocabulary_size: rows of the token embedding (T5 v1.1: 32128).
        hidden_dim: model width (``d_model``; XXL: 4096).
        num_layers: blocks (XXL: 24).
        num_heads: attention heads (XXL: 64).
        head_dim: width of each head (``d_kv``; 64).
        intermediate_dim: feed-forward width (``d_ff``; XXL: 10240).
        activation: ``"gelu_tanh"`` (default; T5 v1.1's ``gelu_new``), ``"gelu"``, ``"relu"`` (T5 1.0), ``"silu"``.
        gated: gated feed-forward (T5 v1.1: True; T5 1.0: False).
        relative_attention_buckets: relative-position buckets (32).
        relative_attention_max_distance: distance from which positions share the last bucket (128).
        layer_norm_epsilon: RMS norm epsilon (1e-6).
        pad_token_id: padding id; token ids given without a mask are masked where they equal it.
        zero_padding: zero the embeddings of padded positions (the text-encoder contract; default).
            ``False`` returns transformers' ``last_hidden_state`` everywhere (padded
            positions attend to the valid ones and are not zero), for pipelines that
            feed those rows on as diffusers does (Latte's unmasked negative prompt).
        attend_to_padding: treat no position as padding: every token attends to the
            padded ones too and the mask returned is all ones (transformers' encoder
            called without an attention mask, as CogVideoX's pipeline calls it).
        tokenizer: optional :class:`T5Tokenizer` (or any callable returning token ids) for
            string inputs; not part of the config (a task's preprocessor keeps it).
        initializer: ``"t5"`` (default: transformers' initialisation) or ``"zeros"``
            (fast, for weights that are assigned next, as the converter does); not part of the config.
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"mixed_bfloat16"``.

    Call:
        strings (with a tokenizer), token ids ``(B, L)`` or ``{"token_ids", "padding_mask"}``
        (what :class:`T5Tokenizer` returns) -> ``(embeddings (B, L, hidden_dim) float32,
        mask (B, L) float32 0/1, pooled (B, hidden_dim) float32)``; pooled is the masked
        mean of the embeddings (T5 has no class token).

    Example:
        >>> encoder = T5Encoder(vocabulary_size=100, hidden_dim=32, num_layers=2, num_heads=4, head_dim=8,
        ...                     intermediate_dim=64)
        >>> embeddings, mask, pooled = encoder({"token_ids": np.array([[5, 6, 1, 0]]),
        ...                                     "padding_mask": np.array([[1, 1, 1, 0]])})
        >>> embeddings.shape, pooled.shape
        ((1, 4, 32), (1, 32))

    Reference: T5 (Raffel et al. 2020), T5 v1.1 (GEGLU, Shazeer 2020); the text encoder of
    PixArt-alpha, Latte and CogVideoX.
    """

    # One relative-position table per block (UMT5) instead of block 0's shared by all (T5).
    per_layer_position_bias = False

    def __init__(self, vocabulary_size, hidden_dim, num_layers, num_heads, head_dim, intermediate_dim,
                 activation="gelu_tanh", gated=True, relative_attention_buckets=32,
                 relative_attention_max_distance=128, layer_norm_epsilon=1e-6, pad_token_id=0, zero_padding=True,
                 tokenizer=None, initializer="t5", attend_to_padding=False, **kwargs):
        super().__init__(**kwargs)
        for name in ("variable_dtype", "compute_dtype"):
            if getattr(self.dtype_policy, name) not in SUPPORTED_DTYPES:
                raise ValueError(
                    f"`dtype`={self.dtype_policy.name!r} is not supported by T5Encoder: use one of "
                    "'float32', 'bfloat16', 'mixed_bfloat16' (T5 v1.1 activations overflow float16)."
                )
        if initializer not in INITIALIZERS:
            raise ValueError(f"`initializer`={initializer!r} is not supported; valid: {list(INITIALIZERS)}.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"`activation`={activation!r} is not supported; valid: {sorted(ACTIVATIONS)}.")
        if not float(layer_norm_epsilon) > 0:
            raise ValueError(f"`layer_norm_epsilon` must be positive, got {layer_norm_epsilon!r}.")
        self.vocabulary_size = _positive_int("vocabulary_size", vocabulary_size)
        self.hidden_dim = _positive_int("hidden_dim", hidden_dim)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.num_heads = _positive_int("num_heads", num_heads)
        self.head_dim = _positive_int("head_dim", head_dim)
        self.intermediate_dim = _positive_int("intermediate_dim", intermediate_dim)
        self.relative_attention_buckets = _positive_int("relative_attention_buckets", relative_attention_buckets)
        self.relative_attention_max_distance = _positive_int("relative_attention_max_distance",
                                                             relative_attention_max_distance)
        self.activation = activation
        self.gated = bool(gated)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.pad_token_id = int(pad_token_id)
        self.zero_padding = bool(zero_padding)
        self.attend_to_padding = bool(attend_to_padding)
        self.tokenizer = tokenizer
        self.token_embedding = keras.layers.Embedding(self.vocabulary_size, self.hidden_dim,
                                                      embeddings_initializer=_initializer(initializer, 1.0),
                                                      name="token_embedding",
                                                      dtype=self.dtype_policy)
        self.blocks = [
            T5EncoderBlock(
                self.num_heads, self.head_dim, self.intermediate_dim, activation=activation, gated=self.gated,
                layer_norm_epsilon=self.layer_norm_epsilon,
                relative_attention_buckets=(self.relative_attention_buckets  # T5: block 0's, shared by all
                                            if i == 0 or self.per_layer_position_bias else None),
                relative_attention_max_distance=self.relative_attention_max_distance, initializer=initializer,
                name=f"block_{i}", dtype=self.dtype_policy,
            )
            for i in range(self.num_layers)
        ]
        self.final_norm = keras.layers.RMSNormalization(epsilon=self.layer_norm_epsilon, name="final_norm",
                                                        dtype="float32")
        # Variables exist from construction on (converters assign them; JAX's stateless train step needs them).
        self.build((None, None))

    def __call__(self, inputs, *args, **kwargs):
        if is_text_batch(inputs):
            if self.tokenizer is None:
                raise ValueError(
                    "T5Encoder got strings but has no `tokenizer`; pass `tokenizer=` (e.g. "
                    "keras_vdiff.convert.t5.tokenizer_from_folder(...)) or give token ids."
                )
            inputs = self.tokenizer(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def build(self, inputs_shape=None):
        self.token_embedding.build((None, None))
        features = (None, None, self.hidden_dim)
        for block in self.blocks:
            block.build(features)
        self.final_norm.build(features)
        self.built = True

    def _split_inputs(self, inputs):
        if isinstance(inputs, dict):
            if "token_ids" not in inputs:
                raise ValueError(
                    f"A dict input must have `token_ids` (and optionally `padding_mask`); got {sorted(inputs)}."
                )
            token_ids, mask = inputs["token_ids"], inputs.get("padding_mask")
        else:
            token_ids, mask = inputs, None
        token_ids = ops.cast(token_ids, "int32")
        if len(token_ids.shape) != 2:
            raise ValueError(f"`token_ids` must have shape (batch, length); got {token_ids.shape}.")
        if mask is None:
            mask = ops.not_equal(token_ids, self.pad_token_id)
        return token_ids, ops.cast(mask, "bool")

    def call(self, inputs, training=False):
        token_ids, mask = self._split_inputs(inputs)
        if self.attend_to_padding:
            mask = ops.ones_like(mask)
        x = self.token_embedding(token_ids)
        # Padded keys get a large negative logit; padded queries still attend to the valid keys.
        padding_bias = ops.where(mask, 0.0, MASKED)[:, None, None, :]
        bias = None
        for block in self.blocks:
            if block.attention.has_relative_attention_bias:
                bias = block.attention.position_bias(ops.shape(token_ids)[1]) + padding_bias
            x = block(x, bias)
        embeddings = ops.cast(normed(self.final_norm, x), "float32")
        mask = ops.cast(mask, "float32")
        if self.zero_padding:
            embeddings = embeddings * mask[..., None]
        return embeddings, mask, masked_mean(embeddings, mask)

    def compute_output_shape(self, inputs_shape):
        shape = inputs_shape["token_ids"] if isinstance(inputs_shape, dict) else inputs_shape
        batch, length = shape[0], shape[1]
        return (batch, length, self.hidden_dim), (batch, length), (batch, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            head_dim=self.head_dim,
            intermediate_dim=self.intermediate_dim,
            activation=self.activation,
            gated=self.gated,
            relative_attention_buckets=self.relative_attention_buckets,
            relative_attention_max_distance=self.relative_attention_max_distance,
            layer_norm_epsilon=self.layer_norm_epsilon,
            pad_token_id=self.pad_token_id,
            zero_padding=self.zero_padding,
            attend_to_padding=self.attend_to_padding,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class UMT5Encoder(T5Encoder):
    """UMT5's encoder (Chung et al. 2023; Wan's text encoder), transformers' ``UMT5EncoderModel``.

    :class:`T5Encoder` with one relative-position table per block: every block's
    attention adds the bias of its own ``(buckets, heads)`` table (T5 shares
    block 0's). Everything else (arguments, inputs, outputs, dtypes) is
    :class:`T5Encoder`'s; the tokenizer is a :class:`T5Tokenizer` (google/umt5-xxl's
    sentencepiece model, ``keras_vdiff.convert.t5.tokenizer_from_folder``). With
    ``zero_padding=True`` (default) the embeddings are what Wan's pipeline feeds
    the transformer: ``last_hidden_state`` cut to each prompt's length, zeros after.

    Example:
        >>> encoder = UMT5Encoder(vocabulary_size=100, hidden_dim=16, num_layers=2, num_heads=4, head_dim=4,
        ...                       intermediate_dim=32, relative_attention_buckets=8)
        >>> embeddings, mask, pooled = encoder({"token_ids": np.array([[5, 6, 1, 0]]),
        ...                                     "padding_mask": np.array([[1, 1, 1, 0]])})
        >>> len(encoder.blocks[1].attention.weights)  # q, k, v, o and its own position table
        5

    Reference: UniMax / umT5 (Chung et al. 2023); the text encoder of Wan 2.1.
    """

    per_layer_position_bias = True


def _read_bytes(value, name):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
        with open(value, "rb") as file:
            return file.read()
    raise ValueError(f"`{name}` must be the bytes of the file or the path of an existing file, got {value!r}.")


@keras.saving.register_keras_serializable(package="keras_vdiff")
class T5Tokenizer:
    """Prompts -> ``{"token_ids", "padding_mask"}`` int32 ``(B, sequence_length)``, as transformers' T5Tokenizer.

    Matches ``transformers.T5Tokenizer(texts, padding="max_length", max_length=sequence_length,
    truncation=True, add_special_tokens=True)`` (``input_ids``, ``attention_mask``).

    Args:
        proto: a sentencepiece model (``spiece.model``): its path or bytes. Or:
        tokenizer_json: a ``tokenizers`` file (``tokenizer.json``, what transformers 5
            writes): its path or bytes. One of the two, or neither when the
            vocabulary comes later from :meth:`load_assets` / :meth:`load_preset_assets`.
        sequence_length: tokens per prompt, ``</s>`` included (Latte / PixArt: 120).
        special_tokens: ``{text: id}`` matched whole in the text before sentencepiece
            (transformers' added tokens: ``<pad>``, ``</s>``, ``<unk>``, ``<extra_id_N>``);
            default: those three of the sentencepiece model. A ``tokenizer.json`` has its own.
        pad_token_id, end_token_id: T5's ``<pad>`` (0) and ``</s>`` (1).
        backend: ``"sentencepiece"`` or ``"tokenizers"``; inferred from the vocabulary given.

    Call:
        a string or a list of strings -> ``{"token_ids", "padding_mask"}`` int32 numpy.

    In a preset the vocabulary file is the asset (``assets/tokenizer/spiece.model`` or
    ``.../tokenizer.json``); :meth:`get_config` holds the rest.

    Example:
        >>> tokenizer = T5Tokenizer("Latte-1/tokenizer/spiece.model", sequence_length=120)
        >>> tokenizer(["a dog running on the beach"])["token_ids"].shape
        (1, 120)
    """

    ASSET_FILES = {"sentencepiece": "spiece.model", "tokenizers": "tokenizer.json"}

    def __init__(self, proto=None, tokenizer_json=None, sequence_length=120, special_tokens=None, pad_token_id=0,
                 end_token_id=1, backend=None):
        if proto is not None and tokenizer_json is not None:
            raise ValueError("Give `proto` (a sentencepiece model) or `tokenizer_json`, not both.")
        inferred = "sentencepiece" if proto is not None else "tokenizers" if tokenizer_json is not None else None
        backend = backend or inferred or "sentencepiece"
        if backend not in self.ASSET_FILES:
            raise ValueError(f"`backend`={backend!r} is not supported; valid: {sorted(self.ASSET_FILES)}.")
        if inferred is not None and backend != inferred:
            raise ValueError(f"`backend`={backend!r} does not fit the vocabulary given (a {inferred} file).")
        self.backend = backend
        self.sequence_length = _positive_int("sequence_length", sequence_length)
        self.pad_token_id = int(pad_token_id)
        self.end_token_id = int(end_token_id)
        if special_tokens is not None and not all(isinstance(k, str) and isinstance(v, (int, np.integer))
                                                  for k, v in dict(special_tokens).items()):
            raise ValueError(f"`special_tokens` must map strings to integer ids, got {special_tokens!r}.")
        self.special_tokens = None if special_tokens is None else {k: int(v) for k, v in special_tokens.items()}
        self._data = None
        self._model = None
        self._pattern = None
        if proto is not None or tokenizer_json is not None:
            self._set_vocabulary(_read_bytes(proto if proto is not None else tokenizer_json,
                                             "proto" if proto is not None else "tokenizer_json"))

    def _set_vocabulary(self, data):
        if self.backend == "sentencepiece":
            import sentencepiece

            model = sentencepiece.SentencePieceProcessor()
            model.LoadFromSerializedProto(data)
            if self.special_tokens is None:
                self.special_tokens = {model.id_to_piece(i): i for i in range(model.get_piece_size())
                                       if model.is_control(i) or model.is_unknown(i)}
            names = sorted(self.special_tokens, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(n) for n in names)) if names else None
        else:
            import tokenizers

            model = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
            model.no_padding()
            model.no_truncation()
        self._data, self._model = data, model

    @property
    def vocabulary_size(self):
        """Ids the tokenizer can produce (pieces plus special / added tokens)."""
        self._check_loaded()
        if self.backend == "tokenizers":
            return self._model.get_vocab_size(with_added_tokens=True)
        return max([self._model.get_piece_size()] + [i + 1 for i in self.special_tokens.values()])

    def token_id(self, text):
        """The id of the piece or special token ``text``; None when the vocabulary has no such token."""
        self._check_loaded()
        if self.backend == "tokenizers":
            return self._model.token_to_id(text)
        if text in self.special_tokens:
            return self.special_tokens[text]
        index = self._model.piece_to_id(text)
        return index if self._model.id_to_piece(index) == text else None

    def _check_loaded(self):
        if self._model is None:
            raise ValueError(
                f"This T5Tokenizer has no vocabulary yet: give `proto` / `tokenizer_json`, or load the "
                f"{self.ASSET_FILES[self.backend]} with load_assets(folder) / load_preset_assets(preset_dir)."
            )

    def _pieces(self, text):
        """The ids of one text without ``</s>``: sentencepiece between the special tokens, which stay whole."""
        if self._pattern is None or not self._pattern.search(text):
            return self._model.encode(text)
        ids, start = [], 0
        for match in self._pattern.finditer(text):
            ids += self._model.encode(text[start:match.start()])
            ids.append(self.special_tokens[match.group()])
            start = match.end()
        return ids + self._model.encode(text[start:])

    def token_lists(self, texts):
        """The ids of each text, before truncation and without ``</s>`` (lists of ints)."""
        self._check_loaded()
        if self.backend == "tokenizers":
            return [encoding.ids for encoding in self._model.encode_batch(texts, add_special_tokens=False)]
        return [self._pieces(text) for text in texts]

    def __call__(self, texts):
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        if isinstance(texts, np.ndarray):
            texts = texts.reshape(-1).tolist()
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, (str, bytes)) for t in texts):
            raise ValueError(f"T5Tokenizer takes a string or a list of strings, got {type(texts).__name__}.")
        texts = [t.decode("utf-8") if isinstance(t, bytes) else t for t in texts]
        token_ids = np.full((len(texts), self.sequence_length), self.pad_token_id, np.int32)
        padding_mask = np.zeros((len(texts), self.sequence_length), np.int32)
        for row, ids in enumerate(self.token_lists(texts)):
            ids = list(ids[: self.sequence_length - 1]) + [self.end_token_id]
            token_ids[row, : len(ids)] = ids
            padding_mask[row, : len(ids)] = 1
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    tokenize = __call__

    def save_assets(self, dir_path):
        """Write the vocabulary file (``spiece.model`` or ``tokenizer.json``) into ``dir_path``."""
        self._check_loaded()
        with open(os.path.join(dir_path, self.ASSET_FILES[self.backend]), "wb") as file:
            file.write(self._data)

    def load_assets(self, dir_path):
        """Read the vocabulary file written by :meth:`save_assets` from ``dir_path``."""
        path = os.path.join(dir_path, self.ASSET_FILES[self.backend])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path!r} does not exist: the {self.backend} vocabulary of this T5Tokenizer.")
        with open(path, "rb") as file:
            self._set_vocabulary(file.read())

    def load_preset_assets(self, preset_dir):
        """Read the vocabulary from a preset folder (``assets/tokenizer/``)."""
        self.load_assets(os.path.join(preset_dir, TOKENIZER_ASSETS_DIR))

    def get_config(self):
        return {
            "sequence_length": self.sequence_length,
            "special_tokens": self.special_tokens,
            "pad_token_id": self.pad_token_id,
            "end_token_id": self.end_token_id,
            "backend": self.backend,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
