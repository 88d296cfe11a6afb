import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_vdiff.layers.attention import Attention
from keras_vdiff.layers.video_blocks import (
    ConditionEmbedding,
    FactorizedBlock,
    GenTronBlock,
    MMDiTBlock,
    SpatioTemporalBlock,
    SplitHeadBlock,
    TextCrossAttentionBlock,
    attend_along,
    check_conditioning,
    split_head_attention,
    text_cross_attention,
)

B, F, N, D, HEADS, L, DC = 2, 3, 4, 16, 4, 5, 12


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _randomise(layer, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    layer.set_weights([scale * rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()])


def _text(seed=1):
    mask = np.ones((B, L), "float32")
    mask[:, 3:] = 0.0
    return _rand(B, L, DC, seed=seed), mask


def _influence(fn, x, frame, position):
    """|fn(x') - fn(x)| per (frame, position), for x' = x changed at one token."""
    changed = x.copy()
    changed[:, frame, position] += _rand(x.shape[0], x.shape[-1], seed=9)  # not constant: LayerNorm removes that
    return np.abs(to_numpy(fn(changed)) - to_numpy(fn(x))).max(axis=(0, 3))  # (F, N)


def _factorized(axis, **kw):
    block = FactorizedBlock(D, HEADS, axis=axis, **kw)
    block.build((None, F, N, D), (None, D), (None, None, DC))
    _randomise(block)
    return block


def test_spatial_block_never_mixes_frames_and_temporal_block_never_mixes_positions():
    x, c = _rand(B, F, N, D), _rand(B, D, seed=2)
    spatial, temporal = _factorized("spatial"), _factorized("temporal")
    effect = _influence(lambda v: spatial(v, c), x, frame=1, position=2)
    assert effect[[0, 2]].max() == 0.0, "a spatial block must leave the other frames unchanged"
    assert effect[1].min() > 1e-5, "it mixes every position of the changed frame"
    effect = _influence(lambda v: temporal(v, c), x, frame=1, position=2)
    assert effect[:, [0, 1, 3]].max() == 0.0, "a temporal block must leave the other positions unchanged"
    assert effect[:, 2].min() > 1e-5, "it mixes every frame at the changed position"


def test_factorized_blocks_with_text_keep_their_factorization():
    x, c = _rand(B, F, N, D), _rand(B, D, seed=2)
    text, mask = _text()
    block = _factorized("spatial", cross_attention=True)
    effect = _influence(lambda v: block(v, c, context=text, context_mask=mask), x, frame=0, position=1)
    assert effect[1:].max() == 0.0 and effect[0].min() > 1e-5


def test_spatio_temporal_block_paths_and_full_mixing():
    x, c = _rand(B, F, N, D), _rand(B, D, seed=2)
    block = SpatioTemporalBlock(D, HEADS)
    block.build((None, F, N, D), (None, D))
    _randomise(block)
    effect = _influence(lambda v: attend_along(block.attention, v, "spatial"), x, 1, 2)
    assert effect[[0, 2]].max() == 0.0 and effect[1].min() > 1e-5
    effect = _influence(lambda v: attend_along(block.temporal_attention, v, "temporal"), x, 1, 2)
    assert effect[:, [0, 1, 3]].max() == 0.0 and effect[:, 2].min() > 1e-5
    # Spatial then temporal attention in one block: every token depends on every token.
    assert _influence(lambda v: block(v, c), x, 1, 2).min() > 1e-6


def _split_head_reference(attention, x, spatial_heads):
    """Numpy split-head attention from the layer's weights (independent of the keras code path)."""
    w = {layer.name: [to_numpy(v) for v in layer.weights] for layer in
         (attention.query, attention.key, attention.value, attention.output_projection)}
    h, dh = attention.num_heads, attention.head_dim
    q, k, v = ((x @ w[name][0] + w[name][1]).reshape(B, F, N, h, dh) for name in ("query", "key", "value"))
    out = np.zeros((B, F, N, h, dh), "float64")

    def attend(qs, ks, vs):  # (..., T, Dh)
        logits = qs @ np.swapaxes(ks, -1, -2) / np.sqrt(dh)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        return (weights / weights.sum(-1, keepdims=True)) @ vs

    for head in range(h):
        if head < spatial_heads:  # within each frame: sequences over N
            out[:, :, :, head] = attend(q[:, :, :, head], k[:, :, :, head], v[:, :, :, head])
        else:  # along time at each position: sequences over F
            qt, kt, vt = (np.swapaxes(t[:, :, :, head], 1, 2) for t in (q, k, v))
            out[:, :, :, head] = np.swapaxes(attend(qt, kt, vt), 1, 2)
    return out.reshape(B, F, N, h * dh) @ w["output_projection"][0] + w["output_projection"][1]


@pytest.mark.parametrize("spatial_heads", [1, 3])
def test_split_head_attention_matches_a_numpy_reference_and_mixes_a_cross(spatial_heads):
    attention = Attention(HEADS, D // HEADS)
    attention.build((None, None, D))
    _randomise(attention, scale=0.4)
    x = _rand(B, F, N, D)
    out = to_numpy(split_head_attention(attention, x, spatial_heads))
    np.testing.assert_allclose(out, _split_head_reference(attention, x, spatial_heads), atol=1e-4)
    # One token changes its own frame (spatial heads) and its own position in other frames (temporal heads).
    effect = _influence(lambda v: split_head_attention(attention, v, spatial_heads), x, 1, 2)
    assert effect[1].min() > 1e-5 and effect[:, 2].min() > 1e-5
    others = np.ones((F, N), bool)
    others[1, :] = others[:, 2] = False
    assert effect[others].max() == 0.0


def test_split_head_block_validates_its_heads_and_round_trips():
    with pytest.raises(ValueError, match="spatial_heads"):
        SplitHeadBlock(D, HEADS, spatial_heads=HEADS)
    block = SplitHeadBlock(D, HEADS, spatial_heads=1)
    assert SplitHeadBlock.from_config(block.get_config()).spatial_heads == 1


def test_text_cross_attention_equals_per_frame_cross_attention_and_ignores_padding():
    norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype="float32")
    attention = Attention(HEADS, D // HEADS)
    attention.build((None, None, D), (None, None, DC))
    _randomise(attention)
    x = _rand(B, F, N, D)
    text, mask = _text()
    out = to_numpy(text_cross_attention(norm, attention, x, text, mask))
    for f in range(F):
        frame = to_numpy(attention(norm(x[:, f]), context=text, mask=mask))
        np.testing.assert_allclose(out[:, f], frame, atol=1e-5)
    padded = text.copy()
    padded[:, 3:] = 50.0
    np.testing.assert_allclose(to_numpy(text_cross_attention(norm, attention, x, padded, mask)), out, atol=1e-5)
    with pytest.raises(ValueError, match="context"):
        text_cross_attention(norm, attention, x, None, None)


def test_text_cross_attention_block_starts_as_identity_and_a_null_prompt_adds_nothing():
    x = _rand(B, F, N, D)
    text, mask = _text()
    block = TextCrossAttentionBlock(D, HEADS)
    np.testing.assert_array_equal(to_numpy(block(x, text, mask)), x)
    _randomise(block)
    assert np.abs(to_numpy(block(x, text, mask)) - x).max() > 1e-4
    np.testing.assert_allclose(to_numpy(block(x, text, np.zeros_like(mask))), x, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: FactorizedBlock(D, HEADS, axis="temporal", cross_attention=True),
    lambda: SpatioTemporalBlock(D, HEADS, cross_attention=True),
    lambda: GenTronBlock(D, HEADS),
    lambda: SplitHeadBlock(D, HEADS, cross_attention=True),
], ids=["factorized", "spatiotemporal", "gentron", "splithead"])
def test_video_blocks_are_the_identity_at_initialisation(make):
    x, c = _rand(B, F, N, D), _rand(B, D, seed=2)
    text, mask = _text()
    block = make()
    np.testing.assert_array_equal(to_numpy(block(x, c, context=text, context_mask=mask)), x)


def test_gentron_block_temporal_attention_has_no_modulation_and_a_zero_output():
    block = GenTronBlock(D, HEADS)
    block.build((None, F, N, D), (None, D), (None, None, DC))
    assert not block.temporal_adaln and not hasattr(block, "temporal_modulation")
    kernel = to_numpy(block.temporal_attention.output_projection.kernel)
    np.testing.assert_array_equal(kernel, 0.0)
    assert block.cross_attention and block.norm_temporal.scale  # affine LayerNorm as in the thesis
    config = block.get_config()
    assert GenTronBlock.from_config(config).get_config() == config


def test_mmdit_block_streams_padding_and_last_block_form():
    x, c = _rand(B, F * N, D), _rand(B, D, seed=2)
    text = _rand(B, L, D, seed=3)
    mask = _text()[1]
    block = MMDiTBlock(D, HEADS)
    out_x, out_t = block(x, text, c, context_mask=mask)
    np.testing.assert_array_equal(to_numpy(out_x), x)  # adaLN-Zero: identity at initialisation
    np.testing.assert_array_equal(to_numpy(out_t), text)
    _randomise(block)
    ref_x, ref_t = (to_numpy(t) for t in block(x, text, c, context_mask=mask))
    padded = text.copy()
    padded[:, 3:] = 50.0
    pad_x, pad_t = (to_numpy(t) for t in block(x, padded, c, context_mask=mask))
    np.testing.assert_allclose(pad_x, ref_x, atol=1e-5)  # video never attends to padding
    np.testing.assert_allclose(pad_t[:, :3], ref_t[:, :3], atol=1e-5)
    prompt = text.copy()
    prompt[:, 0] += _rand(B, D, seed=4)
    assert np.abs(to_numpy(block(x, prompt, c, context_mask=mask)[0]) - ref_x).max() > 1e-5
    last = MMDiTBlock(D, HEADS, context_output=False)
    last_x, last_t = last(x, text, c, context_mask=mask)
    np.testing.assert_array_equal(to_numpy(last_t), text)
    assert not hasattr(last, "context_mlp") and last.count_params() < block.count_params()
    assert not last.attention.context_attention.output_projection.trainable
    assert MMDiTBlock.from_config(last.get_config()).get_config() == last.get_config()


def test_condition_embedding_adds_label_or_pooled_text_and_uses_a_learned_null():
    t = np.array([3.0, 700.0], "float32")
    emb = ConditionEmbedding(D, conditioning="class", num_classes=4)
    labels = np.array([1, 4], "int32")
    out = to_numpy(emb(t, class_labels=labels))
    expected = to_numpy(emb.timestep_embedding(t)) + to_numpy(emb.label_embedding(labels))
    np.testing.assert_allclose(out, expected, atol=1e-6)
    text_emb = ConditionEmbedding(D, conditioning="text")
    pooled, mask = _rand(2, DC), np.array([[1, 1, 0], [0, 0, 0]], "float32")
    out = to_numpy(text_emb(t, pooled_text=pooled, text_mask=mask))
    t_emb = to_numpy(text_emb.timestep_embedding(t))
    null = to_numpy(text_emb.pooled_text_embedding.null_embedding)
    np.testing.assert_allclose(out[1], t_emb[1] + null, atol=1e-6)  # all-masked row: learned null
    assert np.abs(out[0] - t_emb[0] - null).max() > 1e-4
    assert ConditionEmbedding.from_config(text_emb.get_config()).get_config() == text_emb.get_config()


@pytest.mark.parametrize("make", [
    lambda: FactorizedBlock(D, HEADS, axis="temporal", cross_attention=True, qk_norm=True),
    lambda: SpatioTemporalBlock(D, HEADS, temporal_adaln=False),
    lambda: TextCrossAttentionBlock(D, HEADS, qk_norm=True),
    lambda: ConditionEmbedding(D, conditioning="class", num_classes=7),
], ids=["factorized", "spatiotemporal", "text", "condition"])
def test_blocks_serialize(make):
    layer = make()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


def test_clear_errors():
    with pytest.raises(ValueError, match="axis"):
        FactorizedBlock(D, HEADS, axis="diagonal")
    with pytest.raises(ValueError, match="conditioning"):
        check_conditioning("audio")
    with pytest.raises(ValueError, match="num_classes"):
        check_conditioning("class", num_classes=0)
    with pytest.raises(ValueError, match="text_dim"):
        check_conditioning("text", text_dim=None)
    with pytest.raises(ValueError, match="num_heads"):
        TextCrossAttentionBlock(D, 5)
