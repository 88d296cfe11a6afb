"""From a dict of numpy arrays (``moving_mnist``, ``video_folder``) to batches for ``model.fit``.

``VideoDiffusion`` batches are dicts: ``videos`` plus ``labels`` (class
backbones) or ``captions`` as token ids (text backbones; Python strings cannot
travel through a compiled train step on JAX or PyTorch) or precomputed
``text_embeddings`` / ``text_mask`` / ``pooled_text`` (a frozen pretrained
encoder need not run at every step). :class:`VideoBatches` is a
``keras.utils.PyDataset`` (portable across the three backends) that shuffles
every epoch and tokenizes captions on the fly; :func:`precompute_text` runs a
frozen text encoder once over all captions.
"""

import keras
import numpy as np

# The names of the text inputs are the backbone contract's (one definition, in layers/conditioning.py).
from keras_vdiff.layers.conditioning import TEXT_KEYS

__all__ = ["VideoBatches", "precompute_text", "to_tf_dataset", "TEXT_KEYS"]


def _token_ids(tokenizer, captions):
    ids = tokenizer(list(captions))
    if isinstance(ids, dict):  # the keras-hub adapters' tokenize() returns token ids and a padding mask
        ids = ids["token_ids"]
    return np.asarray(keras.ops.convert_to_numpy(ids), np.int32)


def precompute_text(data, text_encoder, batch_size=256):
    """Run ``text_encoder`` once over ``data["captions"]``; returns a copy of ``data`` with ``TEXT_KEYS`` arrays.

    Identical captions are encoded once. Use it for frozen encoders (a
    pretrained CLIP or T5 adapter); a trainable encoder must see the captions
    (token ids) inside ``fit`` instead.
    """
    if "captions" not in data:
        raise ValueError(f"`data` must have `captions`; it has {sorted(data)}.")
    captions = [str(c) for c in data["captions"]]
    unique = sorted(set(captions))
    parts = {key: [] for key in TEXT_KEYS}
    for start in range(0, len(unique), batch_size):
        outputs = text_encoder(unique[start : start + batch_size])
        for key, value in zip(TEXT_KEYS, outputs):
            parts[key].append(np.asarray(keras.ops.convert_to_numpy(value), np.float32))
    table = {key: np.concatenate(value) for key, value in parts.items()}
    position = {caption: row for row, caption in enumerate(unique)}
    rows = np.array([position[c] for c in captions])
    result = dict(data)
    result.update({key: table[key][rows] for key in TEXT_KEYS})
    return result


class VideoBatches(keras.utils.PyDataset):
    """Shuffled batches of a dict of arrays, as ``model.fit`` input on every backend.

    Args:
        data: dict with ``videos`` ``(N, F, H, W, C)`` and any of ``captions``
            (strings), ``labels``, ``text_embeddings``/``text_mask``/``pooled_text``
            and other per-video arrays.
        batch_size: videos per batch.
        tokenizer: callable ``strings -> token ids`` (a ``WordTokenizer``,
            ``SmallTextEncoder.tokenizer`` or an adapter's ``tokenize``); when
            given, ``captions`` are delivered as int32 token ids.
        keys: which entries to deliver (default: ``videos`` and whichever of
            ``labels``, ``captions`` (with a tokenizer) and the text keys exist).
        shuffle: reshuffle the order every epoch.
        drop_remainder: drop the last incomplete batch (one compiled shape).
        seed: seed of the shuffling.
        **kwargs: ``keras.utils.PyDataset`` options (``workers``, ``use_multiprocessing``).

    Example:
        >>> data = kv.data.moving_mnist(2000, frame_size=16)
        >>> encoder = kv.text.SmallTextEncoder.from_texts(data["captions"])
        >>> model.fit(VideoBatches(data, batch_size=32, tokenizer=encoder.tokenizer), epochs=10)
    """

    def __init__(self, data, batch_size=32, tokenizer=None, keys=None, shuffle=True, drop_remainder=False, seed=0,
                 **kwargs):
        super().__init__(**kwargs)
        if not isinstance(data, dict) or "videos" not in data:
            raise ValueError("`data` must be a dict with a `videos` array (e.g. from kv.data.moving_mnist).")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        count = len(data["videos"])
        if keys is None:
            keys = ["videos"] + [k for k in ("labels",) + TEXT_KEYS if k in data]
            if tokenizer is not None and "captions" in data:
                keys.append("captions")
        keys = list(keys)
        for key in keys:
            if key not in data:
                raise ValueError(f"`keys` names {key!r}, which `data` does not have ({sorted(data)}).")
            if len(data[key]) != count:
                raise ValueError(f"`data[{key!r}]` has {len(data[key])} entries but `videos` has {count}.")
        if "captions" in keys and tokenizer is None:
            raise ValueError("Delivering `captions` needs a `tokenizer` (token ids, not strings, go through fit).")
        if drop_remainder and count < batch_size:
            raise ValueError(f"`drop_remainder=True` with {count} videos and batch_size={batch_size} gives no batch.")
        self.data = {k: (data[k] if k == "captions" else np.asarray(data[k])) for k in keys}
        if "captions" in keys:
            self.data["captions"] = _token_ids(tokenizer, data["captions"])
        self.batch_size = int(batch_size)
        self.keys = keys
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self.rng = np.random.default_rng(seed)
        self.count = count
        self.order = self.rng.permutation(count) if shuffle else np.arange(count)

    def __len__(self):
        full, rest = divmod(self.count, self.batch_size)
        return full if (self.drop_remainder or rest == 0) else full + 1

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch {index} is out of range for {len(self)} batches.")
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return {key: self.data[key][rows] for key in self.keys}

    def on_epoch_end(self):
        if self.shuffle:
            self.order = self.rng.permutation(self.count)


def to_tf_dataset(data, batch_size=32, tokenizer=None, keys=None, shuffle=True, drop_remainder=False, seed=0):
    """The same batches as :class:`VideoBatches`, as a ``tf.data.Dataset`` (``fit`` accepts it on every backend).

    Arguments as in :class:`VideoBatches`; captions are tokenized once up front.
    The dataset reshuffles every epoch (``reshuffle_each_iteration``) and
    prefetches.

    Example:
        >>> data = kv.data.moving_mnist(2000, frame_size=16)
        >>> model.fit(to_tf_dataset(data, 32, tokenizer=model.text_encoder.tokenizer), epochs=10)
    """
    import tensorflow as tf

    batches = VideoBatches(data, batch_size=batch_size, tokenizer=tokenizer, keys=keys, shuffle=False,
                           drop_remainder=drop_remainder)
    dataset = tf.data.Dataset.from_tensor_slices(dict(batches.data))
    if shuffle:
        dataset = dataset.shuffle(batches.count, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batches.batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
