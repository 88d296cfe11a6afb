"""Native sizes (Sora, seed 004 §5.3): backbones at any shape with the same weights, bucketed batches, packing."""

import keras
import numpy as np
import pytest

import keras_vdiff as kv
from keras_vdiff.layers.attention import Attention
from keras_vdiff.layers.embeddings import rope_frequencies
from keras_vdiff.layers.packing import block_diagonal_mask, pack_tokens, unpack_tokens
from keras_vdiff.models.native_sizes import prepared_shapes
from keras_vdiff.models.video_dit import axial_positions


def randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign((0.2 * rng.standard_normal(weight.shape)).astype(weight.dtype))
    return model


def inputs_for(model, latent_shape, seed=1, batch=2):
    rng = np.random.default_rng(seed)
    x = {"latents": rng.standard_normal((batch,) + tuple(latent_shape)).astype("float32"),
         "timesteps": np.array([3.0, 700.0][:batch], "float32")}
    if model.conditioning == "class":
        x["class_labels"] = np.array([1, 2][:batch], "int32")
    if model.conditioning == "text":
        x["text_embeddings"] = rng.standard_normal((batch, 5, model.text_dim)).astype("float32")
        x["text_mask"] = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]][:batch], "float32")
        x["pooled_text"] = rng.standard_normal((batch, model.text_dim)).astype("float32")
    return x


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


LATTE = dict(patch_size=2, hidden_dim=24, num_layers=2, num_heads=2, learn_sigma=False)
FAMILIES = {
    "latte_v1_sincos_class": (kv.models.Latte, dict(LATTE, input_shape=(2, 4, 4, 1), conditioning="class",
                                                    num_classes=3), (3, 4, 6, 1)),
    "latte_v3_rope_text": (kv.models.Latte, dict(LATTE, input_shape=(2, 4, 4, 1), variant=3, conditioning="text",
                                                 text_dim=8, temporal_position="rope"), (4, 6, 4, 1)),
    "video_dit_rope_joint": (kv.models.VideoDiT, dict(input_shape=(2, 4, 4, 1), patch_size=2, hidden_dim=24,
                                                      num_layers=1, num_heads=2, conditioning="text", text_dim=8,
                                                      text_mode="joint", position="rope", learn_sigma=False),
                             (3, 4, 6, 1)),
    "video_dit_sincos": (kv.models.VideoDiT, dict(input_shape=(2, 4, 4, 1), patch_size=2, hidden_dim=24,
                                                  num_layers=1, num_heads=2, conditioning=None, learn_sigma=False),
                         (1, 6, 4, 1)),
    "gentron": (kv.models.GenTron, dict(input_shape=(2, 4, 4, 1), patch_size=2, hidden_dim=16, num_layers=1,
                                        num_heads=2, text_dim=8, learn_sigma=False), (3, 4, 6, 1)),
    "dit": (kv.models.DiT, dict(image_size=4, in_channels=1, patch_size=2, hidden_dim=16, num_layers=1,
                                num_heads=2, num_classes=3, learn_sigma=False), (4, 6, 1)),
}


SLOW_FAMILIES = ("gentron", "video_dit_sincos")  # the same code path as the fast ones, other layer mixes


@pytest.mark.parametrize("family", [f if f not in SLOW_FAMILIES else pytest.param(f, marks=pytest.mark.slow)
                                    for f in sorted(FAMILIES)])
