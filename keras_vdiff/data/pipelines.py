"""From a dict of numpy arrays (``moving_mnist``, ``video_folder``) to batches for ``model.fit``.

``VideoDiffusion`` batches are dicts: ``videos`` plus ``labels`` (class
backbones) or ``captions`` as token ids (text backbones; Python strings cannot
travel through a compiled train step on JAX or PyTorch) or precomputed
``text_embeddings`` / ``text_mask`` / ``pooled_text`` (a frozen pretrained
encoder need not run at every step). :class:`VideoBatches` is a
``keras.utils.PyDataset`` (portable across the three backends) that shuffles
every epoch and tokenizes captions on the fly; :func:`precompute_text` runs a
frozen text encoder once over all captions. :class:`BucketedBatches` serves videos
of several shapes (aspect-ratio buckets, native-size training): each batch one shape.

On TensorFlow, ``VideoDiffusion.fit`` reads both as their ``to_tf_dataset()``
(:func:`fit_input`): one epoch per iteration, in the sequence's own order, with
``tf.data``'s autotuning off. Keras' reading of a ``PyDataset`` there
autotunes its prefetch, and deleting an autotuned iterator waits for the tuning
thread's next wake-up (10 s to 60 s apart). At the end of an epoch, where fit
starts a fresh iterator, that froze demo-shaped runs for ~32 s in 2 of 3
(``benchmarks/RESULTS.md``, "TensorFlow: epoch ends in `train` and `make demo`
waited too").
"""

import keras
import numpy as np

# The names of the text inputs are the backbone contract's (one definition, in layers/conditioning.py).
from keras_vdiff.layers.conditioning import TEXT_KEYS

__all__ = ["VideoBatches", "BucketedBatches", "fit_input", "precompute_text", "to_tf_dataset", "TEXT_KEYS"]

# Batches the ``tf.data`` pipeline of :func:`epoch_pipeline` reads ahead of the train step.
PREFETCH_BATCHES = 2


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

    def to_tf_dataset(self):
        """These batches, in this sequence's order, as a ``tf.data.Dataset`` without autotuning
        (:func:`epoch_pipeline`); ``fit`` on TensorFlow reads a ``VideoBatches`` this way (:func:`fit_input`)."""
        import tensorflow as tf

        full = self.drop_remainder or self.count % self.batch_size == 0
        signature = {key: tf.TensorSpec((self.batch_size if full else None,) + np.shape(value)[1:],
                                        tf.as_dtype(np.asarray(value).dtype))
                     for key, value in self[0].items()}
        return epoch_pipeline(self, signature)


def epoch_pipeline(sequence, signature):
    """One epoch of the ``PyDataset`` ``sequence`` per iteration, as a ``tf.data.Dataset`` that fit reads like the
    sequence itself: ``sequence[0] .. sequence[len - 1]``, then ``sequence.on_epoch_end()`` (the next epoch's order),
    its length known, :data:`PREFETCH_BATCHES` batches read ahead, and ``tf.data``'s autotuning off (the module
    docstring says why). ``signature``: the ``tf.TensorSpec`` of each key of a batch.
    """
    import tensorflow as tf

    def batches():
        for index in range(len(sequence)):
            yield sequence[index]
        sequence.on_epoch_end()

    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(sequence))).prefetch(PREFETCH_BATCHES)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def fit_input(batches, fit_kwargs=None):
    """What ``fit`` reads for ``batches``: on TensorFlow a :class:`VideoBatches` or :class:`BucketedBatches` as its
    ``to_tf_dataset()`` (the module docstring says why), anything else, and every batch on JAX and PyTorch, as is.

    ``fit_kwargs`` (the ``fit`` call's keyword arguments) get ``shuffle=False`` unless set when the batches become
    a pipeline: the sequence shuffles itself, and Keras would warn that it ignores ``shuffle`` for a dataset.
    """
    if keras.backend.backend() == "tensorflow" and isinstance(batches, (VideoBatches, BucketedBatches)):
        if fit_kwargs is not None:
            fit_kwargs.setdefault("shuffle", False)
        return batches.to_tf_dataset()
    return batches


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


