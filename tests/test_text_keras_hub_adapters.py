"""CLIP and T5 adapters from small random keras-hub configs (no downloads): contract, masks, round trips."""

import io

import keras
import keras_hub
import numpy as np
import pytest

from conftest import to_numpy
from keras_vdiff.text.keras_hub_adapters import CLIPTextAdapter, T5TextAdapter

WORDS = "the digit is moving up and down left right to fro 0 1 2 3 4 5 6 7 8 9".split()
CAPTIONS = ["The digit 7 is moving left and right", "The digit 2 is moving up"]


def clip_tokenizer():
    """A byte-pair CLIP tokenizer whose merges spell out WORDS, so each word is one token."""
    tokens, merges = ["<|startoftext|>", "<|endoftext|>"], []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        tokens += [p for p in pieces if p not in tokens]
        current = pieces[0]
        for piece in pieces[1:]:
            if f"{current} {piece}" not in merges:
                merges.append(f"{current} {piece}")
            current += piece
            if current not in tokens:
                tokens.append(current)
    tokens = list(dict.fromkeys(tokens))
    return keras_hub.models.CLIPTokenizer(vocabulary={t: i for i, t in enumerate(tokens)}, merges=merges)


def small_clip(tokenizer, sequence_length=12):
    return keras_hub.models.CLIPTextEncoder(
        vocabulary_size=tokenizer.vocabulary_size(), embedding_dim=16, hidden_dim=16, num_layers=1,
        num_heads=2, intermediate_dim=32, max_sequence_length=sequence_length,
    )


def t5_tokenizer():
    import sentencepiece

    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["the digit 7 is moving up and down", "the digit 2 is moving left and right"] * 5),
        model_writer=proto, vocab_size=14, model_type="word", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        minloglevel=3,
    )
    return keras_hub.models.T5Tokenizer(proto=proto.getvalue())


def small_t5():
    return keras_hub.models.T5Backbone(vocabulary_size=14, num_layers=1, num_heads=2, hidden_dim=16,
                                       intermediate_dim=32, dropout=0.0)


def test_clip_adapter_contract():
    tokenizer = clip_tokenizer()
    adapter = CLIPTextAdapter(small_clip(tokenizer), tokenizer, projection=keras.layers.Dense(8))
    embeddings, mask, pooled = (to_numpy(x) for x in adapter(CAPTIONS))
    assert embeddings.shape == (2, 12, 16) and mask.shape == (2, 12) and pooled.shape == (2, 8)
    packed = adapter.tokenize(CAPTIONS)
    ids = packed["token_ids"]
    # start + one token per word + end, then padding.
    lengths = [len(c.split()) + 2 for c in CAPTIONS]
    np.testing.assert_array_equal(mask, (np.arange(12)[None] < np.array(lengths)[:, None]).astype(np.float32))
    np.testing.assert_array_equal(packed["padding_mask"], mask)
    assert all(ids[i, 0] == tokenizer.start_token_id and ids[i, lengths[i] - 1] == tokenizer.end_token_id
               for i in range(2))
    assert np.all(embeddings[mask == 0] == 0)
    # Reference: pooled = projection(hidden state at end-of-text) of the raw keras-hub encoder.
    hidden = to_numpy(adapter.text_encoder({"token_ids": ids}))
    at_end = np.stack([hidden[i, lengths[i] - 1] for i in range(2)])
    np.testing.assert_allclose(pooled, to_numpy(adapter.projection(at_end)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(embeddings[mask == 1], hidden[mask == 1], rtol=1e-5, atol=1e-6)
    # Token ids without a mask: the mask is recovered from the end-of-text position.
    for a, b in zip((embeddings, mask, pooled), (to_numpy(x) for x in adapter(ids))):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_clip_adapter_round_trip_and_errors():
    tokenizer = clip_tokenizer()
    adapter = CLIPTextAdapter(small_clip(tokenizer), tokenizer, sequence_length=10)
    ids = adapter.tokenize(CAPTIONS)
    outputs = [to_numpy(x) for x in adapter(ids)]
    assert outputs[0].shape == (2, 10, 16) and outputs[2].shape == (2, 16)  # no projection: hidden width
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(adapter))
    assert isinstance(clone, CLIPTextAdapter) and clone.sequence_length == 10 and clone.tokenizer is None
    clone(ids)
    clone.set_weights(adapter.get_weights())
    for a, b in zip(outputs, (to_numpy(x) for x in clone(ids))):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="tokenizer"):
        clone(CAPTIONS)  # strings need a tokenizer
    with pytest.raises(ValueError, match="sequence_length"):
        CLIPTextAdapter(small_clip(tokenizer), tokenizer, sequence_length=20)
    with pytest.raises(TypeError, match="CLIPTextEncoder"):
        CLIPTextAdapter(keras.layers.Dense(3))
    with pytest.raises(RuntimeError, match="no_such_clip_preset.*SmallTextEncoder"):
        CLIPTextAdapter.from_preset("no_such_clip_preset")


