import keras
import numpy as np
import pytest

from conftest import to_numpy
from harness import randomise, run_backbone_test, run_model_saving_test, run_preset_test
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.layers.embeddings import sincos_embedding_1d, sincos_embedding_2d
from keras_vdiff.layers.video_blocks import FactorizedBlock, TextCrossAttentionBlock
from keras_vdiff.models.latte import Latte
from keras_vdiff.presets import registry
from keras_vdiff.video_diffusion import VideoDiffusion

FRAMES, SIZE, CHANNELS, TEXT_DIM, TEXT_LEN = 2, 8, 1, 12, 5
WIDTH = 24  # one width for every tiny video model in these tests (jax compiles each new shape once)
TINY = dict(input_shape=(FRAMES, SIZE, SIZE, CHANNELS), patch_size=2, hidden_dim=WIDTH, num_layers=2, num_heads=2)
CLASS = dict(conditioning="class", num_classes=3)
TEXT = dict(conditioning="text", text_dim=TEXT_DIM)


def _inputs(model, batch=2, seed=0, frames=FRAMES):
    rng = np.random.default_rng(seed)
    inputs = {
        "latents": rng.standard_normal((batch, frames, SIZE, SIZE, CHANNELS)).astype("float32"),
        "timesteps": rng.uniform(0, 999, (batch,)).astype("float32"),
    }
    if model.conditioning == "class":
        inputs["class_labels"] = rng.integers(0, model.num_classes + 1, (batch,)).astype("int32")
    elif model.conditioning == "text":
        mask = np.ones((batch, TEXT_LEN), "float32")
        mask[:, 3:] = 0.0  # the last two tokens are padding
        inputs.update(
            text_embeddings=rng.standard_normal((batch, TEXT_LEN, TEXT_DIM)).astype("float32"),
            text_mask=mask,
            pooled_text=rng.standard_normal((batch, TEXT_DIM)).astype("float32"),
        )
    return inputs


def _randomise(model, seed=0, scale=0.2):
    randomise(model, seed=seed, scale=scale)  # fresh models output zeros (adaLN-Zero, zero final layer)


def spread_beyond_the_patch(diff, frame):
    """Largest change in ``frame`` outside the top-left 2x2 patch (the one the tests perturb in frame 0)."""
    outside = diff[:, frame].copy()
    outside[:, :2, :2] = 0.0
    return outside.max()


VARIANTS = {
    "v1_class": dict(CLASS, variant=1),
    "v2_none": dict(variant=2, conditioning=None),
    "v3_class": dict(CLASS, variant=3, num_layers=1),
    "v4_class_rope": dict(CLASS, variant=4, num_layers=2, temporal_position="rope"),
    "v1_tubelet": dict(CLASS, variant=1, tubelet_size=2),
    "v1_rope": dict(CLASS, variant=1, temporal_position="rope"),
    "text_v1": dict(TEXT, variant=1, text_placement="v1"),
    "text_v2": dict(TEXT, variant=1, text_placement="v2"),
    "text_v3": dict(TEXT, variant=1, text_placement="v3"),
    "text_variant3": dict(TEXT, variant=3, num_layers=1),
    "text_variant4": dict(TEXT, variant=4, num_layers=2),
}


@pytest.mark.parametrize("name", ["v1_class", "v2_none", "v3_class", "v4_class_rope", "v1_tubelet", "v1_rope"])
def test_every_variant_mixes_space_and_time(name):
    model = Latte(**dict(TINY, **VARIANTS[name]))
    assert model.latent_shape == (FRAMES, SIZE, SIZE, CHANNELS) and model.is_video
    assert model.out_channels == 2 * CHANNELS  # learn_sigma defaults to True as in the paper
    _randomise(model)
    base = _inputs(model)
    ref = to_numpy(model(base))
    assert ref.shape == (2, FRAMES, SIZE, SIZE, 2 * CHANNELS)
    # Change the top-left patch of frame 0 only: with tubelets (frames fused in one token) the whole
    # token changes; otherwise space mixing reaches frame 0's other patches and time mixing frame 1.
    changed = dict(base, latents=base["latents"].copy())
    changed["latents"][:, 0, :2, :2] += 3.0
    diff = np.abs(to_numpy(model(changed)) - ref)
    assert spread_beyond_the_patch(diff, frame=1) > 1e-5, "a token of another frame at another position must change"
    assert spread_beyond_the_patch(diff, frame=0) > 1e-5


def test_one_split_head_block_only_reaches_its_own_frame_and_its_own_position():
    # Variant 4 with a single block: spatial heads see the changed frame, temporal heads the changed position
    # in the other frame, and nothing else of the other frame moves (the head split is the factorization).
    model = Latte(**dict(TINY, **CLASS, variant=4, num_layers=1))
    _randomise(model)
    base = _inputs(model)
    changed = dict(base, latents=base["latents"].copy())
    changed["latents"][:, 0, :2, :2] += 3.0
    diff = np.abs(to_numpy(model(changed)) - to_numpy(model(base)))
    assert spread_beyond_the_patch(diff, frame=0) > 1e-5
    assert diff[:, 1, :2, :2].max() > 1e-5
    assert spread_beyond_the_patch(diff, frame=1) == 0.0


