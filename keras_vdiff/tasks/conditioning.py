"""The task side of the conditioning contract: checked conditions, dropout, null rows, text encoding, pixels.

The backbone side (input names, input spec, condition embedding) is
``keras_vdiff.layers.conditioning``; this module is what a task does with it:

- ``checked_labels`` / ``checked_prompts`` / ``checked_seed``: the user's
  conditions and seed, or an error naming the argument, the value and what is valid;
- ``encode_text``: prompts or token ids -> ``{text_embeddings, text_mask, pooled_text}``
  through a text encoder (and a preprocessor for strings, when the task has one);
- ``batch_text``: the text inputs of a training batch (precomputed or captions);
- ``drop_conditions``: classifier-free-guidance dropout of a training batch
  (Ho & Salimans 2022): dropped rows get the null condition;
- ``with_null_rows``: the conditions of a guided sampling batch, the null rows
  stacked after the conditional ones (one batched forward for both halves).

The null condition is the class ``num_classes`` for class backbones, an all-zero
``text_embeddings`` / ``text_mask`` / ``pooled_text`` row for text backbones.

The pixel convention (``videos_to_unit_range``, ``unit_range_to_uint8``) and
``batch_loss`` are defined one floor down in ``keras_vdiff.conventions`` (the
autoencoders share them) and re-exported here with the rest of the contract.
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.conventions import batch_loss, unit_range_to_uint8, videos_to_unit_range
from keras_vdiff.layers.conditioning import TEXT_KEYS
from keras_vdiff.text.word_tokenizer import is_text_batch

__all__ = [
    "MAX_SEED",
    "TEXT_KEYS",
    "batch_loss",
    "batch_text",
    "checked_labels",
    "checked_prompts",
    "checked_seed",
    "drop_conditions",
    "encode_text",
    "unit_range_to_uint8",
    "videos_to_unit_range",
    "with_null_rows",
]

# Seeds every backend takes: TensorFlow's sampling seeds are int32, and the per-step stream uses seed + 1.
MAX_SEED = 2**31 - 2


def checked_labels(labels, num_classes, allow_null=False, name="labels"):
    """Class labels as a flat int32 array, or a ``ValueError`` naming ``name``, the values and the valid range.

    ``allow_null`` admits ``num_classes`` itself, the null class that generates unconditionally.
    """
    array = np.asarray(labels)
    if array.size == 0:
        raise ValueError(f"`{name}` is empty: give at least one class label in [0, {num_classes}).")
    if array.dtype.kind not in "iu" and not (array.dtype.kind == "f" and np.all(array == np.round(array))):
        raise ValueError(f"`{name}` must be integer class labels, got {labels!r}.")
    array = array.astype(np.int64).reshape(-1)
    top = num_classes + 1 if allow_null else num_classes
    bad = array[(array < 0) | (array >= top)]
    if bad.size:
        valid = f"[0, {num_classes}] ({num_classes} is the null class)" if allow_null else f"[0, {num_classes})"
        raise ValueError(f"`{name}` must lie in {valid}; got {sorted(set(bad.tolist()))[:10]}.")
    return array.astype(np.int32)


def checked_prompts(prompts):
    """A prompt or a non-empty list of prompts as a list of strings, or a ``ValueError`` saying what is wrong."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError(f"`prompts` must be a string or a non-empty list of strings, got {prompts!r}.")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise ValueError(f"`prompts` must hold strings only; got {bad[:3]!r} among them.")
    return list(prompts)


def checked_sampling_request(compile, guidance_scale, seed):
    """``generate``'s ``compile`` (``"auto"``: compiled except on PyTorch) and seed; checks ``guidance_scale``."""
    if compile == "auto":
        compile = keras.backend.backend() != "torch"
    elif not isinstance(compile, bool):
        raise ValueError(f"`compile` must be True, False or 'auto', got {compile!r}.")
    if not np.isfinite(guidance_scale):
        raise ValueError(f"`guidance_scale` must be a finite number, got {guidance_scale!r}.")
    return compile, checked_seed(seed)


def checked_seed(seed):
    """``seed`` as an int in ``[0, MAX_SEED]``; ``None`` draws a fresh one from the operating system."""
    if seed is None:
        return int(np.random.SeedSequence().entropy % (MAX_SEED + 1))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"`seed` must be None or an integer in [0, {MAX_SEED}], got {seed!r}.")
    return int(seed)