def test_t5_adapter_contract_and_mask():
    tokenizer = t5_tokenizer()
    backbone = small_t5()
    adapter = T5TextAdapter(backbone, tokenizer, sequence_length=10)
    embeddings, mask, pooled = (to_numpy(x) for x in adapter(CAPTIONS))
    assert embeddings.shape == (2, 10, 16) and mask.shape == (2, 10) and pooled.shape == (2, 16)
    ids = adapter.tokenize(CAPTIONS)["token_ids"]
    lengths = [len(c.split()) + 1 for c in CAPTIONS]  # words + end token
    np.testing.assert_array_equal(mask, (np.arange(10)[None] < np.array(lengths)[:, None]).astype(np.float32))
    assert all(ids[i, lengths[i] - 1] == tokenizer.end_token_id for i in range(2))
    # Reference: the keras-hub backbone's own encoder output at the word positions, masked mean for pooled.
    reference = to_numpy(backbone({
        "encoder_token_ids": ids, "encoder_padding_mask": mask.astype(np.int32),
        "decoder_token_ids": np.zeros((2, 1), np.int32), "decoder_padding_mask": np.ones((2, 1), np.int32),
    })["encoder_sequence_output"])
    np.testing.assert_allclose(embeddings[mask == 1], reference[mask == 1], rtol=1e-5, atol=1e-5)
    assert np.all(embeddings[mask == 0] == 0)
    expected_pooled = np.stack([reference[i, : lengths[i]].mean(0) for i in range(2)])
    np.testing.assert_allclose(pooled, expected_pooled, rtol=1e-5, atol=1e-5)
    # Changing what sits in the padding does not change the caption's tokens.
    noisy = np.where(mask == 0, 5, ids).astype(np.int32)
    changed = to_numpy(adapter({"token_ids": noisy, "padding_mask": mask})[0])
    np.testing.assert_allclose(changed, embeddings, atol=1e-5)


# Slow (33 s on JAX); the T5 adapter keeps its contract test, and kv.text.T5Encoder its own round trip.
@pytest.mark.slow
def test_t5_adapter_round_trip_and_errors():
    adapter = T5TextAdapter(small_t5(), sequence_length=8)
    ids = np.array([[4, 5, 6, 1, 0, 0, 0, 0], [7, 1, 0, 0, 0, 0, 0, 0]], np.int32)
    outputs = [to_numpy(x) for x in adapter(ids)]
    np.testing.assert_array_equal(outputs[1], (ids != 0).astype(np.float32))  # mask from the pad id
    encoder_weights = len(adapter.weights)
    assert 0 < encoder_weights < len(small_t5().weights)  # the decoder is not kept
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(adapter))
    assert isinstance(clone, T5TextAdapter) and len(clone.weights) == encoder_weights
    clone.set_weights(adapter.get_weights())
    for a, b in zip(outputs, (to_numpy(x) for x in clone(ids))):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(TypeError, match="T5Backbone"):
        T5TextAdapter(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="token_ids"):
        adapter({"ids": ids})
    with pytest.raises(RuntimeError, match="no_such_t5_preset"):
        T5TextAdapter.from_preset("no_such_t5_preset")


def test_frozen_adapter_runs_in_inference_mode():
    backbone = keras_hub.models.T5Backbone(vocabulary_size=14, num_layers=1, num_heads=2, hidden_dim=16,
                                           intermediate_dim=32, dropout=0.5)
    adapter = T5TextAdapter(backbone, sequence_length=6)
    ids = np.array([[4, 5, 6, 1, 0, 0]], np.int32)
    inference = to_numpy(adapter(ids, training=False)[0])
    assert not np.allclose(to_numpy(adapter(ids, training=True)[0]), inference)  # dropout acts while trainable
    adapter.trainable = False
    np.testing.assert_allclose(to_numpy(adapter(ids, training=True)[0]), inference, atol=1e-6)
