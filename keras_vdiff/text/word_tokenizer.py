"""Word-level tokenizer for closed vocabularies (template captions such as MovingMNIST's).

A caption like ``"The digit 7 is moving left and right"`` uses a dozen distinct
words; a subword tokenizer and a pretrained language model are unnecessary to
tell them apart (the thesis, notes-000 section 6, trains on exactly one caption
template). ``WordTokenizer`` maps each lower-cased word (or punctuation mark)
to an integer id, pads or truncates to a fixed length and keeps two reserved
ids: ``0`` is padding (the text mask is ``token_ids != 0``) and ``1`` marks
unknown words. It runs in numpy, outside any compiled graph, so batches of
token ids can be prepared once and fed to ``model.fit`` on every backend.
"""

import json
import re

import keras
import numpy as np

from keras_vdiff.atomic_files import write_json

__all__ = ["WordTokenizer", "PAD_TOKEN", "UNK_TOKEN", "is_text_batch"]

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
_WORD = re.compile(r"[^\W_]+|[^\w\s]|_", re.UNICODE)


def is_text_batch(texts):
    """True for a string, or a non-empty list/tuple/array of strings (rather than token ids)."""
    if isinstance(texts, str):
        return True
    if isinstance(texts, np.ndarray):
        return texts.dtype.kind in "US" or (texts.dtype == object and texts.size > 0
                                          and isinstance(texts.flat[0], (str, bytes)))
    if isinstance(texts, (list, tuple)):
        return len(texts) > 0 and all(isinstance(t, (str, bytes)) for t in texts)
    return False


