import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from harness import run_backbone_test, run_model_saving_test, run_preset_test
from keras_vdiff import VideoDiffusion
from keras_vdiff.models import SnapVideo
from keras_vdiff.presets import registry

FRAMES, SIZE, CHANNELS, TEXT_DIM, TEXT_LEN = 4, 8, 1, 12, 5
TINY = registry.get_preset("snapvideo_tiny")["config"]  # 4 frames of 8x8x1, 4x4 patch grid, 2x2 groups, 16 latents
TEXT = dict(conditioning="text", text_dim=TEXT_DIM, num_classes=None, num_registers=2, text_layers=1)
TEXT_KEYS = ("text_embeddings", "text_mask", "pooled_text")


def model_inputs(model, batch=2, seed=0, previous="zeros"):
    rng = np.random.default_rng(seed)
    inputs = {
        "latents": rng.standard_normal((batch,) + tuple(model.latent_shape)).astype("float32"),
        "timesteps": rng.uniform(0, 999, (batch,)).astype("float32"),
    }
    if model.conditioning == "class":
        inputs["class_labels"] = rng.integers(0, model.num_classes + 1, (batch,)).astype("int32")
    elif model.conditioning == "text":
        mask = np.ones((batch, TEXT_LEN), "float32")
        mask[:, 3:] = 0.0
        inputs.update(
            text_embeddings=rng.standard_normal((batch, TEXT_LEN, TEXT_DIM)).astype("float32"),
            text_mask=mask,
            pooled_text=rng.standard_normal((batch, TEXT_DIM)).astype("float32"),
        )
    if model.self_conditioning:
        shape = (batch,) + model.previous_latents_shape
        inputs["previous_latents"] = (
            np.zeros(shape, "float32") if previous == "zeros" else rng.standard_normal(shape).astype("float32")
        )
    return inputs


def randomise(model, seed=0, scale=0.2):
    # Fresh models output zeros (zero final layer, adaLN-Zero): give every weight random values.
    rng = np.random.default_rng(seed)
    model.set_weights([scale * rng.standard_normal(w.shape).astype("float32") for w in model.get_weights()])


def outputs(model, inputs):
    out = model(inputs)
    if model.self_conditioning:
        return to_numpy(out["output"]), to_numpy(out["latents"])
    return to_numpy(out), None


def check_self_conditioning(model):
    """previous_latents changes the output; all-zero previous latents add exactly nothing."""
    randomise(model)
    zeros = model_inputs(model)
    noisy = model_inputs(model, previous="random")
    out0, lat0 = outputs(model, zeros)
    out1, lat1 = outputs(model, noisy)
    assert lat0.shape == (2,) + model.previous_latents_shape
    assert np.abs(out1 - out0).max() > 1e-3 and np.abs(lat1 - lat0).max() > 1e-3
    # Zero previous latents: the output does not depend on the self-conditioning weights at all.
    layer = model.latent_self_conditioning
    for w in layer.weights:
        w.assign(3.0 * np.ones(w.shape, "float32"))
    out0_again, _ = outputs(model, zeros)
    np.testing.assert_allclose(out0_again, out0, atol=1e-5)
    assert np.abs(outputs(model, noisy)[0] - out1).max() > 1e-3