def encode_text(text_encoder, texts, preprocessor=None):
    """Prompts (strings) or token ids -> the three float32 text inputs of a text backbone.

    Strings go through ``preprocessor`` first when one is given (the task's
    tokenizer); token ids, and strings without a preprocessor, go straight to
    ``text_encoder``, which returns ``(embeddings, mask, pooled)``.
    """
    if text_encoder is None:
        raise ValueError("Batches with `captions` (or `prompts`) need a `text_encoder`.")
    if preprocessor is not None and is_text_batch(texts):
        texts = preprocessor(texts)
    embeddings, mask, pooled = text_encoder(texts)
    return {
        "text_embeddings": ops.cast(embeddings, "float32"),
        "text_mask": ops.cast(mask, "float32"),
        "pooled_text": ops.cast(pooled, "float32"),
    }


def batch_text(batch, text_encoder, preprocessor=None):
    """The text inputs of a training batch: its precomputed ``TEXT_KEYS``, else its encoded ``captions``."""
    if all(key in batch for key in TEXT_KEYS):
        return {key: ops.cast(batch[key], "float32") for key in TEXT_KEYS}
    if "captions" in batch:
        return encode_text(text_encoder, batch["captions"], preprocessor)
    raise ValueError(
        "A text-conditional backbone needs `captions` (with a text encoder) or "
        f"precomputed {TEXT_KEYS} in every batch."
    )


def drop_conditions(conditions, drop, num_classes=None):
    """Classifier-free-guidance dropout: the rows where ``drop`` (B,) is true get the null condition.

    Args:
        conditions: ``{"class_labels": (B,) int32}`` or the three text inputs.
        drop: boolean ``(B,)``.
        num_classes: the class backbone's class count (its null class).
    """
    if "class_labels" in conditions:
        labels = conditions["class_labels"]
        null = ops.full(ops.shape(labels), num_classes, dtype="int32")
        return {"class_labels": ops.where(drop, null, labels)}
    keep = 1.0 - ops.cast(drop, "float32")
    return {
        "text_embeddings": conditions["text_embeddings"] * keep[:, None, None],
        "text_mask": conditions["text_mask"] * keep[:, None],
        "pooled_text": conditions["pooled_text"] * keep[:, None],
    }


def with_null_rows(conditions, num_classes=None):
    """The conditions of a guided batch: the given rows, then as many null rows (one forward for both halves).

    Class labels are numpy int32 ``(B,)`` and come back as a ``(2B,)`` tensor; text
    inputs are tensors and get all-zero rows.
    """
    if "class_labels" in conditions:
        labels = np.asarray(conditions["class_labels"], np.int32)
        labels = np.concatenate([labels, np.full((len(labels),), num_classes, np.int32)])
        return {"class_labels": ops.convert_to_tensor(labels, "int32")}
    return {key: ops.concatenate([value, ops.zeros_like(value)], axis=0) for key, value in conditions.items()}


def repeat_rows(conditions, repeats):
    """Each row of every condition ``repeats`` times (an image backbone trained on the frames of videos)."""
    if repeats <= 1:
        return conditions
    return {key: ops.repeat(value, repeats, axis=0) for key, value in conditions.items()}


def valid_labels(labels, num_classes):
    """Boolean tensor: which int32 ``labels`` lie in ``[0, num_classes)`` (inside a compiled step)."""
    return ops.logical_and(labels >= 0, labels < num_classes)


def training_conditions(batch, backbone, drop, repeats=1, text_encoder=None, preprocessor=None):
    """The condition inputs of a training batch, each row repeated ``repeats`` times, dropped where ``drop``.

    Out-of-range labels (data streamed past ``fit``'s up-front check) must not
    gather out of bounds: JAX would give NaN, -1 would wrap to the null row. Row 0
    stands in here and ``compute_loss`` makes the loss NaN, which
    ``StopOnNonFiniteLoss`` reports.
    """
    if backbone.conditioning == "class":
        if "labels" not in batch:
            raise ValueError("A class-conditional backbone needs `labels` in every batch.")
        labels = ops.cast(ops.reshape(batch["labels"], (-1,)), "int32")
        conditions = {"class_labels": ops.where(valid_labels(labels, backbone.num_classes), labels, 0)}
    else:
        conditions = batch_text(batch, text_encoder, preprocessor)
    return drop_conditions(repeat_rows(conditions, repeats), drop, backbone.num_classes)


