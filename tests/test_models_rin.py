import keras
import numpy as np
import pytest

from harness import run_backbone_test, run_model_saving_test, run_preset_test
from keras_vdiff.models import RIN
from keras_vdiff.presets import registry
from test_models_snapvideo import (
    CHANNELS,
    FRAMES,
    SIZE,
    TEXT,
    check_self_conditioning,
    fit_and_generate,
    latent_token_parameters,
    model_inputs,
    outputs,
    randomise,
)

TINY = registry.get_preset("rin_tiny")["config"]  # 4 frames of 8x8x1, 2x2x2 tubelets, 16 latents


def test_tubelets_and_one_group_reach_the_whole_video():
    # Without grouping every latent reads every tubelet: even with no latent self-attention layer a change in
    # one corner of frame 0 reaches the whole video. The tubelet (frames 0 and 1) changes as one token.
    model = RIN(**dict(TINY, num_latent_layers=0))
    assert model.latent_shape == (FRAMES, SIZE, SIZE, CHANNELS) and model.previous_latents_shape == (16, 32)
    randomise(model)
    inputs = model_inputs(model, seed=1, previous="random")
    out, lat = outputs(model, inputs)
    changed = dict(inputs, latents=inputs["latents"].copy())
    changed["latents"][:, 0, :2, :2] += np.random.default_rng(5).standard_normal((2, 2, 2, 1))
    out2, lat2 = outputs(model, changed)
    diff = np.abs(out2 - out)
    assert min(diff[:, f, 4:, 4:].max() for f in range(FRAMES)) > 1e-4  # the far corner of every frame
    assert np.abs(lat2 - lat).max(axis=-1).min() > 1e-4  # every latent token


def test_interface_convolution_starts_as_the_identity_and_trained_weights_change_the_output():
    # Built with the convolution and given the same weights elsewhere, a fresh model equals the one without it
    # (the pointwise projection starts at zero); once that projection is trained the output changes.
    plain = RIN(**TINY)
    conv = RIN(**dict(TINY, interface_conv_kernel=3))
    assert len(conv.interface_convs) == TINY["num_blocks"] and not plain.interface_convs
    randomise(plain)
    conv_weights = {w.path: w for w in conv.weights if "interface_conv" not in w.path}
    assert len(conv_weights) == len(plain.weights)
    for w in plain.weights:
        conv_weights[w.path].assign(w)
    inputs = model_inputs(plain, seed=2, previous="random")
    ref, ref_latents = outputs(plain, inputs)
    out, latents = outputs(conv, inputs)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    np.testing.assert_allclose(latents, ref_latents, atol=1e-5)
    for layer in conv.interface_convs:
        layer.pointwise.kernel.assign(0.3 * np.random.default_rng(3).standard_normal(layer.pointwise.kernel.shape))
    out, _ = outputs(conv, inputs)
    assert np.abs(out - ref).max() > 1e-3


def test_locality_prior_keeps_a_far_change_from_the_latents_anchored_elsewhere():
    # 16 latents on the 4x4 tubelet grid (one anchor each). With a strong prior and no latent self-attention,
    # a change in the top-left tubelet column reaches the latent anchored there but hardly the one anchored
    # in the opposite corner; without the prior every latent reads it.
    for locality in (True, False):
        model = RIN(**dict(TINY, num_latent_layers=0, num_blocks=1, latent_locality=locality))
        randomise(model)
        if locality:
            model.locality_biases[0].read_log_strength.assign(np.full((TINY["num_heads"],), np.log(50.0), "float32"))
        inputs = model_inputs(model, seed=1, previous="random")
        _, lat = outputs(model, inputs)
        changed = dict(inputs, latents=inputs["latents"].copy())
        changed["latents"][:, :, :2, :2] += np.random.default_rng(5).standard_normal((2, FRAMES, 2, 2, CHANNELS))
        _, lat2 = outputs(model, changed)
        moved = np.abs(lat2 - lat).max(axis=(0, 2))  # per latent
        if locality:
            assert moved[0] > 1e-3 and moved[15] < 1e-4 * moved[0]
        else:
            assert moved.min() > 1e-3


def test_self_conditioning_changes_the_output_and_zero_latents_add_nothing():
    check_self_conditioning(RIN(**TINY))


def test_trains_with_fit_and_samples_with_guidance_carrying_latents():
    fit_and_generate(RIN(**dict(TINY, num_blocks=1)))  # one block: half the compile time


def test_config_and_preset_round_trip(tmp_path):
    config = dict(TINY, **TEXT, adaln=True, interface_conv_kernel=3, latent_locality=True)
    expected = {"output": (2, FRAMES, SIZE, SIZE, CHANNELS), "latents": (2, 16, 32)}
    model, _ = run_backbone_test(RIN, config, expected_output_shape=expected)
    run_model_saving_test(model, tmp_path, input_data=model_inputs(model, previous="random"))


def test_presets_parameter_counts_and_bad_arguments():
    run_preset_test(RIN, ["rin_thesis", "rin_base", "rin_tiny"])  # TINY is the rin_tiny config
    thesis = registry.get_preset("rin_thesis")["config"]
    assert (thesis["patch_size"], thesis["patch_dim"], thesis["latent_dim"], thesis["num_latent_layers"],
            thesis["num_blocks"]) == (2, 768, 1024, 4, 5)
    base = registry.get_preset("rin_base")["config"]
    assert base["num_latents"] == 256 and base["num_latent_layers"] == 4 and base["self_conditioning"]
    for config in (TINY, dict(TINY, **TEXT, learn_sigma=True), dict(TINY, interface_conv_kernel=3),
                   dict(TINY, latent_locality=True)):
        model = RIN(**config)
        expected = latent_token_parameters(config, tubelet_size=config["tubelet_size"],
                                           num_latents=config["num_latents"])
        assert model.count_params() == expected
    for bad, match in (
        (dict(tubelet_size=3), "tubelet_size"),
        (dict(num_latents=0), "num_latents"),
        (dict(num_latent_layers=1.5), "num_latent_layers"),
        (dict(latent_dim=30), "num_heads"),
        (dict(learn_sigma="yes"), "learn_sigma"),
        (dict(conditioning="image"), "conditioning"),
        (dict(interface_conv_kernel=2), "interface_conv_kernel"),
        (dict(interface_conv_kernel=-1), "interface_conv_kernel"),
        (dict(latent_locality="yes"), "latent_locality"),
    ):
        with pytest.raises(ValueError, match=match):
            RIN(**dict(TINY, **bad))


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="one backend is enough for a parameter count")
def test_thesis_parameter_count():
    config = registry.get_preset("rin_thesis")["config"]
    expected = latent_token_parameters(config, tubelet_size=2, num_latents=256)
    assert RIN(**config).count_params() == expected