def fit_and_generate(backbone, epochs=6):
    """Train a few AdamW steps with VideoDiffusion.fit (loss finite and falling), then sample with guidance
    and check that the sampler carries the self-conditioning latents from step to step."""
    model = VideoDiffusion(
        backbone, GaussianDiffusion("cosine", prediction="epsilon", learn_sigma=backbone.learn_sigma), seed=0
    )
    model.compile(optimizer=keras.optimizers.AdamW(3e-3))
    rng = np.random.default_rng(0)
    # Smooth moving blobs: structure a tiny model can start to learn in a few steps.
    yy, xx = np.mgrid[:SIZE, :SIZE]
    videos = np.stack([
        np.stack([np.exp(-((yy - 3 - (f + s) % 3) ** 2 + (xx - 2 - f) ** 2) / 4.0) for f in range(FRAMES)])
        for s in range(8)
    ])[..., None]
    data = {"videos": (videos * 2.0 - 1.0).astype("float32")}
    cond = {}
    if backbone.conditioning == "class":
        data["labels"] = (np.arange(8) % backbone.num_classes).astype("int32")
        cond = dict(labels=[1])
    elif backbone.conditioning == "text":
        text = model_inputs(backbone, batch=8)
        data.update({k: text[k] for k in TEXT_KEYS})
        cond = dict(text_embeddings={k: text[k][:1] for k in TEXT_KEYS})
    losses = model.fit(data, batch_size=4, epochs=epochs, verbose=0).history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0], losses
    videos = model.generate(steps=2, sampler="ddim", guidance_scale=3.0, seed=0, **cond)
    assert videos.shape == (1, FRAMES, SIZE, SIZE, CHANNELS) and videos.dtype == np.uint8

    # Carried latents (eager loop, so the values can be recorded): step 1 gets zeros, step 2 the latents that
    # step 1 returned, with separate rows for the conditional and the null half of guidance (one video: the
    # guided batch has 2 rows, the shape of the other tests, so eager JAX reuses their compiled ops).
    seen = []
    original = model._backbone_output

    def recording(inputs, training):
        output, latents = original(inputs, training)
        seen.append((to_numpy(inputs["previous_latents"]), to_numpy(latents)))
        return output, latents

    model._backbone_output = recording
    try:
        model.generate(steps=2, sampler="ddim", guidance_scale=3.0, seed=0, compile=False, **cond)
    finally:
        del model._backbone_output
    assert len(seen) == 2 and seen[0][0].shape == (2,) + backbone.previous_latents_shape
    np.testing.assert_array_equal(seen[0][0], 0.0)
    np.testing.assert_allclose(seen[1][0], seen[0][1], atol=1e-6)
    assert np.abs(seen[1][0]).max() > 1e-3
    assert np.abs(seen[1][0][0] - seen[1][0][1]).max() > 1e-4  # conditional and null rows differ
    return model


def test_groups_stay_apart_without_the_global_latent_layers():
    # 8x8 frames, patch 2, 2x2 groups: group 0 is the top-left 4x4 pixels of every frame.
    inputs = None
    for layers in (0, 1):
        # FiT's local layers (self-attention within each group) keep the groups apart too.
        model = SnapVideo(**dict(TINY, num_latent_layers=layers, num_local_layers=1 - layers))
        randomise(model)
        inputs = model_inputs(model, seed=1, previous="random")
        out, lat = outputs(model, inputs)
        changed = dict(inputs, latents=inputs["latents"].copy())
        changed["latents"][:, 1, :4, :4] += np.random.default_rng(5).standard_normal((2, 4, 4, 1))
        out2, lat2 = outputs(model, changed)
        diff = np.abs(out2 - out)
        outside = diff.copy()
        outside[:, :, :4, :4] = 0.0
        lat_diff = np.abs(lat2 - lat).reshape(2, 4, 4, -1)  # (batch, group, latent, dim)
        # Group 0 spans all frames: the change in frame 1 reaches frames 0, 2 and 3 of the same region.
        assert min(diff[:, f, :4, :4].max() for f in (0, 2, 3)) > 1e-4
        if layers == 0:
            assert outside.max() < 1e-5 and lat_diff[:, 1:].max() < 1e-5
        else:
            assert outside.max() > 1e-4 and lat_diff[:, 1:].max() > 1e-4


def test_identical_frames_get_different_updates():
    # The thesis' SnapVideo gave patch tokens only a spatial position: a group's latents then cannot tell its
    # frames apart and every frame of a still input gets the same update (its static videos). Ours can.
    model = SnapVideo(**TINY)
    randomise(model)
    inputs = model_inputs(model)
    inputs["latents"][:] = inputs["latents"][:, :1]
    out, _ = outputs(model, inputs)
    assert min(np.abs(out[:, f] - out[:, 0]).max() for f in range(1, FRAMES)) > 1e-3


