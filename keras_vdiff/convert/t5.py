"""transformers' ``T5EncoderModel`` -> ``kv.text.T5Encoder`` (``UMT5EncoderModel`` -> ``kv.text.UMT5Encoder``), and
a pipeline's ``tokenizer/`` -> ``kv.text.T5Tokenizer``.

The text encoder of ``maxin-cn/Latte-1`` (and PixArt-alpha, CogVideoX) is
``text_encoder/``: a T5 v1.1 XXL ``T5EncoderModel`` folder (``config.json`` +
sharded safetensors). Its tokenizer is ``tokenizer/`` (``spiece.model`` and
``tokenizer_config.json``; transformers 5 re-saves it as ``tokenizer.json``)::

    from keras_vdiff.convert.t5 import tokenizer_from_folder

    encoder = kv.convert.from_diffusers("Latte-1/text_encoder", dtype="bfloat16")  # -> convert_t5_encoder
    tokenizer = tokenizer_from_folder("Latte-1/tokenizer", sequence_length=120)
    embeddings, mask, pooled = encoder(tokenizer(["a dog running on the beach"]))
    model = kv.VideoDiffusion(backbone, process, text_encoder=encoder,
                              preprocessor=kv.TextToVideoPreprocessor(tokenizer))

``Latte-1`` is a local download of the Hub repository (nothing here downloads);
``sequence_length`` is the pipeline's choice (``LattePipeline`` and PixArt: 120).
diffusers' Latte feeds the negative prompt's embeddings on unmasked, padded
positions included: ``T5Encoder(zero_padding=False)`` (``encoder.zero_padding =
False``) returns those rows as transformers computes them. The XXL encoder has
4.7 B parameters: 19 GB in float32, 9.5 GB with ``dtype="bfloat16"``.

Wan 2.1's text encoder is a ``UMT5EncoderModel`` (UMT5-XXL, one relative-position
table per block; :func:`convert_umt5_encoder`); its tokenizer folder is
google/umt5-xxl's T5 tokenizer, read by the same :func:`tokenizer_from_folder`
(``WanPipeline``: ``sequence_length=512``).

Tensor names (transformers)::

    shared.weight  (encoder.embed_tokens.weight: the same, tied; older files store both)
    encoder.block.{i}.layer.0.layer_norm.weight
    encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight
    encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight   (buckets, heads; UMT5: every block)
    encoder.block.{i}.layer.1.layer_norm.weight
    encoder.block.{i}.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight   (gated; wi, wo otherwise)
    encoder.final_layer_norm.weight
"""

import json
import os

import numpy as np

from keras_vdiff.convert.checkpoint import ConversionError, assign, check_config
from keras_vdiff.text.t5_encoder import T5Encoder, T5Tokenizer, UMT5Encoder

__all__ = ["convert_t5_encoder", "convert_umt5_encoder", "tokenizer_from_folder", "t5_encoder_arguments"]

CLASS = "T5EncoderModel"
# transformers class -> (its config's model_type, our encoder class).
ENCODERS = {"T5EncoderModel": ("t5", T5Encoder), "UMT5EncoderModel": ("umt5", UMT5Encoder)}
# transformers' activation names -> T5Encoder's.
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "silu": "silu", "swish": "silu"}
FEED_FORWARD = tuple(name for act in ACTIVATIONS for name in (act, f"gated-{act}"))


def _feed_forward(config, where=CLASS):
    """``(activation, gated)`` of a T5 config, as transformers' ``T5Config`` derives them from ``feed_forward_proj``."""
    projection = config.get("feed_forward_proj", "relu")
    gated = projection.startswith("gated-")
    activation = projection[len("gated-"):] if gated else projection
    if projection == "gated-gelu":  # transformers: T5 v1.1's "gated-gelu" means the tanh GELU
        activation = "gelu_new"
    for field, value, derived in (("dense_act_fn", config.get("dense_act_fn"), activation),
                                  ("is_gated_act", config.get("is_gated_act"), gated)):
        if value is not None and value != derived:
            raise ConversionError(
                f"{where} config field `{field}`={value!r} contradicts `feed_forward_proj`={projection!r} "
                f"(which means {field}={derived!r}); supported: configs where they agree."
            )
    return ACTIVATIONS[activation], gated


def _positive(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def t5_encoder_arguments(config, where=CLASS):
    """The ``T5Encoder`` / ``UMT5Encoder`` constructor arguments of a transformers ``config.json`` (checked).

    ``where``: the transformers class, ``"T5EncoderModel"`` or ``"UMT5EncoderModel"``
    (the config's ``model_type`` must be its ``"t5"`` / ``"umt5"``).
    """
    check_config(config, {
        "model_type": (ENCODERS[where][0],),
        "feed_forward_proj": FEED_FORWARD,
        "is_decoder": (False,),
        "relative_attention_num_buckets": lambda v: _positive(v) and v >= 4,
        "relative_attention_max_distance": _positive,
        "layer_norm_epsilon": lambda v: isinstance(v, (int, float)) and v > 0,
    }, where)
    for field in ("vocab_size", "d_model", "num_layers", "num_heads", "d_kv", "d_ff"):
        if not _positive(config.get(field)):
            raise ConversionError(f"{where} config field `{field}`={config.get(field)!r} must be a positive integer.")
    activation, gated = _feed_forward(config, where)
    return dict(
        vocabulary_size=config["vocab_size"],
        hidden_dim=config["d_model"],
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        head_dim=config["d_kv"],
        intermediate_dim=config["d_ff"],
        activation=activation,
        gated=gated,
        relative_attention_buckets=config.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=config.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-6),
        pad_token_id=config.get("pad_token_id") if config.get("pad_token_id") is not None else 0,
    )


