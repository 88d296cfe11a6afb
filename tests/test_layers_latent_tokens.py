import numpy as np
import pytest

from conftest import to_numpy
from keras_vdiff.layers.attention import Attention
from keras_vdiff.models.latent_tokens import (
    ConditionTokens,
    InterfaceConv,
    LatentLocalityBias,
    LatentReadWriteBlock,
    LatentSelfConditioning,
    LearnedLatents,
    PreNormResidual,
    TextRegisterEncoder,
    group_grid,
    group_patches,
    spacetime_position_table,
    ungroup_patches,
)

# One set of shapes for every test (JAX compiles each new shape once).
B, G, P, DX, DL, L, HEADS, M = 2, 4, 8, 16, 32, 4, 4, 3


def _randomise(layer, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(scale * rng.standard_normal(w.shape).astype("float32"))


def _block(num_latent_layers=1, use_adaln=False, seed=0, num_local_layers=0):
    block = LatentReadWriteBlock(DX, DL, L, HEADS, patch_num_heads=2, num_latent_layers=num_latent_layers,
                                 use_adaln=use_adaln, num_local_layers=num_local_layers)
    block.build((B, G, P, DX), (B, G * L, DL), (B, M, DL), (B, M), (B, DL) if use_adaln else None)
    _randomise(block, seed)
    return block


def _data(seed=0):
    rng = np.random.default_rng(seed)
    patches = rng.standard_normal((B, G, P, DX)).astype("float32")
    latents = rng.standard_normal((B, G * L, DL)).astype("float32")
    cond = rng.standard_normal((B, M, DL)).astype("float32")
    mask = np.ones((B, M), "float32")
    mask[:, -1] = 0.0
    return patches, latents, cond, mask


def _layer_norm(x, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)


def test_group_patches_matches_a_loop_reference_and_ungroup_inverts_it():
    frames, rows, cols, d = 3, 4, 6, 2
    tokens = np.arange(2 * frames * rows * cols * d, dtype="float32").reshape(2, frames, rows * cols, d)
    groups = group_grid((2, 3), (rows, cols))
    grouped = to_numpy(group_patches(tokens, (rows, cols), groups))
    rh, rw = rows // 2, cols // 3
    assert grouped.shape == (2, 6, frames * rh * rw, d)
    for gy in range(2):
        for gx in range(3):
            expected = [tokens[:, f, r * cols + c] for f in range(frames)
                        for r in range(gy * rh, (gy + 1) * rh) for c in range(gx * rw, (gx + 1) * rw)]
            np.testing.assert_array_equal(grouped[:, gy * 3 + gx], np.stack(expected, axis=1))
    np.testing.assert_array_equal(to_numpy(ungroup_patches(grouped, frames, (rows, cols), groups)), tokens)
    assert group_grid(4, (14, 14)) == (2, 2) and group_grid(49, (14, 14)) == (7, 7)
    with pytest.raises(ValueError, match="square number"):
        group_grid(6, (14, 14))
    with pytest.raises(ValueError, match="does not divide"):
        group_grid(9, (14, 14))
    with pytest.raises(ValueError, match="num_groups"):
        group_grid((2, 0), (4, 4))


def test_space_time_positions_tell_the_frames_of_a_position_apart():
    table = spacetime_position_table(frames=5, rows=2, cols=3, dim=16)
    assert table.shape == (5, 6, 16)
    # Same spatial position in different frames: different codes (the thesis' spatial-only code made them equal,
    # so the latents of a group could not tell frames apart); same frame, different positions: different too.
    for n in range(6):
        rows = table[:, n]
        assert min(np.abs(rows[i] - rows[j]).max() for i in range(5) for j in range(i + 1, 5)) > 1e-3
    assert np.abs(table[0, 0] - table[0, 1]).max() > 1e-3
    with pytest.raises(ValueError, match="divisible by 4"):
        spacetime_position_table(2, 2, 2, 18)


def test_read_and_write_steps_keep_every_group_to_itself():
    block = _block()
    patches, latents, _, _ = _data()
    read = to_numpy(block.read(patches, latents)).reshape(B, G, L, DL)
    written = to_numpy(block.write(patches, latents))
    g = 2
    changed = patches.copy()
    changed[:, g] += 2.0 * np.random.default_rng(7).standard_normal(changed[:, g].shape)  # LN ignores offsets
    read2 = to_numpy(block.read(changed, latents)).reshape(B, G, L, DL)
    others = [i for i in range(G) if i != g]
    np.testing.assert_allclose(read2[:, others], read[:, others], atol=1e-6)
    assert np.abs(read2[:, g] - read[:, g]).max() > 1e-3
    # Write: perturbing group g's latents changes only group g's patch tokens.
    changed_latents = latents.copy().reshape(B, G, L, DL)
    changed_latents[:, g] += 2.0 * np.random.default_rng(8).standard_normal(changed_latents[:, g].shape)
    written2 = to_numpy(block.write(patches, changed_latents.reshape(B, G * L, DL)))
    np.testing.assert_allclose(written2[:, others], written[:, others], atol=1e-6)
    assert np.abs(written2[:, g] - written[:, g]).max() > 1e-3


def test_a_block_mixes_groups_only_through_the_global_latent_layers():
    patches, latents, cond, mask = _data()
    changed = patches.copy()
    changed[:, 1] += 2.0 * np.random.default_rng(7).standard_normal(changed[:, 1].shape)
    others = [0, 2, 3]
    for layers in (0, 1):
        block = _block(num_latent_layers=layers, num_local_layers=1 - layers)  # FiT's local layers stay in-group
        x, z = (to_numpy(t) for t in block(patches, latents, cond, mask))
        x2, z2 = (to_numpy(t) for t in block(changed, latents, cond, mask))
        assert x.shape == (B, G, P, DX) and z.shape == (B, G * L, DL)
        z, z2 = z.reshape(B, G, L, DL), z2.reshape(B, G, L, DL)
        assert np.abs(x2[:, 1] - x[:, 1]).max() > 1e-3
        if layers == 0:  # read and write only: the other groups see nothing
            np.testing.assert_allclose(x2[:, others], x[:, others], atol=1e-6)
            np.testing.assert_allclose(z2[:, others], z[:, others], atol=1e-6)
        else:  # global latent self-attention carries group 1's change to every group
            assert np.abs(x2[:, others] - x[:, others]).max() > 1e-3
            assert np.abs(z2[:, others] - z[:, others]).max() > 1e-3


def test_batch_rows_never_mix_and_masked_condition_tokens_are_ignored():
    block = _block(use_adaln=True)
    patches, latents, cond, mask = _data()
    pooled = np.random.default_rng(3).standard_normal((B, DL)).astype("float32")
    x, z = (to_numpy(t) for t in block(patches, latents, cond, mask, pooled))
    # Another prompt and pooled condition for row 1 only: row 0 unchanged (the thesis' first SnapVideo mixed the
    # prompts of a batch); the masked last condition token of every row changes nothing.
    cond2, pooled2 = cond.copy(), pooled.copy()
    cond2[1, :2] += np.random.default_rng(7).standard_normal(cond2[1, :2].shape)
    pooled2[1] += np.random.default_rng(8).standard_normal(pooled2[1].shape)
    cond2[:, -1] = 100.0
    x2, z2 = (to_numpy(t) for t in block(patches, latents, cond2, mask, pooled2))
    np.testing.assert_allclose(x2[0], x[0], atol=1e-5)
    np.testing.assert_allclose(z2[0], z[0], atol=1e-5)
    assert np.abs(x2[1] - x[1]).max() > 1e-3
    only_masked = cond.copy()
    only_masked[:, -1] = -50.0
    x3, _ = (to_numpy(t) for t in block(patches, latents, only_masked, mask, pooled))
    np.testing.assert_allclose(x3, x, atol=1e-5)


def test_pre_norm_cross_attention_residual_matches_numpy():
    heads, dh = 2, 8
    layer = PreNormResidual(Attention(heads, dh), context_norm=True)
    layer.build((B, L, DL), None, (B, P, DX))
    _randomise(layer, seed=5)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, L, DL)).astype("float32")
    ctx = rng.standard_normal((B, P, DX)).astype("float32")
    out = to_numpy(layer(x, context=ctx))
    att = layer.inner
    w = {f"{name}/{part}": to_numpy(getattr(getattr(att, name), part))
         for name in ("query", "key", "value", "output_projection") for part in ("kernel", "bias")}
    gamma, beta = to_numpy(layer.norm.gamma), to_numpy(layer.norm.beta)
    cg, cb = to_numpy(layer.context_norm_layer.gamma), to_numpy(layer.context_norm_layer.beta)
    h = _layer_norm(x, 1e-6) * gamma + beta
    c = _layer_norm(ctx, 1e-6) * cg + cb
    q = (h @ w["query/kernel"] + w["query/bias"]).reshape(B, L, heads, dh)
    k = (c @ w["key/kernel"] + w["key/bias"]).reshape(B, P, heads, dh)
    v = (c @ w["value/kernel"] + w["value/bias"]).reshape(B, P, heads, dh)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dh)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(B, L, heads * dh)
    expected = x + attended @ w["output_projection/kernel"] + w["output_projection/bias"]
    np.testing.assert_allclose(out, expected, atol=2e-4)