def test_self_conditioning_changes_the_output_and_zero_latents_add_nothing():
    check_self_conditioning(SnapVideo(**TINY))


@pytest.mark.parametrize("adaln", [False, True])
def test_text_versions_use_the_prompt_and_ignore_padding(adaln):
    model = SnapVideo(**dict(TINY, **TEXT, adaln=adaln))
    randomise(model)
    inputs = model_inputs(model)
    out, _ = outputs(model, inputs)
    padded = dict(inputs, text_embeddings=inputs["text_embeddings"].copy())
    padded["text_embeddings"][:, 3:] = 50.0
    np.testing.assert_allclose(outputs(model, padded)[0], out, atol=1e-4)
    other = dict(inputs, text_embeddings=inputs["text_embeddings"].copy())
    other["text_embeddings"][1, :3] += 1.0
    out2, _ = outputs(model, other)
    np.testing.assert_allclose(out2[0], out[0], atol=1e-5)  # prompts of a batch never mix
    assert np.abs(out2[1] - out[1]).max() > 1e-3
    # v2 adds adaLN-Zero on the pooled condition to the condition MLP and every latent layer.
    has_modulation = any("modulation" in w.path and "block_" in w.path for w in model.weights)
    assert has_modulation == adaln


def test_trains_with_fit_and_samples_with_guidance_carrying_latents():
    fit_and_generate(SnapVideo(**dict(TINY, num_blocks=1)))  # one block: half the compile time


def test_config_and_preset_round_trip(tmp_path):
    config = dict(TINY, **TEXT, adaln=True, num_groups=(1, 2))
    expected = {"output": (2, FRAMES, SIZE, SIZE, CHANNELS), "latents": (2, 8, 32)}  # 2 groups x 4 latents
    model, _ = run_backbone_test(SnapVideo, config, expected_output_shape=expected)
    assert model.groups == (1, 2) and SnapVideo.from_config(model.get_config()).groups == (1, 2)
    run_model_saving_test(model, tmp_path, input_data=model_inputs(model, previous="random"))


def latent_token_parameters(config, tubelet_size=1, num_latents=None):
    """Parameter count of a latent-token backbone, counted by hand from the architecture."""
    c = dict(mlp_ratio=4.0, adaln=False, num_registers=16, text_layers=2, self_conditioning=True, learn_sigma=True,
             conditioning=None)
    c.update(config)
    frames, h, w, ch = c["input_shape"]
    dx, dl, k, r = c["patch_dim"], c["latent_dim"], c["num_latent_layers"], c["mlp_ratio"]

    def dense(a, b, bias=True):
        return a * b + (b if bias else 0)

    def attention(dq, dc, inner, out):
        return dense(dq, inner) + 2 * dense(dc, inner) + dense(inner, out)

    def mlp(d):
        return dense(d, int(d * r)) + dense(int(d * r), d)

    def norm(d, affine=True):
        return 2 * d if affine else 0

    adaln = c["adaln"]
    modulation = dense(dl, 3 * dl) if adaln else 0
    block = (norm(dl) + norm(dl) + attention(dl, dl, dl, dl)  # condition cross-attention (+ context norm)
             + norm(dl, not adaln) + mlp(dl) + modulation  # condition MLP
             + norm(dl) + norm(dx) + attention(dl, dx, dl, dl) + norm(dl) + mlp(dl)  # read
             + k * (2 * norm(dl, not adaln) + attention(dl, dl, dl, dl) + mlp(dl) + 2 * modulation)  # process
             + norm(dx) + norm(dl) + attention(dx, dl, dx, dx) + norm(dx) + mlp(dx)  # write
             + c.get("num_local_layers", 0) * (2 * norm(dx) + attention(dx, dx, dx, dx) + mlp(dx)))  # local
    kc = c.get("interface_conv_kernel", 0)
    if kc:  # RIN's interface convolution: depthwise kernel + bias, GroupNorm, pointwise
        block += kc**3 * dx + dx + norm(dx) + dense(dx, dx)
    if c.get("latent_locality"):  # RIN's locality prior: one learned strength per read head and per write head
        block += c["num_heads"] + c.get("patch_num_heads", c["num_heads"])
    out_channels = ch * (2 if c["learn_sigma"] else 1)
    p = c["patch_size"]
    total = dense(tubelet_size * p * p * ch, dx) + c["num_blocks"] * block
    total += dense(256, dl) + dense(dl, dl)  # timestep embedding
    if c["conditioning"] == "class":
        total += (c["num_classes"] + 1) * dl
    elif c["conditioning"] == "text":
        dt = c["text_dim"]
        total += dense(dt, dl) + c["num_registers"] * dl + norm(dl)
        total += c["text_layers"] * (2 * norm(dl) + attention(dl, dl, dl, dl) + mlp(dl))
        total += dense(dt, dl) + dense(dl, dl) + dl  # pooled text embedding + null
    if num_latents is None:
        side = int(round(c["num_groups"] ** 0.5)) if isinstance(c["num_groups"], int) else None
        groups = side * side if side else c["num_groups"][0] * c["num_groups"][1]
        num_latents = groups * c["latents_per_group"]
    total += num_latents * dl
    if c["self_conditioning"]:
        total += dense(dl, dl, bias=False) + dl
    total += dense(dl, 2 * dx) + dense(dx, tubelet_size * p * p * out_channels)
    return total