def _embedding_name(folder):
    """``shared.weight``, or the tied ``encoder.embed_tokens.weight``; when both are stored they must be equal."""
    names = [n for n in ("shared.weight", "encoder.embed_tokens.weight") if n in folder]
    if not names:
        raise ConversionError(f"{folder.path!r} has neither `shared.weight` nor `encoder.embed_tokens.weight`.")
    if len(names) == 2:
        if not np.array_equal(folder.take(names[0]), folder.take(names[1])):
            raise ConversionError(
                f"{folder.path!r} stores `shared.weight` and `encoder.embed_tokens.weight` with different values; "
                "T5EncoderModel ties them, so the checkpoint is ambiguous."
            )
    return names[0]


def convert_t5_encoder(folder, dtype=None):
    """A built ``kv.text.T5Encoder`` with every tensor of a ``T5EncoderModel`` folder assigned.

    Args:
        folder: a ``PretrainedFolder`` of a transformers ``T5EncoderModel``.
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"mixed_bfloat16"``.

    Returns:
        The encoder, frozen (``trainable=False``: pretrained text encoders are not trained in
        these pipelines; set ``trainable=True`` to fine-tune).
    """
    return _convert_encoder(folder, dtype, "T5EncoderModel")


def convert_umt5_encoder(folder, dtype=None):
    """A built ``kv.text.UMT5Encoder`` with every tensor of a ``UMT5EncoderModel`` folder assigned (Wan's encoder).

    The same tensor names as T5's, with ``encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight``
    in every block. UMT5-XXL has 5.7 B parameters: 23 GB in float32, 11.4 GB with ``dtype="bfloat16"``.

    Args:
        folder: a ``PretrainedFolder`` of a transformers ``UMT5EncoderModel``
            (e.g. ``Wan2.1-T2V-1.3B-Diffusers/text_encoder``).
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"mixed_bfloat16"``.

    Returns:
        The encoder, frozen (``trainable=False``).

    Example:
        >>> encoder = kv.convert.from_diffusers("Wan2.1-T2V-1.3B-Diffusers/text_encoder", dtype="bfloat16")
        >>> tokenizer = tokenizer_from_folder("Wan2.1-T2V-1.3B-Diffusers/tokenizer", sequence_length=512)
        >>> embeddings, mask, _ = encoder(tokenizer(["a cat walking on grass"]))   # (1, 512, 4096), zeros after it
    """
    return _convert_encoder(folder, dtype, "UMT5EncoderModel")


def _convert_encoder(folder, dtype, where):
    arguments = t5_encoder_arguments(folder.config, where)
    encoder_class = ENCODERS[where][1]
    # Built inside `from_diffusers`' weights_to_load(): no random draws, and every variable must be assigned.
    encoder = encoder_class(**arguments, dtype=dtype or "float32", name=ENCODERS[where][0] + "_encoder")

    def put(variable, name, transpose=False):
        value = folder.take(name)
        assign(variable, value.T if transpose else value, name)

    embedding = _embedding_name(folder)
    put(encoder.token_embedding.embeddings, embedding)
    layers = folder.numbered("encoder.block")
    if len(layers) != encoder.num_layers:
        raise ConversionError(
            f"{folder.path!r} has {len(layers)} encoder blocks; its config says num_layers={encoder.num_layers}."
        )
    for i, block in enumerate(encoder.blocks):
        prefix = f"encoder.block.{i}.layer"
        attention = block.attention
        for short, dense in (("q", attention.query), ("k", attention.key), ("v", attention.value),
                             ("o", attention.output_projection)):
            put(dense.kernel, f"{prefix}.0.SelfAttention.{short}.weight", transpose=True)
        bias_name = f"{prefix}.0.SelfAttention.relative_attention_bias.weight"
        if attention.has_relative_attention_bias:
            put(attention.relative_attention_bias, bias_name)
        elif bias_name in folder:
            raise ConversionError(
                f"{folder.path!r} has {bias_name!r}: a relative-position table in block {i} (UMT5-style, one per "
                f"block) is not supported by {encoder_class.__name__}, which shares block 0's; UMT5 checkpoints "
                "are UMT5EncoderModel folders (kv.text.UMT5Encoder)."
            )
        put(block.attention_norm.scale, f"{prefix}.0.layer_norm.weight")
        feed_forward = f"{prefix}.1.DenseReluDense"
        projections = [("wi_0", block.gate_projection), ("wi_1", block.up_projection)] if block.gated else \
            [("wi", block.up_projection)]
        for short, dense in projections + [("wo", block.down_projection)]:
            put(dense.kernel, f"{feed_forward}.{short}.weight", transpose=True)
        put(block.feed_forward_norm.scale, f"{prefix}.1.layer_norm.weight")
    put(encoder.final_norm.scale, "encoder.final_layer_norm.weight")
    folder.check_all_taken()
    encoder.trainable = False
    return encoder


