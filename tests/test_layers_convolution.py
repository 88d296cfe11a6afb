"""PseudoConv3D, CausalConv3D, TemporalMix against numpy references of the same formulas."""

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_vdiff.layers.convolution import CausalConv3D, PseudoConv3D, TemporalMix, apply_per_frame

B, F, H, W, C, FILTERS = 2, 4, 6, 6, 3, 5
TOL = 1e-5  # float32 sums of at most 3*3*3*5 products of O(1) values


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _randomise(layer, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    layer.set_weights([scale * rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()])


def conv2d_same(x, kernel, bias):
    """numpy 'same' stride-1 2D convolution of images (N, H, W, Cin) with kernel (kh, kw, Cin, Cout)."""
    kh, kw = kernel.shape[:2]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += padded[:, i : i + x.shape[1], j : j + x.shape[2]] @ kernel[i, j]
    return out + bias


def conv1d_over_frames(video, kernel, bias, pad_before, pad_after):
    """numpy convolution over axis 1 of (B, F, H, W, C) with kernel (k, Cin, Cout) and zero padding."""
    k = kernel.shape[0]
    padded = np.pad(video, ((0, 0), (pad_before, pad_after), (0, 0), (0, 0), (0, 0)))
    frames = padded.shape[1] - k + 1
    out = np.zeros((video.shape[0], frames) + video.shape[2:4] + (kernel.shape[-1],), np.float64)
    for tap in range(k):
        out += padded[:, tap : tap + frames] @ kernel[tap]
    return out + bias


@pytest.fixture(scope="module")
def video():
    return _rand(B, F, H, W, C)


def test_pseudo_conv3d_starts_as_the_2d_convolution_on_every_frame(video):
    conv = PseudoConv3D(FILTERS, kernel_size=3, temporal_kernel_size=3)
    conv.build(video.shape)
    conv.spatial.set_weights([_rand(3, 3, C, FILTERS, seed=1), _rand(FILTERS, seed=2)])
    kernel, bias = conv.spatial.get_weights()
    expected = conv2d_same(video.reshape(-1, H, W, C), kernel, bias).reshape(B, F, H, W, FILTERS)
    np.testing.assert_allclose(to_numpy(conv(video)), expected, atol=TOL)
    temporal_kernel, temporal_bias = conv.temporal_conv.get_weights()
    np.testing.assert_array_equal(temporal_kernel[1], np.eye(FILTERS))
    assert not temporal_kernel[[0, 2]].any() and not temporal_bias.any()


def test_pseudo_conv3d_is_2d_then_1d_over_frames(video):
    conv = PseudoConv3D(FILTERS, kernel_size=3, temporal_kernel_size=3)
    conv.build(video.shape)
    _randomise(conv, seed=3)
    kernel, bias, temporal_kernel, temporal_bias = conv.get_weights()
    spatial = conv2d_same(video.reshape(-1, H, W, C), kernel, bias).reshape(B, F, H, W, FILTERS)
    expected = conv1d_over_frames(spatial, temporal_kernel, temporal_bias, 1, 1)
    np.testing.assert_allclose(to_numpy(conv(video)), expected, atol=TOL)
    # an image gets the 2D convolution only
    np.testing.assert_allclose(to_numpy(conv(video[:, 0])), spatial[:, 0], atol=TOL)


def test_pseudo_conv3d_temporal_mask_keeps_frames_apart(video):
    conv = PseudoConv3D(FILTERS, temporal_kernel_size=3)
    conv.build(video.shape)
    _randomise(conv, seed=4)
    changed = video.copy()
    changed[:, 2] += 1.0
    mask = np.array([1.0, 0.0], "float32")
    effect = np.abs(to_numpy(conv(changed, temporal_mask=mask)) - to_numpy(conv(video, temporal_mask=mask)))
    effect = effect.max(axis=(2, 3, 4))  # (B, F)
    assert effect[0, [1, 3]].min() > 1e-3, "a video sample (mask 1) mixes neighbouring frames"
    assert effect[1, [0, 1, 3]].max() == 0.0, "an image sample (mask 0) keeps its frames independent"
    # mask 1 everywhere is the unmasked layer
    np.testing.assert_allclose(
        to_numpy(conv(video, temporal_mask=np.ones(B, "float32"))), to_numpy(conv(video)), atol=TOL
    )


@pytest.mark.parametrize("temporal_padding", ["zeros", "replicate"])
def test_causal_conv3d_matches_numpy_and_never_looks_ahead(video, temporal_padding):
    conv = CausalConv3D(FILTERS, kernel_size=(3, 3, 3), temporal_padding=temporal_padding)
    conv.build(video.shape)
    _randomise(conv, seed=5)
    kernel, bias = conv.get_weights()  # (kt, kh, kw, Cin, Cout)
    source = video
    if temporal_padding == "replicate":
        source = np.concatenate([video[:, :1], video[:, :1], video], axis=1)
    else:
        source = np.pad(video, ((0, 0), (2, 0), (0, 0), (0, 0), (0, 0)))
    expected = 0.0
    for tap in range(3):
        frames = source[:, tap : tap + F].reshape(-1, H, W, C)
        expected = expected + conv2d_same(frames, kernel[tap], 0.0).reshape(B, F, H, W, FILTERS)
    expected = expected + bias
    out = to_numpy(conv(video))
    np.testing.assert_allclose(out, expected, atol=TOL)
    for t in range(F - 1):
        future = video.copy()
        future[:, t + 1 :] = _rand(B, F - t - 1, H, W, C, seed=10 + t)
        changed = to_numpy(conv(future))
        np.testing.assert_array_equal(changed[:, : t + 1], out[:, : t + 1])
        assert np.abs(changed[:, t + 1] - out[:, t + 1]).max() > 1e-3


@pytest.mark.parametrize("temporal_padding", ["zeros", "replicate"])
def test_causal_conv3d_in_chunks_with_context_equals_the_whole_video(video, temporal_padding):
    """Chunks of 1 and F - 1 frames (shorter and longer than the 2-frame context), each given ``next_context``
    of the one before, give the outputs of the whole video."""
    conv = CausalConv3D(FILTERS, kernel_size=(3, 3, 3), temporal_padding=temporal_padding)
    conv.build(video.shape)
    _randomise(conv, seed=6)
    whole = to_numpy(conv(video))
    context, parts = None, []
    for start, end in ((0, 1), (1, F)):
        chunk = video[:, start:end]
        parts.append(to_numpy(conv(chunk, context=context)))
        context = conv.next_context(chunk, context)
        assert tuple(context.shape) == (B, 2, H, W, C)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, atol=TOL)
    assert CausalConv3D(FILTERS, kernel_size=1).next_context(video) is None