def test_presets_parameter_counts_and_bad_arguments():
    run_preset_test(SnapVideo, ["snapvideo_thesis", "snapvideo_thesis_v2", "snapvideo_thesis_groups49", "snapvideo_tiny"],
                    build=())  # TINY (the snapvideo_tiny config) is built by the other tests
    thesis = registry.get_preset("snapvideo_thesis")["config"]
    assert (thesis["patch_size"], thesis["patch_dim"], thesis["latent_dim"], thesis["num_latent_layers"],
            thesis["num_blocks"], thesis["num_groups"]) == (2, 768, 1024, 4, 5, 4)
    assert registry.get_preset("snapvideo_thesis_groups49")["config"]["num_groups"] == 49
    assert registry.get_preset("snapvideo_thesis_v2")["config"]["adaln"] is True
    for config in (TINY, dict(TINY, **TEXT, adaln=True), dict(TINY, conditioning=None, num_classes=None,
                                                               self_conditioning=False, learn_sigma=True,
                                                               num_local_layers=2)):
        model = SnapVideo(**config)
        assert model.count_params() == latent_token_parameters(config)
    unconditional = SnapVideo(**dict(TINY, conditioning=None, num_classes=None, self_conditioning=False))
    out = unconditional(model_inputs(unconditional))
    assert tuple(out.shape) == (2, FRAMES, SIZE, SIZE, CHANNELS)  # a plain tensor without self-conditioning
    for bad, match in (
        (dict(num_groups=3), "num_groups"),
        (dict(num_groups=16 * 4), "num_groups"),
        (dict(num_groups=(3, 1)), "num_groups"),
        (dict(latents_per_group=0), "latents_per_group"),
        (dict(num_latent_layers=-1), "num_latent_layers"),
        (dict(num_local_layers=-1), "num_local_layers"),
        (dict(latent_dim=30), "num_heads"),
        (dict(patch_dim=18), "patch_dim|hidden_dim"),
        (dict(patch_size=3), "patch_size"),
        (dict(adaln="v2"), "adaln"),
        (dict(self_conditioning=1), "self_conditioning"),
        (dict(conditioning="text"), "text_dim"),
        (dict(conditioning="class", num_classes=None), "num_classes"),
        (dict(input_shape=(8, 8, 1)), "input_shape"),
        (dict(num_registers=-2), "num_registers"),
    ):
        with pytest.raises(ValueError, match=match):
            SnapVideo(**dict(TINY, **bad))


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="one backend is enough for a parameter count")
def test_thesis_parameter_count():
    config = registry.get_preset("snapvideo_thesis")["config"]
    model = SnapVideo(**config)
    assert model.count_params() == latent_token_parameters(config)
    assert model.num_latents == 256 and model.groups == (2, 2)
