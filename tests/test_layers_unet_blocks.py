"""U-Net blocks: ResBlock, resampling, spatial / temporal attention, condition embedding (numpy references)."""

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_vdiff.models.unet import (
    Downsample,
    ResBlock,
    SpatialAttention,
    TemporalAttention,
    UNetConditionEmbedding,
    Upsample,
    relative_position_buckets,
)
from test_layers_convolution import conv1d_over_frames, conv2d_same

B, F, H, W, C, EMB = 2, 3, 4, 4, 8, 12
TOL = 1e-4  # float32 GroupNorm / softmax statistics against float64 numpy


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _randomise(layer, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    layer.set_weights([scale * rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()])


def silu(x):
    return x / (1.0 + np.exp(-x))


def group_norm(x, groups, gamma, beta, eps=1e-5):
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * gamma + beta


def layer_norm(x, gamma, beta, eps=1e-5):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def video():
    return _rand(B, F, H, W, C)


@pytest.fixture(scope="module")
def emb():
    return _rand(B, EMB, seed=1)


# --- ResBlock -----------------------------------------------------------------------------------


def resblock_reference(block, x, emb, groups):
    """numpy DDPM / ADM residual block on images (N, H, W, C) with the block's weights."""
    k1, b1 = block.conv_1.get_weights()
    k2, b2 = block.conv_2.get_weights()
    we, be = block.embedding_projection.get_weights()
    h = conv2d_same(silu(group_norm(x, groups, *block.norm_1.get_weights())), k1, b1)
    e = (silu(emb) @ we + be)[:, None, None, :]
    if block.embedding_mode == "scale_shift":
        scale, shift = np.split(e, 2, axis=-1)
        h = group_norm(h, groups, *block.norm_2.get_weights()) * (1 + scale) + shift
    else:
        h = group_norm(h + e, groups, *block.norm_2.get_weights())
    h = conv2d_same(silu(h), k2, b2)
    skip = x if block.skip is None else x @ block.skip.get_weights()[0][0, 0] + block.skip.get_weights()[1]
    return skip + h


@pytest.mark.parametrize("embedding_mode", ["scale_shift", "add"])
def test_resblock_matches_numpy(video, emb, embedding_mode):
    block = ResBlock(16, norm_groups=4, embedding_mode=embedding_mode)
    images = video[:, 0]
    block.build(images.shape, emb.shape)
    _randomise(block, seed=2)
    expected = resblock_reference(block, images, emb, groups=4)
    np.testing.assert_allclose(to_numpy(block(images, emb)), expected, atol=TOL)


def test_resblock_starts_as_its_skip_and_takes_videos(video, emb):
    block = ResBlock(C, norm_groups=4)
    out = to_numpy(block(video, emb))
    np.testing.assert_array_equal(out, video)  # zero-initialised second convolution, identity skip
    assert out.shape == block.compute_output_shape(video.shape, emb.shape)


def test_pseudo3d_resblock_starts_as_the_image_block_per_frame(video, emb):
    image_block = ResBlock(16, norm_groups=4)
    image_block.build(video[:, 0].shape, emb.shape)
    _randomise(image_block, seed=3)
    video_block = ResBlock(16, norm_groups=4, conv_type="pseudo3d")
    video_block.build(video.shape, emb.shape)
    video_block.load_image_weights(image_block)
    out = to_numpy(video_block(video, emb))
    for f in range(F):
        np.testing.assert_allclose(out[:, f], to_numpy(image_block(video[:, f], emb)), atol=1e-5)
    # with trained temporal convolutions the frames interact, except for samples with temporal mask 0
    for conv in (video_block.conv_1, video_block.conv_2):
        _randomise(conv.temporal_conv, seed=4)
    changed = video.copy()
    changed[:, 1] += _rand(B, H, W, C, seed=5)
    mask = np.array([1.0, 0.0], "float32")
    effect = np.abs(to_numpy(video_block(changed, emb, mask)) - to_numpy(video_block(video, emb, mask)))
    effect = effect.max(axis=(2, 3, 4))
    assert effect[0, [0, 2]].min() > 1e-4
    assert effect[1, [0, 2]].max() == 0.0


# --- resampling ---------------------------------------------------------------------------------


def test_downsample_and_upsample_shapes(video):
    down, up = Downsample(filters=6, temporal=True), Upsample(filters=6, temporal=True)
    assert tuple(down(video).shape) == (B, 2, H // 2, W // 2, 6) == down.compute_output_shape(video.shape)
    assert tuple(up(video).shape) == (B, 2 * F, 2 * H, 2 * W, 6) == up.compute_output_shape(video.shape)
    assert tuple(down(video[:, 0]).shape) == (B, H // 2, W // 2, 6)  # images: spatial only
    assert Downsample().compute_output_shape(video.shape) == (B, F, H // 2, W // 2, C)
    assert Upsample().compute_output_shape(video.shape) == (B, F, 2 * H, 2 * W, C)
    with pytest.raises(ValueError, match="spatial"):
        Downsample(spatial=False, temporal=False)


def test_temporal_resampling_matches_numpy(video):
    down = Downsample(spatial=False, temporal=True)
    down.build(video.shape)
    _randomise(down, seed=6)
    kernel, bias = down.temporal_conv.get_weights()
    # stride-2 "same" padding over 3 frames with a 3-tap kernel: pad 1 before, 1 after, keep frames 0, 2
    expected = conv1d_over_frames(video, kernel, bias, 1, 1)[:, ::2]
    np.testing.assert_allclose(to_numpy(down(video)), expected, atol=1e-5)
    up = Upsample(spatial=False, temporal=True)
    up.build(video.shape)
    _randomise(up, seed=7)
    kernel, bias = up.temporal_conv.get_weights()
    expected = conv1d_over_frames(np.repeat(video, 2, axis=1), kernel, bias, 1, 1)
    np.testing.assert_allclose(to_numpy(up(video)), expected, atol=1e-5)


# --- spatial attention --------------------------------------------------------------------------


def test_spatial_attention_is_per_frame_and_ignores_padded_text(video):
    text, mask = _rand(B, 5, 6, seed=8), np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], "float32")
    attention = SpatialAttention(num_heads=2, norm_groups=4, context_dim=6)
    np.testing.assert_array_equal(to_numpy(attention(video, text, mask)), video)  # zero-initialised outputs
    _randomise(attention, seed=9)
    out = to_numpy(attention(video, text, mask))
    changed = video.copy()
    changed[:, 1] += 1.0 + _rand(B, H, W, C, seed=10)
    effect = np.abs(to_numpy(attention(changed, text, mask)) - out).max(axis=(2, 3, 4))
    assert effect[:, [0, 2]].max() == 0.0 and effect[:, 1].min() > 1e-4
    padded = text.copy()
    padded[0, 3:] = 100.0  # padded tokens of sample 0
    np.testing.assert_allclose(to_numpy(attention(video, padded, mask)), out, atol=1e-5)
    other = text.copy()
    other[0, 0] += 1.0
    assert np.abs(to_numpy(attention(video, other, mask))[0] - out[0]).max() > 1e-4
    # each frame of a video equals the image block on that frame
    np.testing.assert_allclose(out[:, 2], to_numpy(attention(video[:, 2], text, mask)), atol=1e-5)
    with pytest.raises(ValueError, match="context"):
        attention(video)


# --- temporal attention -------------------------------------------------------------------------


def t5_bucket(relative, num_buckets, max_distance):
    """T5's bidirectional relative position bucket of key - query (transformers' T5Attention, written out)."""
    half = num_buckets // 2
    bucket = half if relative > 0 else 0
    n = abs(relative)
    exact = half // 2
    if n < exact:
        return bucket + n
    large = exact + int(np.log(n / exact) / np.log(max_distance / exact) * (half - exact))
    return bucket + min(large, half - 1)


def test_relative_position_buckets_follow_t5():
    for frames, buckets, distance in ((4, 8, 8), (16, 32, 32), (20, 8, 16)):
        table = relative_position_buckets(frames, buckets, distance)
        expected = [[t5_bucket(j - i, buckets, distance) for j in range(frames)] for i in range(frames)]
        np.testing.assert_array_equal(table, expected)


def temporal_attention_reference(layer, x):
    """numpy ``x + Out(Attn(LN(x)))`` over the frames of every pixel, with the T5 bias."""
    b, f, h, w, c = x.shape
    heads, hd = layer.num_heads, layer.inner_head_dim
    seq = x.transpose(0, 2, 3, 1, 4).reshape(-1, f, c)
    q, k, v = np.split(layer_norm(seq, *layer.norm.get_weights()) @ layer.qkv.get_weights()[0], 3, axis=-1)
    q, k, v = (t.reshape(-1, f, heads, hd) for t in (q, k, v))
    logits = np.einsum("nihd,njhd->nhij", q, k) / np.sqrt(hd)
    if layer.relative_position_bias:
        table = to_numpy(layer.bias_table)
        logits = logits + table[relative_position_buckets(f, layer.num_buckets, layer.max_distance)].transpose(2, 0, 1)
    out = np.einsum("nhij,njhd->nihd", softmax(logits), v).reshape(-1, f, heads * hd)
    wo, bo = layer.output_projection.get_weights()
    branch = (out @ wo + bo).reshape(b, h, w, f, c).transpose(0, 3, 1, 2, 4)
    if layer.learned_mix:
        alpha = 1.0 / (1.0 + np.exp(-float(to_numpy(layer.mix.mix_logit))))
        return alpha * x + (1 - alpha) * (x + branch)
    return x + branch


@pytest.mark.parametrize("learned_mix", [False, True])
def test_temporal_attention_matches_numpy_and_starts_as_identity(video, learned_mix):
    layer = TemporalAttention(num_heads=2, num_buckets=8, max_distance=8, learned_mix=learned_mix, mix_init=0.7)
    np.testing.assert_array_equal(to_numpy(layer(video)), video)
    assert not to_numpy(layer.output_projection.kernel).any()
    _randomise(layer, seed=11, scale=0.5)
    np.testing.assert_allclose(to_numpy(layer(video)), temporal_attention_reference(layer, video), atol=TOL)
    np.testing.assert_array_equal(to_numpy(layer(video[:, 0])), video[:, 0])  # images pass through


def test_temporal_attention_mixes_frames_of_one_pixel_only_and_respects_the_temporal_mask(video):
    layer = TemporalAttention(num_heads=2)
    layer.build(video.shape)
    _randomise(layer, seed=12, scale=0.5)
    changed = video.copy()
    changed[:, 1, 2, 3] += 1.0 + _rand(B, C, seed=13)
    mask = np.array([1.0, 0.0], "float32")
    effect = np.abs(to_numpy(layer(changed, mask)) - to_numpy(layer(video, mask))).max(axis=-1)  # (B, F, H, W)
    other_pixels = effect.copy()
    other_pixels[:, :, 2, 3] = 0.0
    assert other_pixels.max() == 0.0, "temporal attention never mixes pixels"
    assert effect[0, [0, 2], 2, 3].min() > 1e-4, "a video sample's frames see each other"
    assert effect[1, [0, 2], 2, 3].max() < 1e-6, "a masked sample's frames stay independent"
    # a masked sample is what each frame gives on its own
    masked = to_numpy(layer(video, mask))[1]
    for f in range(F):
        single = to_numpy(layer(video[1:, f : f + 1]))[0, 0]
        np.testing.assert_allclose(masked[f], single, atol=1e-5)


# --- condition embedding ------------------------------------------------------------------------


def test_condition_embedding_fps_starts_at_zero_and_text_uses_the_null_for_empty_prompts():
    t = np.array([3.0, 700.0], "float32")
    embedding = UNetConditionEmbedding(16, frequency_dim=8, num_classes=3, fps_conditioning=True)
    labels = np.array([0, 3], "int32")
    base = to_numpy(embedding(t, labels))
    np.testing.assert_array_equal(to_numpy(embedding(t, labels, np.array([4.0, 24.0], "float32"))), base)
    np.testing.assert_allclose(
        base - to_numpy(embedding.time_embedding(t)), to_numpy(embedding.label_embedding(labels)), atol=1e-6
    )
    text = UNetConditionEmbedding(16, frequency_dim=8, text_dim=6)
    pooled, mask = _rand(2, 6, seed=14), np.array([[1, 1, 0], [0, 0, 0]], "float32")
    out = to_numpy(text(t, None, None, pooled, mask))
    null = to_numpy(text.text_embedding.null_embedding)
    np.testing.assert_allclose(out[1], to_numpy(text.time_embedding(t))[1] + null, atol=1e-6)
    with pytest.raises(ValueError, match="not both"):
        UNetConditionEmbedding(16, num_classes=3, text_dim=6)
    with pytest.raises(ValueError, match="class_labels"):
        embedding(t)


# --- configs and errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        ResBlock(16, norm_groups=8, dropout=0.1, conv_type="pseudo3d", temporal_kernel_size=5, embedding_mode="add"),
        Downsample(filters=8, spatial=True, temporal=True),
        Upsample(filters=8, spatial=False, temporal=True),
        SpatialAttention(num_heads=2, head_dim=8, norm_groups=4, context_dim=12),
        TemporalAttention(num_heads=2, relative_position_bias=False, num_buckets=16, max_distance=64,
                          learned_mix=True, mix_init=2.0),
        UNetConditionEmbedding(32, frequency_dim=16, num_classes=5, fps_conditioning=True),
        UNetConditionEmbedding(32, text_dim=12),
    ],
    ids=["resblock", "down", "up", "spatial-attention", "temporal-attention", "embedding-class", "embedding-text"],
)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert restored.get_config() == config


def test_bad_arguments_are_named(video):
    with pytest.raises(ValueError, match="conv_type"):
        ResBlock(8, conv_type="full3d")
    with pytest.raises(ValueError, match="embedding_mode"):
        ResBlock(8, embedding_mode="film")
    with pytest.raises(ValueError, match="dropout"):
        ResBlock(8, dropout=1.0)
    with pytest.raises(ValueError, match="num_heads"):
        TemporalAttention(num_heads=3)(video)
    with pytest.raises(ValueError, match="num_buckets"):
        TemporalAttention(num_buckets=2)
