"""keras-hub CLIP and T5 text encoders behind the ``(embeddings, mask, pooled)`` contract.

Text-to-video models condition on a sequence of text tokens (cross-attention
in GenTron, Latte, PixArt; joint attention in MM-DiT) and on one pooled vector
(adaLN in GenTron and SnapVideo v2). ``VideoDiffusion`` asks its text encoder
for both: ``text_encoder(captions) -> (embeddings (B, L, D), mask (B, L),
pooled (B, D))``. These adapters wrap keras-hub's pretrained encoders so that
they fulfil it:

- :class:`CLIPTextAdapter` wraps ``keras_hub.models.CLIPTextEncoder`` (CLIP,
  Radford et al. 2021; Stable Diffusion's text encoder). Pooled = the hidden
  state at the end-of-text token, optionally through CLIP's text projection
  (as in CLIP and SD3). Mask = the tokens up to and including end-of-text.
- :class:`T5TextAdapter` wraps the encoder half of ``keras_hub.models.T5Backbone``
  (T5, Raffel et al. 2020; Imagen, PixArt-alpha, SD3, CogVideoX). Pooled = the
  masked mean of the encoder outputs (T5 has no class token). Mask = non-padding.

Both accept Python strings (tokenized with the keras-hub tokenizer given, in
numpy, outside any compiled graph) or integer token ids (what ``fit`` batches
carry; pre-tokenize with :meth:`tokenize`). Padded positions of ``embeddings``
are set to zero. ``from_preset(name)`` loads pretrained weights through
keras-hub for users who can download them; without network it raises a
``RuntimeError`` that says so. Pretrained encoders are usually frozen:
``from_preset(..., trainable=False)`` is the default, and a frozen adapter runs its
encoder in inference mode (no dropout) even inside ``fit``.

Serialization: ``get_config`` stores the wrapped encoder's config; the
tokenizer's vocabulary is a keras-hub asset, not config, so an adapter built
``from_preset`` stores the preset name and reloads its tokenizer from it,
while an adapter built from objects must be given its tokenizer again after
``from_config`` (token ids keep working without one).
"""

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_vdiff.text.small_text_encoder import masked_mean
from keras_vdiff.text.word_tokenizer import is_text_batch

__all__ = ["CLIPTextAdapter", "T5TextAdapter"]


def _token_lists(tokenizer, texts):
    """keras-hub tokenizer output (ragged tensor, list or array) -> list of lists of ints."""
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, np.ndarray):
        texts = texts.reshape(-1).tolist()
    texts = [t.decode("utf-8") if isinstance(t, bytes) else t for t in texts]
    tokens = tokenizer(texts)
    if hasattr(tokens, "to_list"):  # tf.RaggedTensor
        tokens = tokens.to_list()
    elif not isinstance(tokens, list):
        tokens = ops.convert_to_numpy(tokens).tolist()
    return [list(map(int, row)) for row in tokens]


def _load_preset(loader, preset, what):
    try:
        return loader(preset)
    except Exception as error:  # noqa: BLE001 - download and lookup errors come in many types
        raise RuntimeError(
            f"Could not load the keras-hub {what} preset {preset!r}: {error}. Pretrained text encoders need "
            "network access the first time (or a local preset directory); build the adapter from a "
            "keras-hub model you already have, or use keras_vdiff.text.SmallTextEncoder offline."
        ) from error