NEGATIVE_PROMPT_MASKS = ("own", "prompt")


def checked_negative_prompt(negative_prompt, mask):
    """A task's default ``negative_prompt`` (None or a string) and ``negative_prompt_mask``, checked."""
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise ValueError(f"`negative_prompt` must be None or a string, got {negative_prompt!r}.")
    if mask not in NEGATIVE_PROMPT_MASKS:
        raise ValueError(f"`negative_prompt_mask` must be one of {NEGATIVE_PROMPT_MASKS}, got {mask!r}.")
    return negative_prompt, mask


def checked_negative_prompts(negative_prompts, batch):
    """``negative_prompts`` (one string for all, or one per video) as a list of ``batch`` strings."""
    if isinstance(negative_prompts, str):
        return [negative_prompts] * batch
    if not isinstance(negative_prompts, (list, tuple)) or not all(isinstance(p, str) for p in negative_prompts):
        raise ValueError(f"`negative_prompts` must be a string or a list of strings, got {negative_prompts!r}.")
    if len(negative_prompts) != batch:
        raise ValueError(
            f"`negative_prompts` has {len(negative_prompts)} entries for {batch} videos: give one string, or one "
            "per prompt."
        )
    return list(negative_prompts)


def _padded_to(text, length):
    """Text inputs with their token axis zero-padded (masked out) to ``length``."""
    extra = length - int(text["text_embeddings"].shape[1])
    if extra <= 0:
        return text
    return dict(text, text_embeddings=ops.pad(text["text_embeddings"], ((0, 0), (0, extra), (0, 0))),
                text_mask=ops.pad(text["text_mask"], ((0, 0), (0, extra))))


def with_negative_rows(text, negative, mask="own"):
    """A guided text batch whose null rows are encoded negative prompts instead of all-zero rows.

    Args:
        text, negative: the text inputs of the prompts and of their negative prompts.
        mask: ``"own"`` (each negative attends to its own tokens) or ``"prompt"``
            (it attends to as many positions as its prompt has tokens: diffusers'
            Latte pipeline cuts both encodings to the prompt's length, so its
            unconditional branch sees the empty prompt's end token and padding
            outputs up to that length).
    """
    if mask not in NEGATIVE_PROMPT_MASKS:
        raise ValueError(f"`negative_prompt_mask` must be one of {NEGATIVE_PROMPT_MASKS}, got {mask!r}.")
    length = max(int(text["text_embeddings"].shape[1]), int(negative["text_embeddings"].shape[1]))
    text, negative = _padded_to(text, length), _padded_to(negative, length)
    if mask == "prompt":
        negative = dict(negative, text_mask=text["text_mask"])
    return {key: ops.concatenate([text[key], negative[key]], axis=0) for key in TEXT_KEYS}


def sampling_conditions(backbone, labels=None, prompts=None, text_embeddings=None, batch_size=1,
                        use_guidance=False, text_encoder=None, preprocessor=None, negative_prompts=None,
                        negative_prompt_mask="own"):
    """The condition inputs of a sampling batch (with their null rows under guidance) and its number of videos.

    Under guidance the null rows of a text model are all-zero, or the encoded
    ``negative_prompts`` when given (:func:`with_negative_rows`).
    """
    if backbone.conditioning is None:
        return {}, batch_size
    if backbone.conditioning == "class":
        if labels is None:
            raise ValueError("A class-conditional model needs `labels` to generate.")
        labels = checked_labels(labels, backbone.num_classes, allow_null=True)
        if use_guidance:
            return with_null_rows({"class_labels": labels}, backbone.num_classes), len(labels)
        return {"class_labels": ops.convert_to_tensor(labels, "int32")}, len(labels)
    if text_embeddings is not None:
        text = {key: ops.cast(ops.convert_to_tensor(text_embeddings[key]), "float32") for key in TEXT_KEYS}
    elif prompts is not None:
        text = encode_text(text_encoder, checked_prompts(prompts), preprocessor)
    else:
        raise ValueError("A text-conditional model needs `prompts` (with a text encoder) or `text_embeddings`.")
    batch = int(ops.shape(text["text_embeddings"])[0])
    if not use_guidance:
        return text, batch
    if negative_prompts is None:
        return with_null_rows(text), batch
    negative = encode_text(text_encoder, checked_negative_prompts(negative_prompts, batch), preprocessor)
    return with_negative_rows(text, negative, negative_prompt_mask), batch