def test_a_backbone_runs_at_two_shapes_with_the_same_weights(family):
    cls, config, other = FAMILIES[family]
    model = randomized(cls(**config))
    trained = tuple(model.latent_shape)
    assert model.at_shape(trained) is model  # the training shape runs the backbone's own graph
    x = inputs_for(model, trained)
    np.testing.assert_array_equal(numpy(model(x)), numpy(model.at_shape(trained)(x)))

    # At another shape: the same result as a backbone built for that shape with these weights.
    y = inputs_for(model, other, seed=2)
    out = numpy(model(y))
    assert out.shape == (2,) + other[:-1] + (model.out_channels,)
    shape_key = "image_size" if cls is kv.models.DiT else "input_shape"
    reference = cls(**dict(config, **{shape_key: other[:-1] if cls is kv.models.DiT else other}))
    reference.set_weights(model.get_weights())
    np.testing.assert_allclose(out, numpy(reference(y)), atol=1e-5, rtol=1e-5)
    # The graph at that shape holds the backbone's variables themselves (training it trains the backbone).
    graph = model.at_shape(other)
    assert {id(v) for v in graph.weights} == {id(v) for v in model.weights}
    assert model.at_shape(other) is graph  # built once per shape
    assert len(model.weights) == len(reference.weights)  # no copy of the weights on the backbone


def test_the_shape_graphs_leave_the_preset_unchanged(tmp_path):
    cls, config, other = FAMILIES["latte_v1_sincos_class"]
    model = randomized(cls(**config))
    model.at_shape(other)
    model.save_to_preset(str(tmp_path / "preset"))
    loaded = kv.models.Latte.from_preset(str(tmp_path / "preset"))
    assert loaded.get_config() == model.get_config()
    y = inputs_for(model, other)
    np.testing.assert_array_equal(numpy(loaded(y)), numpy(model(y)))


def test_bad_shapes_raise_naming_the_size():
    cls, config, _ = FAMILIES["latte_v1_sincos_class"]
    model = cls(**config)
    with pytest.raises(ValueError, match="divisible by `patch_size`=2"):
        model.at_shape((2, 4, 5))
    with pytest.raises(ValueError, match="divisible by `patch_size`=2"):
        model(inputs_for(model, (2, 6, 3, 1)))
    with pytest.raises(ValueError, match="channels"):
        model.at_shape((2, 4, 4, 3))
    with pytest.raises(ValueError, match="frames, height, width"):
        model.at_shape((4, 4))
    unet = kv.models.UNet2D.from_preset("unet2d_tiny")  # its graph is fixed at construction
    height, width, _ = unet.latent_shape
    with pytest.raises(ValueError, match="cannot run at"):
        unet.at_shape((2 * height, width))


def bucket_data():
    rng = np.random.default_rng(0)
    square = {"videos": rng.integers(0, 255, (7, 2, 4, 4, 1)).astype("uint8"), "labels": np.arange(7) % 3}
    wide = {"videos": rng.integers(0, 255, (5, 2, 4, 6, 1)).astype("uint8"), "labels": np.arange(5) % 3}
    return square, wide


def test_bucketed_batches_have_one_shape_each_and_cover_every_video():
    square, wide = bucket_data()
    batches = kv.data.BucketedBatches([square, wide], batch_size=3, seed=4)
    assert batches.video_shapes == [(2, 4, 4, 1), (2, 4, 6, 1)]
    for epoch in range(2):
        seen = {shape: [] for shape in batches.video_shapes}
        shapes = []
        for index in range(len(batches)):
            batch = batches[index]
            assert len({tuple(v.shape) for v in batch["videos"]}) == 1  # one shape per batch
            shape = tuple(batch["videos"].shape[1:])
            shapes.append(shape)
            seen[shape].extend(batch["videos"].reshape(len(batch["videos"]), -1).tolist())
            assert len(batch["labels"]) == len(batch["videos"])
        assert set(shapes[:2]) == set(batches.video_shapes)  # the first batches show every shape
        for data in (square, wide):
            shape = tuple(data["videos"].shape[1:])
            assert sorted(seen[shape]) == sorted(data["videos"].reshape(len(data["videos"]), -1).tolist())
        batches.on_epoch_end()
    assert len(batches) == 3 + 2

    # One dict of single videos of mixed shapes is grouped by shape.
    mixed = {"videos": list(square["videos"][:3]) + list(wide["videos"][:2]), "labels": np.array([0, 1, 2, 0, 1])}
    grouped = kv.data.BucketedBatches(mixed, batch_size=2, shuffle=False)
    assert grouped.video_shapes == [(2, 4, 4, 1), (2, 4, 6, 1)]
    assert sorted(len(grouped[i]["videos"]) for i in range(len(grouped))) == [1, 2, 2]
    with pytest.raises(ValueError, match="videos"):
        kv.data.BucketedBatches([{"labels": np.zeros(3)}])