TOKENIZER_CLASSES = ("T5Tokenizer", "T5TokenizerFast")


def _token_text(value, default):
    """A special token of ``tokenizer_config.json``: a string or an AddedToken dict (``{"content": ...}``)."""
    if value is None:
        return default
    return value.get("content", default) if isinstance(value, dict) else str(value)


def _read_json(path):
    if not os.path.isfile(path):
        return {}
    with open(path) as file:
        return json.load(file)


def _sentencepiece_special_tokens(path, config, pieces):
    """``{text: id}`` of the added tokens of a sentencepiece T5 tokenizer folder.

    From ``added_tokens_decoder`` (transformers >= 4.34) or ``added_tokens.json``
    (older), else T5's ``extra_ids`` sentinels (``<extra_id_i>`` = ``pieces +
    extra_ids - 1 - i``, after the sentencepiece vocabulary, in reverse). The
    caller adds the sentencepiece model's own ``<pad>``, ``</s>``, ``<unk>``.
    """
    decoder = config.get("added_tokens_decoder")
    added = _read_json(os.path.join(path, "added_tokens.json"))
    if decoder:
        return {_token_text(token, None): int(i) for i, token in decoder.items()}
    if added:
        return {str(text): int(i) for text, i in added.items()}
    extra_ids = int(config.get("extra_ids", 100))
    return {f"<extra_id_{i}>": pieces + extra_ids - 1 - i for i in range(extra_ids)}


def tokenizer_from_folder(path, sequence_length=120):
    """A ``kv.text.T5Tokenizer`` for a transformers T5 tokenizer folder (a pipeline's ``tokenizer/``).

    Reads ``spiece.model`` (the sentencepiece model, as on the Hub) when present, else
    ``tokenizer.json`` (what transformers 5 ``save_pretrained`` writes), and
    ``tokenizer_config.json`` for the special tokens. The result tokenizes like
    ``transformers.AutoTokenizer.from_pretrained(path)(texts, padding="max_length",
    max_length=sequence_length, truncation=True, add_special_tokens=True)``.

    Args:
        path: the folder, e.g. ``"Latte-1/tokenizer"``.
        sequence_length: tokens per prompt (the pipeline's ``max_length``; Latte: 120).

    Raises:
        FileNotFoundError: the folder has neither vocabulary file.
        ConversionError: a ``tokenizer_class`` other than T5's.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"`path`={path!r} is not a folder.")
    config = _read_json(os.path.join(path, "tokenizer_config.json"))
    tokenizer_class = config.get("tokenizer_class")
    if tokenizer_class is not None and tokenizer_class not in TOKENIZER_CLASSES:
        raise ConversionError(
            f"{os.path.join(path, 'tokenizer_config.json')} field `tokenizer_class`={tokenizer_class!r} is not "
            f"supported; supported: {list(TOKENIZER_CLASSES)}."
        )
    pad, end = _token_text(config.get("pad_token"), "<pad>"), _token_text(config.get("eos_token"), "</s>")
    spiece, tokenizer_json = os.path.join(path, "spiece.model"), os.path.join(path, "tokenizer.json")
    if os.path.isfile(spiece):
        with open(spiece, "rb") as file:
            proto = file.read()
        plain = T5Tokenizer(proto=proto)  # with the sentencepiece model's own <pad>, </s>, <unk>
        special = dict(plain.special_tokens)
        special.update(_sentencepiece_special_tokens(path, config, plain.vocabulary_size))
        kind, arguments = "sentencepiece model", dict(proto=proto, special_tokens=special)
    elif os.path.isfile(tokenizer_json):
        with open(tokenizer_json, "rb") as file:
            data = file.read()
        plain = T5Tokenizer(tokenizer_json=data)  # its added tokens are in the file
        kind, arguments = "tokenizer.json", dict(tokenizer_json=data)
    else:
        raise FileNotFoundError(
            f"`path`={path!r} has neither spiece.model nor tokenizer.json: it is not a T5 tokenizer folder."
        )
    ids = {}
    for name in (pad, end):
        ids[name] = arguments.get("special_tokens", {}).get(name, plain.token_id(name))
        if ids[name] is None:
            raise ConversionError(f"The {kind} of {path!r} has no token {name!r} (its pad / end token).")
    return T5Tokenizer(sequence_length=sequence_length, pad_token_id=ids[pad], end_token_id=ids[end], **arguments)
