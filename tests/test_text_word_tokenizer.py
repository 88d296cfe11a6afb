"""WordTokenizer: closed-vocabulary ids, padding (0) and unknown words (1), round trips."""

import os

import numpy as np
import pytest

from keras_vdiff.text.word_tokenizer import PAD_TOKEN, UNK_TOKEN, WordTokenizer, is_text_batch

CAPTIONS = ["The digit 7 is moving left and right", "The digit 2 is moving up and down", "The digit 0 is moving to and fro"]


def test_vocabulary_from_captions_in_first_appearance_order():
    tokenizer = WordTokenizer.from_texts(CAPTIONS)
    expected = ["the", "digit", "7", "is", "moving", "left", "and", "right", "2", "up", "down", "0", "to", "fro"]
    assert tokenizer.get_vocabulary() == [PAD_TOKEN, UNK_TOKEN] + expected
    assert tokenizer.vocabulary_size == len(expected) + 2
    assert tokenizer.sequence_length == 8  # the longest caption


def test_ids_padding_unknown_truncation_and_case():
    tokenizer = WordTokenizer.from_texts(CAPTIONS, sequence_length=10)
    index = {word: i for i, word in enumerate(tokenizer.get_vocabulary())}
    ids = tokenizer(["THE digit 9 is moving, up!", "and " * 20])
    assert ids.dtype == np.int32 and ids.shape == (2, 10)
    # Reference: split on words and punctuation by hand; unknown -> 1, pad -> 0.
    words = ["the", "digit", "9", "is", "moving", ",", "up", "!"]
    np.testing.assert_array_equal(ids[0], [index.get(w, 1) for w in words] + [0, 0])
    assert ids[0, 2] == 1 and ids[0, 5] == 1 and ids[0, 7] == 1  # "9", ",", "!" are unknown
    np.testing.assert_array_equal(ids[1], np.full(10, index["and"]))  # truncated to sequence_length
    assert tokenizer("The digit 7").shape == (1, 10)
    assert tokenizer([""]).sum() == 0  # an empty caption is all padding


def test_detokenize_round_trip_and_config(tmp_path):
    tokenizer = WordTokenizer.from_texts(CAPTIONS, sequence_length=9)
    ids = tokenizer(CAPTIONS)
    assert tokenizer.detokenize(ids) == [c.lower() for c in CAPTIONS]
    clone = WordTokenizer.from_config(tokenizer.get_config())
    np.testing.assert_array_equal(clone(CAPTIONS), ids)
    path = os.path.join(tmp_path, "tokenizer.json")
    tokenizer.save(path)
    assert sorted(os.listdir(tmp_path)) == ["tokenizer.json"]  # no temporary file left behind
    np.testing.assert_array_equal(WordTokenizer.load(path)(CAPTIONS), ids)
    as_dict = WordTokenizer({w: i for i, w in enumerate(tokenizer.get_vocabulary())}, sequence_length=9)
    np.testing.assert_array_equal(as_dict(CAPTIONS), ids)


def test_text_batch_detection():
    assert is_text_batch("a caption") and is_text_batch(["a", "b"]) and is_text_batch(np.array(["a", "b"]))
    assert not is_text_batch(np.zeros((2, 4), np.int32)) and not is_text_batch([[1, 2], [3, 4]])
    assert not is_text_batch([])


def test_bad_input():
    with pytest.raises(ValueError, match="sequence_length"):
        WordTokenizer(["a"], sequence_length=0)
    with pytest.raises(ValueError, match="duplicate"):
        WordTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="reserved"):
        WordTokenizer(["a", PAD_TOKEN])
    with pytest.raises(ValueError, match=r"\[PAD\]"):
        WordTokenizer({"a": 0, "b": 1})
    with pytest.raises(TypeError, match="vocabulary"):
        WordTokenizer("abc")
    with pytest.raises(TypeError, match="texts"):
        WordTokenizer.from_texts("one string")
    with pytest.raises(ValueError, match="token_ids"):
        WordTokenizer(["a"]).detokenize([[5]])