def test_bucketed_batches_as_tf_dataset_leave_the_varying_size_free():
    pytest.importorskip("tensorflow")
    batches = kv.data.BucketedBatches(list(bucket_data()), batch_size=3, drop_remainder=True)
    dataset = batches.to_tf_dataset()
    assert tuple(dataset.element_spec["videos"].shape) == (None, 2, 4, None, 1)
    shapes = [tuple(batch["videos"].shape) for batch in dataset]
    assert sorted(shapes) == [(3, 2, 4, 4, 1), (3, 2, 4, 4, 1), (3, 2, 4, 6, 1)]


def bucket_model():
    backbone = kv.models.Latte(input_shape=(2, 4, 4, 1), patch_size=2, hidden_dim=16, num_layers=2, num_heads=2,
                               conditioning="class", num_classes=3, learn_sigma=False)
    return kv.VideoDiffusion(backbone, kv.diffusion.GaussianDiffusion("cosine"), seed=0)


def test_the_loss_of_a_batch_of_each_shape():
    model = bucket_model()
    batches = kv.data.BucketedBatches(list(bucket_data()), batch_size=3, drop_remainder=True, shuffle=False)
    for index in range(2):  # one batch of each shape
        loss = numpy(model.compute_loss(x={k: keras.ops.convert_to_tensor(v) for k, v in batches[index].items()}))
        assert loss.shape == () and np.isfinite(loss) and loss > 0
    with pytest.raises(ValueError, match="patch_size"):
        model.compute_loss(x={"videos": np.zeros((1, 2, 4, 5, 1), "uint8"), "labels": np.zeros(1, "int32")})