class _KerasHubTextAdapter(keras.layers.Layer):
    """Shared part of the adapters: strings -> ids -> (embeddings, mask, pooled)."""

    def __init__(self, tokenizer=None, sequence_length=77, preset=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(sequence_length, bool) or not isinstance(sequence_length, (int, np.integer)) \
                or sequence_length < 2:
            raise ValueError(f"`sequence_length` must be an integer >= 2, got {sequence_length!r}.")
        self.sequence_length = int(sequence_length)
        self.preset = preset
        self.tokenizer = tokenizer

    def __call__(self, inputs, *args, **kwargs):
        if is_text_batch(inputs):
            inputs = self.tokenize(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def tokenize(self, texts):
        """Strings -> ``{"token_ids", "padding_mask"}`` int32 numpy ``(B, sequence_length)``."""
        if self.tokenizer is None:
            raise ValueError(
                f"{type(self).__name__} got strings but has no `tokenizer`; pass one (a keras-hub tokenizer) "
                "or give token ids."
            )
        token_ids = np.full((0, self.sequence_length), 0, np.int32)
        rows = [self._pack(tokens) for tokens in _token_lists(self.tokenizer, texts)]
        if rows:
            token_ids = np.stack([row[0] for row in rows]).astype(np.int32)
            padding_mask = np.stack([row[1] for row in rows]).astype(np.int32)
        else:
            padding_mask = token_ids.copy()
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    def _split_inputs(self, inputs):
        if isinstance(inputs, dict):
            if "token_ids" not in inputs:
                raise ValueError(f"A dict input must have `token_ids` (and optionally `padding_mask`); got {list(inputs)}.")
            token_ids = ops.cast(inputs["token_ids"], "int32")
            mask = inputs.get("padding_mask")
        else:
            token_ids, mask = ops.cast(inputs, "int32"), None
        if len(token_ids.shape) != 2:
            raise ValueError(f"`token_ids` must have shape (batch, length); got {token_ids.shape}.")
        return token_ids, mask

    def get_config(self):
        config = super().get_config()
        config.update(sequence_length=self.sequence_length, preset=self.preset)
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class CLIPTextAdapter(_KerasHubTextAdapter):
    """A keras-hub CLIP text encoder as a ``VideoDiffusion`` text encoder.

    Args:
        text_encoder: a ``keras_hub.models.CLIPTextEncoder``.
        tokenizer: optional ``keras_hub.models.CLIPTokenizer`` (needed for strings).
        sequence_length: tokens per caption, start and end tokens included
            (default: the encoder's ``max_sequence_length``, 77 for CLIP).
        projection: optional layer applied to the pooled end-of-text state
            (CLIP's ``text_projection``); ``None`` keeps the hidden state.
        end_token_id: id of end-of-text; ``None`` takes the tokenizer's, else
            the largest id in each row (CLIP's vocabulary puts it last).
        preset: the keras-hub preset the weights came from (set by ``from_preset``).

    Call:
        strings, token ids ``(B, L)`` or ``{"token_ids", "padding_mask"}`` ->
        ``(embeddings (B, L, hidden_dim), mask (B, L) float 0/1, pooled (B, P))``.

    Example:
        >>> adapter = CLIPTextAdapter.from_preset("clip_vit_base_patch32")  # downloads once
        >>> embeddings, mask, pooled = adapter(["The digit 7 is moving left and right"])
        >>> embeddings.shape, pooled.shape
        ((1, 77, 512), (1, 512))

    Reference: CLIP (Radford et al. 2021), the text encoder of Stable Diffusion
    and of the thesis' CLIPSIM (notes-000).
    """

    def __init__(self, text_encoder, tokenizer=None, sequence_length=None, projection=None, end_token_id=None,
                 preset=None, **kwargs):
        if isinstance(text_encoder, dict):
            text_encoder = keras.saving.deserialize_keras_object(text_encoder)
        if isinstance(projection, dict):
            projection = keras.saving.deserialize_keras_object(projection)
        if not isinstance(text_encoder, keras_hub.models.CLIPTextEncoder):
            raise TypeError(
                f"`text_encoder` must be a keras_hub.models.CLIPTextEncoder, got {type(text_encoder).__name__}."
            )
        if tokenizer is None and preset is not None:
            tokenizer = _load_preset(keras_hub.models.CLIPTokenizer.from_preset, preset, "CLIP tokenizer")
        super().__init__(tokenizer=tokenizer, sequence_length=sequence_length or text_encoder.max_sequence_length,
                         preset=preset, **kwargs)
        if self.sequence_length > text_encoder.max_sequence_length:
            raise ValueError(
                f"`sequence_length` ({self.sequence_length}) exceeds the encoder's max_sequence_length "
                f"({text_encoder.max_sequence_length})."
            )
        if end_token_id is None and tokenizer is not None:
            end_token_id = int(tokenizer.end_token_id)
        self.end_token_id = end_token_id
        self.text_encoder = text_encoder
        self.projection = projection
        self.build((None, self.sequence_length))  # variables before fit (JAX's stateless train step)

    @classmethod
    def from_preset(cls, preset, sequence_length=None, use_projection=True, trainable=False, **kwargs):
        """Pretrained CLIP text tower from a keras-hub ``CLIPBackbone`` preset (e.g. ``"clip_vit_base_patch32"``)."""
        backbone = _load_preset(keras_hub.models.CLIPBackbone.from_preset, preset, "CLIP")
        adapter = cls(
            backbone.text_encoder,
            sequence_length=sequence_length,
            projection=backbone.text_projection if use_projection else None,
            preset=preset,
            **kwargs,
        )
        adapter.trainable = trainable
        return adapter

    def _pack(self, tokens):
        start, end = int(self.tokenizer.start_token_id), int(self.tokenizer.end_token_id)
        pad = end if getattr(self.tokenizer, "pad_with_end_token", False) else int(self.tokenizer.pad_token_id)
        row = [start] + tokens[: self.sequence_length - 2] + [end]
        ids = np.full(self.sequence_length, pad, np.int32)
        ids[: len(row)] = row
        mask = np.zeros(self.sequence_length, np.int32)
        mask[: len(row)] = 1
        return ids, mask

    @property
    def hidden_dim(self):
        return self.text_encoder.hidden_dim

    def build(self, inputs_shape):
        shape = inputs_shape["token_ids"] if isinstance(inputs_shape, dict) else inputs_shape
        if not self.text_encoder.built:
            self.text_encoder.build({"token_ids": shape})
        if self.projection is not None and not self.projection.built:
            self.projection.build((shape[0], self.text_encoder.hidden_dim))

    def call(self, inputs, training=False):
        token_ids, mask = self._split_inputs(inputs)
        training = bool(training) and self.trainable  # a frozen encoder runs in inference mode (no dropout)
        embeddings = ops.cast(self.text_encoder({"token_ids": token_ids}, training=training), "float32")
        if self.end_token_id is None:
            end = ops.argmax(token_ids, axis=-1)
        else:
            end = ops.argmax(ops.cast(ops.equal(token_ids, self.end_token_id), "int32"), axis=-1)
        end = ops.cast(end, "int32")
        if mask is None:  # CLIP attends causally: everything up to the first end-of-text token is the caption
            mask = ops.arange(ops.shape(token_ids)[1], dtype="int32")[None, :] <= end[:, None]
        mask = ops.cast(mask, "float32")
        pooled = ops.take_along_axis(embeddings, end[:, None, None], axis=1)[:, 0, :]
        if self.projection is not None:
            pooled = ops.cast(self.projection(pooled), "float32")
        return embeddings * mask[..., None], mask, pooled

    def get_config(self):
        config = super().get_config()
        config.update(
            text_encoder=keras.saving.serialize_keras_object(self.text_encoder),
            projection=None if self.projection is None else keras.saving.serialize_keras_object(self.projection),
            end_token_id=self.end_token_id,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class T5TextAdapter(_KerasHubTextAdapter):
    """The encoder of a keras-hub T5 backbone as a ``VideoDiffusion`` text encoder.

    Args:
        backbone: a ``keras_hub.models.T5Backbone``; only its encoder runs.
        tokenizer: optional ``keras_hub.models.T5Tokenizer`` (needed for strings).
        sequence_length: tokens per caption, end token included (default 128).
        pad_token_id: the padding id (T5: 0); ids given without a mask are
            masked where they equal it.
        preset: the keras-hub preset the weights came from (set by ``from_preset``).

    Call:
        strings, token ids ``(B, L)`` or ``{"token_ids", "padding_mask"}`` ->
        ``(embeddings (B, L, hidden_dim), mask (B, L) float 0/1, pooled (B, hidden_dim))``.

    Example:
        >>> adapter = T5TextAdapter.from_preset("t5_small_multi")  # downloads once
        >>> embeddings, mask, pooled = adapter(["The digit 7 is moving left and right"])
        >>> embeddings.shape[-1], mask.shape
        (512, (1, 128))

    Reference: T5 (Raffel et al. 2020); T5 text conditioning in Imagen, PixArt-alpha,
    SD3 and CogVideoX.
    """

    def __init__(self, backbone, tokenizer=None, sequence_length=128, pad_token_id=0, preset=None, **kwargs):
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if not isinstance(backbone, keras_hub.models.T5Backbone):
            raise TypeError(f"`backbone` must be a keras_hub.models.T5Backbone, got {type(backbone).__name__}.")
        if tokenizer is None and preset is not None:
            tokenizer = _load_preset(keras_hub.models.T5Tokenizer.from_preset, preset, "T5 tokenizer")
        super().__init__(tokenizer=tokenizer, sequence_length=sequence_length, preset=preset, **kwargs)
        # Only the encoder half is kept (and tracked, trained, saved): a functional model from the
        # backbone's encoder inputs to its encoder output, sharing the backbone's layers.
        self.backbone_config = keras.saving.serialize_keras_object(backbone)
        self.hidden_dim = int(backbone.hidden_dim)
        self.pad_token_id = int(pad_token_id)
        self.encoder = keras.Model(
            {key: backbone.input[key] for key in ("encoder_token_ids", "encoder_padding_mask")},
            backbone.output["encoder_sequence_output"],
            name="t5_encoder",
        )

    @classmethod
    def from_preset(cls, preset, sequence_length=128, trainable=False, **kwargs):
        """Pretrained T5 encoder from a keras-hub ``T5Backbone`` preset (e.g. ``"t5_small_multi"``)."""
        backbone = _load_preset(keras_hub.models.T5Backbone.from_preset, preset, "T5")
        adapter = cls(backbone, sequence_length=sequence_length, preset=preset, **kwargs)
        adapter.trainable = trainable
        return adapter

    def _pack(self, tokens):
        end = int(self.tokenizer.end_token_id)
        row = tokens[: self.sequence_length - 1] + [end]
        ids = np.full(self.sequence_length, int(self.tokenizer.pad_token_id), np.int32)
        ids[: len(row)] = row
        mask = np.zeros(self.sequence_length, np.int32)
        mask[: len(row)] = 1
        return ids, mask

    def build(self, inputs_shape):
        self.built = True  # the wrapped functional backbone is built at construction

    def call(self, inputs, training=False):
        token_ids, mask = self._split_inputs(inputs)
        if mask is None:
            mask = ops.not_equal(token_ids, self.pad_token_id)
        mask = ops.cast(mask, "int32")
        training = bool(training) and self.trainable  # a frozen encoder runs in inference mode (no dropout)
        embeddings = self.encoder({"encoder_token_ids": token_ids, "encoder_padding_mask": mask}, training=training)
        embeddings = ops.cast(embeddings, "float32")
        mask = ops.cast(mask, "float32")
        embeddings = embeddings * mask[..., None]
        return embeddings, mask, masked_mean(embeddings, mask)

    def get_config(self):
        config = super().get_config()
        config.update(backbone=self.backbone_config, pad_token_id=self.pad_token_id)
        return config