def test_causal_conv3d_strides_and_dilation_shapes(video):
    conv = CausalConv3D(FILTERS, kernel_size=3, strides=2)
    out = conv(video)
    assert tuple(out.shape) == (B, F, 3, 3, FILTERS) == conv.compute_output_shape(video.shape)
    dilated = CausalConv3D(FILTERS, kernel_size=3, dilation_rate=2)
    assert dilated._paddings()[0] == (4, 0)
    assert tuple(dilated(video).shape) == (B, F, H, W, FILTERS)


def test_temporal_mix_is_the_video_ldm_blend():
    spatial, temporal = _rand(B, F, 2, 2, C, seed=6), _rand(B, F, 2, 2, C, seed=7)
    mix = TemporalMix(mix_init=1.5)
    alpha = 1.0 / (1.0 + np.exp(-1.5))
    np.testing.assert_allclose(to_numpy(mix(spatial, temporal)), alpha * spatial + (1 - alpha) * temporal, atol=TOL)
    out = to_numpy(mix(spatial, temporal, temporal_mask=np.array([1.0, 0.0], "float32")))
    np.testing.assert_allclose(out[0], alpha * spatial[0] + (1 - alpha) * temporal[0], atol=TOL)
    np.testing.assert_allclose(out[1], spatial[1], atol=TOL)
    assert len(mix.trainable_weights) == 1


def test_apply_per_frame_folds_frames_into_the_batch(video):
    dense = keras.layers.Dense(4)
    out = to_numpy(apply_per_frame(dense, video))
    np.testing.assert_allclose(out[:, 2], to_numpy(dense(video[:, 2])), atol=TOL)
    with pytest.raises(ValueError, match="image"):
        apply_per_frame(dense, np.zeros((2, 3, 4), "float32"))


@pytest.mark.parametrize(
    "layer",
    [
        PseudoConv3D(8, kernel_size=3, temporal_kernel_size=5, strides=2, use_bias=False),
        PseudoConv3D(8, temporal=False),
        CausalConv3D(8, kernel_size=(3, 1, 1), dilation_rate=2, temporal_padding="replicate"),
        TemporalMix(mix_init=-2.0),
    ],
    ids=["pseudo3d", "pseudo3d-spatial-only", "causal", "mix"],
)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert restored.get_config() == config


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="temporal_kernel_size"):
        PseudoConv3D(8, temporal_kernel_size=2)
    with pytest.raises(ValueError, match="filters"):
        PseudoConv3D(0)
    with pytest.raises(ValueError, match="temporal_padding"):
        CausalConv3D(8, temporal_padding="reflect")
    with pytest.raises(ValueError, match="kernel_size"):
        CausalConv3D(8, kernel_size=(3, 3))
    with pytest.raises(ValueError, match="dilation_rate"):
        CausalConv3D(8, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="video"):
        CausalConv3D(8).build((2, 8, 8, 3))