def test_adaln_sublayers_start_as_the_identity():
    # adaLN-Zero: the gates start at zero, so with use_adaln every modulated sub-layer is the identity at init.
    layer = PreNormResidual(Attention(HEADS, DL // HEADS), adaln=True)
    layer.build((B, G * L, DL), (B, DL))
    x = np.random.default_rng(0).standard_normal((B, G * L, DL)).astype("float32")
    np.testing.assert_allclose(to_numpy(layer(x, np.ones((B, DL), "float32"))), x, atol=1e-6)
    with pytest.raises(ValueError, match="condition"):
        layer(x)


def test_latent_self_conditioning_matches_numpy_and_zero_previous_latents_add_nothing():
    layer = LatentSelfConditioning(DL)
    layer.build((B, G * L, DL), (B, G * L, DL))
    _randomise(layer, seed=2)
    rng = np.random.default_rng(4)
    latents = rng.standard_normal((B, G * L, DL)).astype("float32")
    previous = rng.standard_normal((B, G * L, DL)).astype("float32")
    kernel, gamma = to_numpy(layer.projection.kernel), to_numpy(layer.norm.gamma)
    expected = latents + _layer_norm(previous @ kernel, 1e-5) * gamma
    np.testing.assert_allclose(to_numpy(layer(latents, previous)), expected, atol=1e-4)
    np.testing.assert_array_equal(to_numpy(layer(latents, np.zeros_like(previous))), latents)
    learned = LearnedLatents(G * L, DL)
    out = to_numpy(learned(np.zeros((B, 7), "float32")))
    assert out.shape == (B, G * L, DL)
    np.testing.assert_array_equal(out[0], out[1])


def test_text_registers_keep_the_null_prompt_trainable_and_ignore_padding():
    encoder = TextRegisterEncoder(DL, HEADS, num_registers=2, num_layers=2)
    rng = np.random.default_rng(0)
    text = rng.standard_normal((B, 5, 12)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], "float32")  # row 1: the null prompt
    tokens, full_mask = encoder(text, mask)
    tokens, full_mask = to_numpy(tokens), to_numpy(full_mask)
    assert tokens.shape == (B, 7, DL)
    np.testing.assert_array_equal(full_mask, [[1, 1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1, 1]])
    changed = text.copy()
    changed[0, 3:] = 9.0  # padding of row 0
    changed[1] = -3.0  # every token of the null prompt
    tokens2 = to_numpy(encoder(changed, mask)[0])
    valid = full_mask.astype(bool)
    np.testing.assert_allclose(tokens2[valid], tokens[valid], atol=1e-5)
    # The null prompt's registers are the same learned vectors whatever the (masked) text holds.
    assert np.abs(tokens[1, 5:]).max() > 1e-3
    with pytest.raises(ValueError, match="num_registers"):
        TextRegisterEncoder(DL, HEADS, num_registers=-1)


def test_condition_tokens_masks_and_pooled_condition():
    cond = ConditionTokens(DL, conditioning="text", num_heads=HEADS, num_registers=2, text_layers=1)
    rng = np.random.default_rng(0)
    text = rng.standard_normal((B, 5, 12)).astype("float32")
    mask = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], "float32")
    pooled_text = rng.standard_normal((B, 12)).astype("float32")
    timesteps = np.array([10.0, 500.0], "float32")
    tokens, token_mask, pooled = (to_numpy(t) for t in cond(timesteps, text_embeddings=text, text_mask=mask,
                                                             pooled_text=pooled_text))
    assert tokens.shape == (B, 8, DL) and pooled.shape == (B, DL)
    np.testing.assert_array_equal(token_mask, [[1, 1, 1, 0, 0, 0, 1, 1], [1, 0, 0, 0, 0, 0, 1, 1]])
    t_emb = to_numpy(cond.timestep_embedding(timesteps))
    np.testing.assert_allclose(tokens[:, 0], t_emb, atol=1e-6)
    # Row 1 is the null prompt: the learned null pooled embedding is added to the timestep.
    np.testing.assert_allclose(pooled[1], t_emb[1] + to_numpy(cond.pooled_text_embedding.null_embedding), atol=1e-5)
    labels = ConditionTokens(DL, conditioning="class", num_classes=3)
    tokens, token_mask, pooled = (to_numpy(t) for t in labels(timesteps, class_labels=np.array([0, 3], "int32")))
    assert tokens.shape == (B, 2, DL) and token_mask.min() == 1.0
    np.testing.assert_allclose(pooled, tokens[:, 0] + tokens[:, 1], atol=1e-5)
    with pytest.raises(ValueError, match="conditioning"):
        ConditionTokens(DL, conditioning="audio")
    with pytest.raises(ValueError, match="num_classes"):
        ConditionTokens(DL, conditioning="class")