@pytest.mark.parametrize("name", list(VARIANTS))
def test_backbone_shapes_and_config_round_trip(name):
    config = dict(TINY, **VARIANTS[name])
    run_backbone_test(Latte, config, expected_output_shape=(2, FRAMES, SIZE, SIZE, 2 * CHANNELS))  # learned sigma


def test_block_layout_of_the_variants():
    def kinds(**kw):
        model = Latte(**dict(TINY, num_layers=4, **kw))
        return [
            ("text" if isinstance(b, TextCrossAttentionBlock) else b.axis if isinstance(b, FactorizedBlock)
             else type(b).__name__) + ("+x" if getattr(b, "cross_attention", False) else "")
            for b in model.blocks
        ]

    assert kinds(variant=1, **CLASS) == ["spatial", "temporal"] * 2
    assert kinds(variant=2, **CLASS) == ["spatial", "spatial", "temporal", "temporal"]
    assert kinds(variant=3, **CLASS) == ["SpatioTemporalBlock"] * 4
    assert kinds(variant=4, **CLASS) == ["SplitHeadBlock"] * 4
    assert kinds(variant=1, text_placement="v1", **TEXT) == ["spatial", "text", "temporal"] * 2
    assert kinds(variant=1, text_placement="v2", **TEXT) == ["spatial+x", "temporal"] * 2
    assert kinds(variant=1, text_placement="v3", **TEXT) == ["spatial+x", "temporal+x"] * 2
    assert kinds(variant=3, **TEXT) == ["SpatioTemporalBlock+x"] * 4


