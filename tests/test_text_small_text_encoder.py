"""SmallTextEncoder: the (embeddings, mask, pooled) contract, mask semantics, strings vs ids, serialization."""

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_vdiff.text.small_text_encoder import SmallTextEncoder, masked_mean
from keras_vdiff.text.word_tokenizer import WordTokenizer

CAPTIONS = ["The digit 7 is moving left and right", "The digit 2 is moving up and down", "The digit 0"]


def make_encoder(**kwargs):
    return SmallTextEncoder.from_texts(CAPTIONS, **dict(dict(hidden_dim=32, num_layers=2, num_heads=4,
                                                             sequence_length=10), **kwargs))


@pytest.fixture(scope="module")
def encoder():
    return make_encoder()


def test_shapes_mask_and_pooled(encoder):
    embeddings, mask, pooled = (to_numpy(x) for x in encoder(CAPTIONS))
    assert embeddings.shape == (3, 10, 32) and mask.shape == (3, 10) and pooled.shape == (3, 32)
    lengths = [8, 8, 3]
    expected_mask = (np.arange(10)[None, :] < np.array(lengths)[:, None]).astype(np.float32)
    np.testing.assert_array_equal(mask, expected_mask)  # 1 on words, 0 on padding
    assert np.all(embeddings[mask == 0] == 0)  # padded positions are zeroed
    assert np.all(np.abs(embeddings[mask == 1]).sum(-1) > 0)
    # pooled = mean over the word tokens only (reference written out in numpy).
    reference = np.stack([embeddings[i, : lengths[i]].mean(0) for i in range(3)])
    np.testing.assert_allclose(pooled, reference, rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_the_words(encoder):
    ids = encoder.tokenizer(CAPTIONS)
    full, _, _ = (to_numpy(x) for x in encoder(ids))
    # The first three words of every caption with no padding at all: the same states as inside the padded batch
    # for "The digit 0" (3 words + 7 padding), whose pooled vector must also match.
    short, mask, pooled_short = (to_numpy(x) for x in encoder(ids[:, :3]))
    assert mask.tolist() == [[1.0, 1.0, 1.0]] * 3
    np.testing.assert_allclose(full[2, :3], short[2], atol=1e-5)
    np.testing.assert_allclose(to_numpy(encoder(ids)[2])[2], pooled_short[2], atol=1e-5)
    # Other captions in the batch do not leak into a caption: permuting the batch permutes the outputs.
    permuted, _, _ = (to_numpy(x) for x in encoder(ids[[2, 0, 1]]))
    np.testing.assert_allclose(permuted, full[[2, 0, 1]], atol=1e-5)


def test_strings_and_token_ids_agree_and_empty_caption_is_finite(encoder):
    from_strings = [to_numpy(x) for x in encoder(CAPTIONS + [""])]
    from_ids = [to_numpy(x) for x in encoder(encoder.tokenizer(CAPTIONS + [""]))]
    for a, b in zip(from_strings, from_ids):
        np.testing.assert_array_equal(a, b)
    embeddings, mask, pooled = from_strings
    assert mask[3].sum() == 0 and np.all(np.isfinite(embeddings)) and np.all(pooled[3] == 0)
    one = [to_numpy(x) for x in encoder("The digit 7 is moving left and right")]
    np.testing.assert_allclose(one[0], from_strings[0][:1], atol=1e-6)


def test_masked_mean_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], np.float32)
    expected = np.stack([x[0, :2].mean(0), x[1].mean(0), np.zeros(4, np.float32)])
    np.testing.assert_allclose(to_numpy(masked_mean(keras.ops.convert_to_tensor(x), mask)), expected, atol=1e-6)


def test_config_and_weights_round_trip():
    encoder = make_encoder(dropout=0.1)
    outputs = [to_numpy(x) for x in encoder(CAPTIONS)]
    config = encoder.get_config()
    assert config["vocabulary"] == encoder.tokenizer.get_vocabulary()[2:] and config["dropout"] == 0.1
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(encoder))
    assert isinstance(clone, SmallTextEncoder) and clone.get_config() == config
    clone(CAPTIONS)
    clone.set_weights(encoder.get_weights())
    for a, b in zip(outputs, (to_numpy(x) for x in clone(CAPTIONS))):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # Built from a WordTokenizer directly: same vocabulary and length.
    tokenizer = WordTokenizer.from_texts(CAPTIONS, sequence_length=12)
    assert SmallTextEncoder(tokenizer, hidden_dim=16, num_heads=2).sequence_length == 12


def test_bad_input():
    with pytest.raises(ValueError, match="hidden_dim"):
        SmallTextEncoder(["a"], hidden_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="num_layers"):
        SmallTextEncoder(["a"], num_layers=-1)
    with pytest.raises(ValueError, match="dropout"):
        SmallTextEncoder(["a"], dropout=1.5)
    encoder = make_encoder(sequence_length=6)
    with pytest.raises(ValueError, match="token_ids"):
        encoder(np.zeros((2, 9), np.int32))
