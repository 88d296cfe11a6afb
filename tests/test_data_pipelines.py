"""VideoBatches and precompute_text: batches for fit from a dict of numpy arrays; on TensorFlow, fit reads them
as a tf.data pipeline in the same order, without autotuning."""

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_vdiff.data.pipelines import TEXT_KEYS, VideoBatches, fit_input, precompute_text, to_tf_dataset
from keras_vdiff.text.small_text_encoder import SmallTextEncoder
from keras_vdiff.text.word_tokenizer import WordTokenizer

CAPTIONS = ["The digit 1 is moving up and down", "The digit 2 is moving left and right", "The digit 3 is moving to and fro"]


def make_data(n=10):
    videos = np.arange(n, dtype=np.uint8)[:, None, None, None, None] * np.ones((1, 2, 4, 4, 1), np.uint8)
    return {"videos": videos, "captions": [CAPTIONS[i % 3] for i in range(n)], "labels": np.arange(n) % 3}


def test_batches_cover_every_video_once_per_epoch_and_reshuffle():
    data = make_data(10)
    tokenizer = WordTokenizer.from_texts(CAPTIONS)
    batches = VideoBatches(data, batch_size=4, tokenizer=tokenizer, seed=0)
    assert len(batches) == 3 and batches.keys == ["videos", "labels", "captions"]
    epochs = []
    for _ in range(2):
        seen = [batches[i] for i in range(len(batches))]
        ids = np.concatenate([b["videos"][:, 0, 0, 0, 0] for b in seen])
        assert sorted(ids.tolist()) == list(range(10))  # each video once
        for batch in seen:  # rows stay aligned across keys
            rows = batch["videos"][:, 0, 0, 0, 0]
            np.testing.assert_array_equal(batch["labels"], rows % 3)
            np.testing.assert_array_equal(batch["captions"], tokenizer([CAPTIONS[r % 3] for r in rows]))
            assert batch["captions"].dtype == np.int32
        epochs.append(ids)
        batches.on_epoch_end()
    assert not np.array_equal(epochs[0], epochs[1])
    assert len(VideoBatches(data, batch_size=4, drop_remainder=True)) == 2
    with pytest.raises(IndexError):
        batches[3]


def test_fit_consumes_the_batches():
    inputs = keras.Input((2, 4, 4, 1))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Pairs(VideoBatches):  # a plain model takes (x, y); VideoDiffusion takes the dict itself
        def __getitem__(self, index):
            batch = super().__getitem__(index)
            return batch["videos"].astype("float32"), batch["labels"]

    history = model.fit(Pairs(make_data(12), batch_size=4, keys=["videos", "labels"]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_tf_dataset_holds_the_same_rows_reshuffles_and_feeds_fit():
    data = make_data(10)
    tokenizer = WordTokenizer.from_texts(CAPTIONS)
    dataset = to_tf_dataset(data, batch_size=4, tokenizer=tokenizer, seed=0)
    epochs = []
    for _ in range(2):
        batches = [{k: v.numpy() for k, v in batch.items()} for batch in dataset]
        assert [len(b["videos"]) for b in batches] == [4, 4, 2]
        rows = np.concatenate([b["videos"][:, 0, 0, 0, 0] for b in batches])
        assert sorted(rows.tolist()) == list(range(10))
        for batch in batches:  # keys stay aligned, captions are token ids
            ids = batch["videos"][:, 0, 0, 0, 0]
            np.testing.assert_array_equal(batch["labels"], ids % 3)
            np.testing.assert_array_equal(batch["captions"], tokenizer([CAPTIONS[r % 3] for r in ids]))
        epochs.append(rows)
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
    assert [len(b["videos"]) for b in to_tf_dataset(data, 4, drop_remainder=True, shuffle=False)] == [4, 4]

    inputs = keras.Input((2, 4, 4, 1))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    import tensorflow as tf  # inside tf.data only tf ops run, whatever the Keras backend

    pairs = to_tf_dataset(make_data(12), 4, keys=["videos", "labels"]).map(
        lambda b: (tf.cast(b["videos"], "float32"), b["labels"]))
    assert np.isfinite(model.fit(pairs, epochs=1, verbose=0).history["loss"][0])


@pytest.mark.parametrize("drop_remainder,batch_dim", [(False, None), (True, 4)])
def test_video_batches_pipeline_gives_the_sequence_batches_in_order_without_autotuning(drop_remainder, batch_dim):
    tokenizer = WordTokenizer.from_texts(CAPTIONS)
    batches = VideoBatches(make_data(10), batch_size=4, tokenizer=tokenizer, drop_remainder=drop_remainder, seed=3)
    twin = VideoBatches(make_data(10), batch_size=4, tokenizer=tokenizer, drop_remainder=drop_remainder, seed=3)
    dataset = batches.to_tf_dataset()
    assert not dataset.options().autotune.enabled
    assert int(dataset.cardinality()) == len(batches)
    assert dataset.element_spec["videos"].shape.as_list() == [batch_dim, 2, 4, 4, 1]
    orders = []
    for _ in range(2):  # an epoch per iteration, each in the order the sequence gives, reshuffled after it
        expected = [twin[i] for i in range(len(twin))]
        twin.on_epoch_end()
        got = [{key: value.numpy() for key, value in batch.items()} for batch in dataset]
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert sorted(a) == sorted(b)
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
        orders.append(np.concatenate([b["videos"][:, 0, 0, 0, 0] for b in got]))
    assert not np.array_equal(orders[0], orders[1])


def test_fit_input_is_the_pipeline_on_tensorflow_only():
    batches = VideoBatches(make_data(8), batch_size=4)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        assert isinstance(fit_input(batches), tf.data.Dataset)
    else:
        assert fit_input(batches) is batches
    data = make_data(8)
    assert fit_input(data) is data  # arrays and foreign datasets go to fit as they are
    kwargs, explicit = {}, {"shuffle": True}
    fit_input(batches, kwargs), fit_input(batches, explicit)
    assert kwargs == ({"shuffle": False} if keras.backend.backend() == "tensorflow" else {})
    assert explicit == {"shuffle": True}  # the caller's choice stays (Keras then says it ignores it)


def test_precompute_text_matches_the_encoder():
    encoder = SmallTextEncoder.from_texts(CAPTIONS, hidden_dim=32, num_layers=2, num_heads=4, sequence_length=10)
    data = precompute_text(make_data(7), encoder)  # 3 distinct captions, encoded once each
    direct = [to_numpy(x) for x in encoder(data["captions"])]
    for key, value in zip(TEXT_KEYS, direct):
        np.testing.assert_allclose(data[key], value, atol=1e-5)
    batches = VideoBatches(data, batch_size=3, shuffle=False)
    assert batches.keys == ["videos", "labels", *TEXT_KEYS]
    assert batches[0]["text_embeddings"].shape == (3, encoder.sequence_length, 32)


def test_bad_input():
    with pytest.raises(ValueError, match="videos"):
        VideoBatches({"labels": np.zeros(3)})
    with pytest.raises(ValueError, match="tokenizer"):
        VideoBatches(make_data(), keys=["videos", "captions"])
    with pytest.raises(ValueError, match="entries"):
        VideoBatches({"videos": np.zeros((3, 1, 2, 2, 1)), "labels": np.zeros(2)})
    with pytest.raises(ValueError, match="batch_size"):
        VideoBatches(make_data(), batch_size=0)
    with pytest.raises(ValueError, match="captions"):
        precompute_text({"videos": np.zeros((1, 1, 2, 2, 1))}, None)