def test_block_config_round_trip_and_bad_arguments():
    block = _block(num_latent_layers=1, use_adaln=True, num_local_layers=1)
    clone = LatentReadWriteBlock.from_config(block.get_config())
    clone.build((B, G, P, DX), (B, G * L, DL), (B, M, DL), (B, M), (B, DL))
    clone.set_weights(block.get_weights())
    patches, latents, cond, mask = _data()
    pooled = np.ones((B, DL), "float32")
    for a, b in zip(block(patches, latents, cond, mask, pooled), clone(patches, latents, cond, mask, pooled)):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-6)
    residual = PreNormResidual.from_config(block.latent_attentions[0].get_config())
    assert residual.adaln and isinstance(residual.inner, Attention)
    with pytest.raises(ValueError, match="pooled_condition"):
        block(patches, latents, cond, mask)
    with pytest.raises(ValueError, match="latents_per_group"):
        block(patches, latents[:, :-1], cond, mask, pooled)
    with pytest.raises(ValueError, match="grouped"):
        block(patches[:, 0], latents, cond, mask, pooled)
    for bad, match in (
        (dict(latent_dim=30), "num_heads"),
        (dict(patch_dim=15), "patch_num_heads"),
        (dict(num_latent_layers=-1), "num_latent_layers"),
        (dict(num_local_layers=-1), "num_local_layers"),
        (dict(latents_per_group=0), "latents_per_group"),
    ):
        config = dict(patch_dim=DX, latent_dim=DL, latents_per_group=L, num_heads=HEADS, patch_num_heads=2)
        config.update(bad)
        with pytest.raises(ValueError, match=match):
            LatentReadWriteBlock(**config)