class BucketedBatches(keras.utils.PyDataset):
    """Batches of videos of several shapes (aspect-ratio / length buckets, Sora's native sizes): each batch one shape.

    The videos are grouped by shape; each group is batched as :class:`VideoBatches`
    does (shuffled every epoch, captions tokenized), and every epoch visits the
    batches of all groups in a fresh random order that starts with one batch of
    each shape. ``model.fit`` takes it on every backend: ``VideoDiffusion.fit``
    prepares the backbone's graph for each shape (``VideoBackbone.at_shape``) and,
    on TensorFlow, reads it as a ``tf.data`` pipeline whose varying sizes are
    ``None`` (``to_tf_dataset``).

    Args:
        data: a list of dicts of arrays (``VideoBatches``' ``data``, e.g. one
            ``kv.data.moving_mnist`` set per frame size), or one dict whose
            ``videos`` is a list of single videos of any shapes (its other entries
            one per video).
        batch_size: videos per batch.
        tokenizer, keys, drop_remainder: as in :class:`VideoBatches` (every group the same).
        shuffle: reshuffle the videos and the batch order every epoch.
        seed: seed of the shuffling.
        **kwargs: ``keras.utils.PyDataset`` options.

    Example:
        >>> square = kv.data.moving_mnist(1000, frame_size=16)
        >>> wide = kv.data.moving_mnist(1000, frame_size=(16, 24))
        >>> batches = BucketedBatches([square, wide], batch_size=32, tokenizer=encoder.tokenizer)
        >>> batches.video_shapes
        [(10, 16, 16, 1), (10, 16, 24, 1)]
        >>> model.fit(batches, epochs=10)
    """

    def __init__(self, data, batch_size=32, tokenizer=None, keys=None, shuffle=True, drop_remainder=False, seed=0,
                 **kwargs):
        super().__init__(**kwargs)
        groups = _groups_by_shape(data)
        self.video_shapes = sorted(groups)
        self.buckets = [
            VideoBatches(groups[shape], batch_size=batch_size, tokenizer=tokenizer, keys=keys, shuffle=shuffle,
                         drop_remainder=drop_remainder, seed=seed + k)
            for k, shape in enumerate(self.video_shapes)
        ]
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.order = self._epoch_order()

    def _epoch_order(self):
        """``(bucket, batch)`` pairs of one epoch: one batch of each shape first, then the rest (shuffled)."""
        pairs = [(k, i) for k, bucket in enumerate(self.buckets) for i in range(len(bucket))]
        if self.shuffle:
            pairs = [pairs[j] for j in self.rng.permutation(len(pairs))]
        first = [next(pair for pair in pairs if pair[0] == k) for k in range(len(self.buckets))]
        return first + [pair for pair in pairs if pair not in first]

    def __len__(self):
        return len(self.order)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch {index} is out of range for {len(self)} batches.")
        bucket, batch = self.order[index]
        return self.buckets[bucket][batch]

    def on_epoch_end(self):
        for bucket in self.buckets:
            bucket.on_epoch_end()
        self.order = self._epoch_order()

    def to_tf_dataset(self):
        """These batches as a ``tf.data.Dataset`` whose sizes that differ between shapes are ``None``
        (:func:`epoch_pipeline`)."""
        import tensorflow as tf

        first = [bucket[0] for bucket in self.buckets]
        signature = {}
        for key in first[0]:
            shapes = [np.shape(batch[key])[1:] for batch in first]
            dims = [shapes[0][d] if len({s[d] for s in shapes}) == 1 else None for d in range(len(shapes[0]))]
            signature[key] = tf.TensorSpec((None,) + tuple(dims), tf.as_dtype(np.asarray(first[0][key]).dtype))
        return epoch_pipeline(self, signature)


def _groups_by_shape(data):
    """``{video shape: dict of arrays}`` from a list of dicts or one dict of single videos of several shapes."""
    if isinstance(data, dict):
        if "videos" not in data:
            raise ValueError("`data` must be a list of dicts with `videos` arrays, or a dict with a `videos` list.")
        rows = {}
        for index, video in enumerate(data["videos"]):
            rows.setdefault(tuple(np.shape(video)), []).append(index)
        parts = [{key: _take(value, index) for key, value in data.items()} for index in rows.values()]
    elif isinstance(data, (list, tuple)) and data and all(isinstance(part, dict) for part in data):
        parts = list(data)
    else:
        raise ValueError(f"`data` must be a non-empty list of dicts or a dict with a `videos` list, got {type(data)}.")
    groups = {}
    for part in parts:
        if "videos" not in part:
            raise ValueError(f"Every dict of `data` needs a `videos` array; one has {sorted(part)}.")
        shape = tuple(np.shape(part["videos"])[1:])
        if shape in groups:  # two dicts of one shape: one group
            groups[shape] = {key: _concatenated(groups[shape][key], part[key]) for key in groups[shape] if key in part}
        else:
            groups[shape] = dict(part)
    return groups


def _take(value, index):
    return [value[i] for i in index] if isinstance(value, list) else np.asarray(value)[index]


def _concatenated(first, second):
    if isinstance(first, list) or isinstance(second, list):
        return list(first) + list(second)
    return np.concatenate([np.asarray(first), np.asarray(second)])