@pytest.mark.parametrize("name", ["v1_class", "text_v2", "v3_class", "v1_tubelet"])
def test_at_initialisation_the_output_is_the_final_layer_of_the_embedded_input(name):
    # adaLN-Zero: every residual branch starts at zero, so the blocks are the identity and the output is
    # FinalLayer(patches + positions, c). Randomise only the embeddings and the head to see it.
    config = dict(TINY, **VARIANTS[name])
    model = Latte(**config)
    rng = np.random.default_rng(1)
    for layer in (model.patch_embedding, model.condition_embedding, model.final_layer):
        layer.set_weights([0.2 * rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()])
    inputs = _inputs(model)
    tubelet = config.get("tubelet_size", 1)
    x = to_numpy(model.patch_embedding(inputs["latents"]))
    grid = SIZE // 2
    x = x + sincos_embedding_2d(grid, grid, WIDTH)[None, None]
    if FRAMES // tubelet > 1:  # one token frame has no temporal positions: no table (as in diffusers)
        x = x + sincos_embedding_1d(FRAMES // tubelet, WIDTH)[None, :, None]
    c = model.condition_embedding.embed({k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()})
    expected = to_numpy(model.unpatchify(model.final_layer(keras.ops.convert_to_tensor(x), c)))
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(to_numpy(model(inputs)), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["text_v1", "text_v2", "text_v3", "text_variant3", "text_variant4"])
def test_padded_text_tokens_are_ignored_and_the_prompt_matters(name):
    assert_padding_ignored_and_prompt_used(Latte(**dict(TINY, **VARIANTS[name])))


def assert_padding_ignored_and_prompt_used(model):
    """Padded text tokens change nothing, a real token does, and the null prompt gives finite output."""
    _randomise(model)
    base = _inputs(model)
    ref = to_numpy(model(base))
    padded = dict(base, text_embeddings=base["text_embeddings"].copy())
    padded["text_embeddings"][:, 3:] = 100.0
    np.testing.assert_allclose(to_numpy(model(padded)), ref, atol=1e-5)
    prompt = dict(base, text_embeddings=base["text_embeddings"].copy())
    # A real token; pooled_text is unchanged, so only the token-level text path can see it.
    prompt["text_embeddings"][:, 0] += np.random.default_rng(7).standard_normal((2, TEXT_DIM))
    assert np.abs(to_numpy(model(prompt)) - ref).max() > 1e-5
    # The null prompt (all masked) works and uses the learned null pooled embedding.
    null = dict(base, text_mask=np.zeros_like(base["text_mask"]))
    out = to_numpy(model(null))
    assert np.isfinite(out).all() and np.abs(out - ref).max() > 1e-5


# Compiling a training step and a sampling loop costs seconds per model: the text form of the paper's
# variant 1 with learned sigma runs by default, the other variants (same path, other blocks) under `slow`.
FAST_FIT = ("text_v1",)


@pytest.mark.parametrize(
    "name", [n if n in FAST_FIT else pytest.param(n, marks=pytest.mark.slow) for n in VARIANTS]
)
def test_trains_with_fit_and_samples_with_generate(name):
    config = dict(TINY, **VARIANTS[name], learn_sigma=name in ("text_v1", "v1_class"))
    fit_and_generate(Latte(**config))


def fit_and_generate(backbone):
    """Two AdamW steps through ``VideoDiffusion.fit`` (weights change, loss finite), then a 2-step sample."""
    model = VideoDiffusion(
        backbone, GaussianDiffusion("cosine", prediction="epsilon", learn_sigma=backbone.learn_sigma)
    )
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    rng = np.random.default_rng(0)
    frames = backbone.latent_shape[0]
    data = {"videos": rng.integers(0, 256, (4, frames, SIZE, SIZE, CHANNELS)).astype("uint8")}
    cond = {}
    if backbone.conditioning == "class":
        data["labels"] = rng.integers(0, backbone.num_classes, (4,)).astype("int32")
        cond = dict(labels=[0, backbone.num_classes - 1])
    elif backbone.conditioning == "text":
        text = _inputs(backbone, batch=4)
        data.update({k: text[k] for k in ("text_embeddings", "text_mask", "pooled_text")})
        cond = dict(text_embeddings={k: text[k][:2] for k in ("text_embeddings", "text_mask", "pooled_text")})
    before = [to_numpy(w).copy() for w in backbone.trainable_weights]
    history = model.fit(data, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(np.abs(to_numpy(w) - b).max() > 0 for w, b in zip(backbone.trainable_weights, before))
    # torch.compile of a sampling step takes minutes on a CPU: the eager loop checks the same path there.
    compiled = keras.backend.backend() != "torch"
    videos = to_numpy(model.generate(batch_size=2, steps=2, sampler="ddim", seed=0, compile=compiled, **cond))
    assert videos.shape == (2, frames, SIZE, SIZE, CHANNELS) and videos.dtype == np.uint8


def test_save_to_preset_round_trip(tmp_path):
    model = Latte(**dict(TINY, **VARIANTS["text_v1"]))
    run_model_saving_test(model, tmp_path, input_data=_inputs(model))


def test_presets_are_registered_and_bad_arguments_raise_clear_errors():
    sizes = [f"latte_{size}_patch{patch}" for size in ("small", "base", "large", "xlarge") for patch in (2, 4, 8)]
    tiny = run_preset_test(Latte, sizes + ["latte_thesis", "latte_tiny"], build=("latte_tiny",))["latte_tiny"]
    for name in sizes:
        assert registry.get_preset(name)["config"]["patch_size"] == int(name[-1])
    thesis = registry.get_preset("latte_thesis")["config"]
    assert thesis["input_shape"] == (10, 28, 28, 4) and thesis["hidden_dim"] == 1152 and thesis["patch_size"] == 2
    assert tiny.latent_shape == (2, 8, 8, 1)
    for bad, match in (
        (dict(variant=5), "variant"),
        (dict(variant=1, num_layers=3), "num_layers"),
        (dict(variant=3, text_placement="v2", **TEXT), "text_placement"),
        (dict(text_placement="v4", **TEXT), "text_placement"),
        (dict(temporal_position="learned"), "temporal_position"),
        (dict(conditioning="text"), "text_dim"),
        (dict(conditioning="class", num_classes=None), "num_classes"),
        (dict(tubelet_size=3), "tubelet_size"),
        (dict(patch_size=3), "patch_size"),
        (dict(input_shape=(8, 8, 1)), "input_shape"),
    ):
        config = dict(TINY, **CLASS)
        config.update(bad)
        with pytest.raises(ValueError, match=match):
            Latte(**config)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="one backend is enough for a parameter count")
def test_latte_xl2_parameter_count():
    # Latte-XL/2 (official code: 16 frames of 32x32x4, patch 2, 28 blocks of width 1152, learned sigma) counted
    # per module. The fixed sin-cos spatial (256 x 1152) and temporal (16 x 1152) tables, frozen Parameters in
    # the official code, are constants here. Unconditional (the paper's FaceForensics / SkyTimelapse / Taichi
    # models): 673,681,568 = the paper's 673.68M; the class-conditional (UCF-101 style) preset adds the
    # (num_classes + 1) x 1152 label table.
    d, depth, p, c = 1152, 28, 2, 4
    patch = p * p * c * d + d
    t_embed = 256 * d + d + d * d + d
    block = (d * 3 * d + 3 * d + d * d + d) + (d * 4 * d + 4 * d + 4 * d * d + d) + (d * 6 * d + 6 * d)
    final = d * p * p * 2 * c + p * p * 2 * c + d * 2 * d + 2 * d
    expected = patch + t_embed + depth * block + final
    assert expected == 673_681_568
    config = registry.get_preset("latte_xlarge_patch2")["config"]
    assert Latte(**dict(config, conditioning=None, num_classes=None)).count_params() == expected
    assert Latte(**config).count_params() == expected + (1000 + 1) * d