def test_interface_convolution_is_a_depthwise_3d_correlation_then_norm_silu_and_a_zero_started_projection():
    from scipy import ndimage

    rng = np.random.default_rng(4)
    frames, rows, cols = 3, 2, 4
    tokens = rng.standard_normal((B, frames, rows * cols, DX)).astype("float32")
    conv = InterfaceConv(3, (rows, cols), norm_groups=4)
    np.testing.assert_array_equal(to_numpy(conv(tokens)), tokens)  # the pointwise projection starts at zero
    _randomise(conv, seed=5)
    grid = tokens.reshape(B, frames, rows, cols, DX)
    kernel, bias = to_numpy(conv.depthwise_kernel), to_numpy(conv.depthwise_bias)
    # Independent reference: scipy's 'same' zero-padded correlation, channel by channel.
    reference = np.stack([
        np.stack([ndimage.correlate(grid[b, ..., d], kernel[..., d], mode="constant") + bias[d] for d in range(DX)],
                 axis=-1)
        for b in range(B)
    ])
    np.testing.assert_allclose(to_numpy(conv.depthwise(grid)), reference, rtol=1e-5, atol=1e-5)
    # The rest: GroupNorm (4 groups, per video), SiLU, Dense, residual.
    gamma, beta = to_numpy(conv.norm.gamma), to_numpy(conv.norm.beta)
    g = reference.reshape(B, -1, 4, DX // 4)
    mean, var = g.mean(axis=(1, 3), keepdims=True), g.var(axis=(1, 3), keepdims=True)
    normed = ((g - mean) / np.sqrt(var + 1e-6)).reshape(reference.shape) * gamma + beta
    h = normed / (1 + np.exp(-normed))
    expected = grid + h @ to_numpy(conv.pointwise.kernel) + to_numpy(conv.pointwise.bias)
    np.testing.assert_allclose(to_numpy(conv(tokens)), expected.reshape(tokens.shape), rtol=1e-4, atol=1e-4)
    config = conv.get_config()
    assert InterfaceConv.from_config(config).get_config() == config
    for kwargs, match in ((dict(kernel_size=2, grid_size=(2, 4)), "kernel_size"),
                          (dict(kernel_size=3, grid_size=(2,)), "grid_size"),
                          (dict(kernel_size=3, grid_size=(2, 0)), "grid_size")):
        with pytest.raises(ValueError, match=match):
            InterfaceConv(**kwargs)
    with pytest.raises(ValueError, match="tokens per frame"):
        InterfaceConv(3, (3, 3))(tokens)


def test_locality_bias_is_minus_strength_times_squared_anchor_distance():
    frames, rows, cols, latents = 3, 4, 4, 8
    layer = LatentLocalityBias(latents, (rows, cols), frames, num_heads=2, patch_num_heads=1, initial_strength=0.5)
    assert layer.anchor_grid == (2, 2)  # the largest square of anchors dividing 8 latents: 2 latents per anchor
    read, write = (to_numpy(t) for t in layer(np.zeros((1,), "float32")))
    assert read.shape == (1, 2, latents, frames * rows * cols) and write.shape == (1, 1, frames * rows * cols, latents)
    # Loop reference: anchors at the centres of the 2x2 quadrants, (0.5, 0.5), (0.5, 2.5), (2.5, 0.5), (2.5, 2.5).
    centres = [(0.5, 0.5), (0.5, 2.5), (2.5, 0.5), (2.5, 2.5)]
    expected = np.zeros((latents, frames * rows * cols), "float32")
    for latent in range(latents):
        cy, cx = centres[latent // 2]
        for token in range(frames * rows * cols):
            y, x = divmod(token % (rows * cols), cols)  # tokens ordered (frame, row, col)
            expected[latent, token] = -0.5 * ((y - cy) ** 2 + (x - cx) ** 2)
    np.testing.assert_allclose(read[0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(read[0, 1], expected, rtol=1e-6)
    np.testing.assert_allclose(write[0, 0], expected.T, rtol=1e-6)
    layer.read_log_strength.assign(np.log(np.array([2.0, 1e-30], "float32")))  # head 2: (almost) no prior
    read, _ = (to_numpy(t) for t in layer(np.zeros((1,), "float32")))
    np.testing.assert_allclose(read[0, 0], 4 * expected, rtol=1e-5)
    assert np.abs(read[0, 1]).max() < 1e-20
    config = layer.get_config()
    assert LatentLocalityBias.from_config(config).get_config() == config
    for kwargs, match in ((dict(num_latents=6, anchor_grid=(2, 2)), "multiple"),
                          (dict(anchor_grid=(2, 0)), "anchor_grid"),
                          (dict(initial_strength=0.0), "initial_strength"),
                          (dict(grid_size=(4,)), "grid_size")):
        with pytest.raises(ValueError, match=match):
            LatentLocalityBias(**dict(dict(num_latents=8, grid_size=(4, 4), frames=3, num_heads=2, patch_num_heads=1),
                                      **kwargs))


def test_a_strong_locality_bias_keeps_a_latent_reading_its_own_region():
    # One group of 3 frames x 4x4 tokens, 8 latents on 2x2 anchors. With a strong prior the latents anchored in
    # the top-left quadrant do not see a change in the bottom-right quadrant; without it they do.
    frames, rows, cols, latents = 3, 4, 4, 8
    block = LatentReadWriteBlock(DX, DL, latents, HEADS, patch_num_heads=2, num_latent_layers=0,
                                 condition_attention=False)
    block.build((1, 1, frames * rows * cols, DX), (1, latents, DL))
    _randomise(block, seed=6)
    bias = LatentLocalityBias(latents, (rows, cols), frames, HEADS, 2, initial_strength=50.0)
    read_bias, write_bias = bias(np.zeros((1,), "float32"))
    rng = np.random.default_rng(7)
    patches = rng.standard_normal((1, 1, frames * rows * cols, DX)).astype("float32")
    z = rng.standard_normal((1, latents, DL)).astype("float32")
    changed = patches.reshape(1, 1, frames, rows, cols, DX).copy()
    changed[:, :, :, 2:, 2:] += 3.0 * rng.standard_normal((frames, 2, 2, DX))  # bottom-right quadrant, all frames
    changed = changed.reshape(patches.shape)
    for biased in (True, False):
        kwargs = dict(read_bias=read_bias, write_bias=write_bias) if biased else {}
        _, before = block(patches, z, **kwargs)
        _, after = block(changed, z, **kwargs)
        moved = np.abs(to_numpy(after) - to_numpy(before)).max(axis=-1)[0]  # per latent
        if biased:
            assert moved[:2].max() < 1e-4 and moved[6:].min() > 1e-2  # top-left latents 0-1 vs bottom-right 6-7
        else:
            assert moved.min() > 1e-2