@keras.saving.register_keras_serializable(package="keras_vdiff")
class WordTokenizer:
    """Closed-vocabulary word tokenizer with padding and unknown-word ids.

    Args:
        vocabulary: list of words (without the reserved tokens) or a dict
            ``word -> id`` that already contains ``[PAD]`` at 0 and ``[UNK]`` at 1.
            Build one from captions with :meth:`from_texts`.
        sequence_length: length of every tokenized caption: shorter captions
            are padded with 0, longer ones truncated.
        lowercase: lower-case text before splitting into words.

    Call:
        ``tokenizer(texts)`` with a string or a list of strings ->
        ``int32`` numpy ``(batch, sequence_length)``; a single string gives
        ``(1, sequence_length)``.

    Example:
        >>> tokenizer = WordTokenizer.from_texts(["The digit 7 is moving left and right"], sequence_length=10)
        >>> tokenizer(["the digit 7 is moving up"])
        array([[ 2,  3,  4,  5,  6,  1,  0,  0,  0,  0]], dtype=int32)
    """

    pad_id = 0
    unk_id = 1

    def __init__(self, vocabulary, sequence_length=16, lowercase=True):
        if isinstance(sequence_length, bool) or not isinstance(sequence_length, (int, np.integer)) \
                or sequence_length < 1:
            raise ValueError(f"`sequence_length` must be a positive integer, got {sequence_length!r}.")
        self.sequence_length = int(sequence_length)
        self.lowercase = bool(lowercase)
        if isinstance(vocabulary, dict):
            if vocabulary.get(PAD_TOKEN) != 0 or vocabulary.get(UNK_TOKEN) != 1:
                raise ValueError(
                    f"A dict `vocabulary` must map {PAD_TOKEN!r} to 0 and {UNK_TOKEN!r} to 1, got "
                    f"{PAD_TOKEN!r}: {vocabulary.get(PAD_TOKEN)!r}, {UNK_TOKEN!r}: {vocabulary.get(UNK_TOKEN)!r}."
                )
            ids = sorted(vocabulary.values())
            if ids != list(range(len(ids))):
                raise ValueError("A dict `vocabulary` must use the ids 0..N-1, each once.")
            words = sorted(vocabulary, key=vocabulary.get)[2:]
        elif isinstance(vocabulary, (list, tuple)):
            words = list(vocabulary)
        else:
            raise TypeError(f"`vocabulary` must be a list of words or a dict word -> id, got {type(vocabulary).__name__}.")
        for word in words:
            if not isinstance(word, str) or not word:
                raise ValueError(f"`vocabulary` entries must be non-empty strings, got {word!r}.")
            if word in (PAD_TOKEN, UNK_TOKEN):
                raise ValueError(f"`vocabulary` must not contain the reserved token {word!r}.")
        if len(set(words)) != len(words):
            duplicates = sorted({w for w in words if words.count(w) > 1})
            raise ValueError(f"`vocabulary` holds duplicate words: {duplicates}.")
        self.words = [PAD_TOKEN, UNK_TOKEN] + words
        self.index = {word: i for i, word in enumerate(self.words)}

    @classmethod
    def from_texts(cls, texts, sequence_length=None, lowercase=True, min_count=1):
        """A tokenizer whose vocabulary is every word of ``texts`` seen ``min_count`` times.

        Words are ordered by first appearance, so the ids are stable for a
        given list of captions. ``sequence_length=None`` uses the longest text.
        """
        if isinstance(texts, str) or not is_text_batch(texts if isinstance(texts, np.ndarray) else list(texts)):
            raise TypeError("`texts` must be a non-empty list of strings.")
        counts, order = {}, []
        longest = 1
        for text in texts:
            words = cls._split(text, lowercase)
            longest = max(longest, len(words))
            for word in words:
                if word not in counts:
                    order.append(word)
                counts[word] = counts.get(word, 0) + 1
        vocabulary = [w for w in order if counts[w] >= min_count and w not in (PAD_TOKEN, UNK_TOKEN)]
        return cls(vocabulary, sequence_length=sequence_length or longest, lowercase=lowercase)

    @staticmethod
    def _split(text, lowercase):
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if not isinstance(text, str):
            raise TypeError(f"Texts must be strings, got {type(text).__name__}: {text!r}.")
        return _WORD.findall(text.lower() if lowercase else text)

    @property
    def vocabulary_size(self):
        """Number of ids, the two reserved ones included."""
        return len(self.words)

    def get_vocabulary(self):
        """All tokens, index = id (``[PAD]`` and ``[UNK]`` first)."""
        return list(self.words)

    def tokenize(self, texts):
        """Texts -> ``int32`` ids ``(batch, sequence_length)``, padded with 0, unknown words 1."""
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        if isinstance(texts, np.ndarray):
            texts = texts.reshape(-1).tolist()
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"`texts` must be a string or a list of strings, got {type(texts).__name__}.")
        ids = np.zeros((len(texts), self.sequence_length), np.int32)
        for row, text in enumerate(texts):
            words = self._split(text, self.lowercase)[: self.sequence_length]
            ids[row, : len(words)] = [self.index.get(word, self.unk_id) for word in words]
        return ids

    __call__ = tokenize

    def detokenize(self, token_ids):
        """Ids ``(batch, length)`` -> texts (padding dropped, unknown words as ``[UNK]``)."""
        token_ids = np.asarray(token_ids)
        if token_ids.ndim == 1:
            token_ids = token_ids[None]
        if token_ids.size and (token_ids.min() < 0 or token_ids.max() >= self.vocabulary_size):
            raise ValueError(f"`token_ids` must lie in [0, {self.vocabulary_size - 1}].")
        return [" ".join(self.words[i] for i in row if i != self.pad_id) for row in token_ids.tolist()]

    def get_config(self):
        return {"vocabulary": self.words[2:], "sequence_length": self.sequence_length, "lowercase": self.lowercase}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def save(self, path):
        """Write the config as JSON, atomically (temporary name, then rename)."""
        write_json(path, self.get_config())

    @classmethod
    def load(cls, path):
        """A tokenizer from a file written by :meth:`save`."""
        with open(path) as file:
            return cls.from_config(json.load(file))