def test_tensorflow_graph_branches_on_the_runtime_shape():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only a TensorFlow graph has latents of unknown height / width")
    import tensorflow as tf

    cls, config, other = FAMILIES["latte_v1_sincos_class"]
    model = randomized(cls(**config))
    model.at_shape(other[:-1])
    signature = {"latents": tf.TensorSpec((None, None, 4, None, 1)), "timesteps": tf.TensorSpec((None,)),
                 "class_labels": tf.TensorSpec((None,), tf.int32)}
    traced = tf.function(lambda x: model(x), input_signature=[signature])
    for shape in (tuple(model.latent_shape), other):
        x = inputs_for(model, shape)
        np.testing.assert_allclose(numpy(traced(x)), numpy(model(x)), atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at_shape"):
        traced(inputs_for(model, (2, 4, 8, 1)))  # a shape that was not prepared


@pytest.mark.slow
def test_fit_on_buckets_trains_the_shared_weights():
    model = bucket_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    batches = kv.data.BucketedBatches(list(bucket_data()), batch_size=3, drop_remainder=True)
    before = [numpy(w) for w in model.backbone.trainable_weights]
    history = model.fit(batches, epochs=1, verbose=0)  # TensorFlow: one traced step branching on the shape
    assert np.isfinite(history.history["loss"]).all()
    changed = [not np.allclose(a, numpy(w)) for a, w in zip(before, model.backbone.trainable_weights)]
    assert np.mean(changed) > 0.8  # (a few zero-initialised paths may still have zero gradients)
    assert sorted(prepared_shapes(model.backbone)) == [(2, 4, 4, 1), (2, 4, 6, 1)]


def test_generate_at_a_native_frame_size():
    model = bucket_model()
    wide = model.generate(labels=[0, 2], frame_size=(4, 6), steps=1, seed=1, compile=False)
    assert wide.shape == (2, 2, 4, 6, 1)
    with pytest.raises(ValueError, match="patch_size"):
        model.generate(labels=[0], frame_size=(4, 5), steps=1)
    with pytest.raises(ValueError, match="frame_size"):
        model.generate(labels=[0], frame_size=(4, 6, 2), steps=1)


@pytest.mark.slow
def test_fit_on_buckets_and_generate_at_both_shapes():
    model = bucket_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(kv.data.BucketedBatches(list(bucket_data()), batch_size=3, drop_remainder=True), epochs=2, verbose=0)
    wide = model.generate(labels=[0, 2], frame_size=(4, 6), steps=2, seed=1)
    square = model.generate(labels=[0, 2], steps=2, seed=1)
    assert wide.shape == (2, 2, 4, 6, 1) and square.shape == (2, 2, 4, 4, 1)
    with pytest.raises(ValueError, match="patch_size"):
        model.generate(labels=[0], frame_size=(4, 5), steps=2)


def test_packed_attention_equals_attention_per_video():
    rng = np.random.default_rng(0)
    attention = Attention(num_heads=2, head_dim=6)
    head_dim = 6
    grids = [(2, 2, 3), (1, 4, 2)]  # two videos of different shapes: (frames, rows, cols)
    tokens = [rng.standard_normal((f * r * c, 12)).astype("float32") for f, r, c in grids]
    angles = [rope_frequencies(axial_positions(*grid), head_dim) for grid in grids]
    attention(tokens[0][None])  # build
    for w in attention.weights:
        w.assign(rng.standard_normal(w.shape).astype("float32") * 0.3)
    separate = [numpy(attention(t[None], rope=a))[0] for t, a in zip(tokens, angles)]
    lengths = [len(t) for t in tokens]
    for length in (None, sum(lengths) + 5):  # exactly packed, and padded to a fixed length
        packed, segments = pack_tokens(tokens, length=length)
        packed_angles, _ = pack_tokens(angles, length=length)
        out = attention(packed, mask=block_diagonal_mask(segments), rope=packed_angles[0])
        for a, b in zip(unpack_tokens(out, lengths), separate):
            np.testing.assert_allclose(numpy(a), b, atol=1e-5, rtol=1e-5)
        if length is not None:
            np.testing.assert_array_equal(numpy(out)[0, sum(lengths):], 0.0)  # padding attends to nothing
    mask = numpy(block_diagonal_mask(pack_tokens(tokens)[1]))[0]
    assert mask.sum() == sum(n * n for n in lengths)
    with pytest.raises(ValueError, match="shorter"):
        pack_tokens(tokens, length=3)
    with pytest.raises(ValueError, match="trailing shape"):
        pack_tokens([tokens[0], angles[0]])


def test_moving_mnist_of_another_aspect_ratio():
    data = kv.data.moving_mnist(12, frame_size=(16, 24), num_frames=10, digits_source="sklearn", seed=3)
    videos = data["videos"][..., 0].astype("float32")
    assert data["videos"].shape == (12, 10, 16, 24, 1)
    weight = videos.sum(axis=(2, 3)) + 1e-6
    rows = (videos.sum(axis=3) * np.arange(16)).sum(axis=2) / weight  # (N, F) centre of mass
    cols = (videos.sum(axis=2) * np.arange(24)).sum(axis=2) / weight
    for k, motion in enumerate(data["motions"]):
        row_span, col_span = np.ptp(rows[k]), np.ptp(cols[k])
        if kv.data.MOTIONS[motion] == "left and right":
            assert col_span > 4 and row_span < 1.5
        elif kv.data.MOTIONS[motion] == "up and down":
            assert row_span > 3 and col_span < 1.5
    horizontal = data["motions"] == kv.data.MOTIONS.index("left and right")
    assert cols[horizontal].max() > 16 and cols[horizontal].min() < 8  # they use the whole width of 24
    assert rows.max() < 12  # the height stays 16
    square = kv.data.moving_mnist(4, frame_size=(16, 16), digits_source="sklearn", seed=5)["videos"]
    np.testing.assert_array_equal(square, kv.data.moving_mnist(4, frame_size=16, digits_source="sklearn",
                                                               seed=5)["videos"])
    with pytest.raises(ValueError, match="frame_size"):
        kv.data.moving_mnist(2, frame_size=(16, 0))
