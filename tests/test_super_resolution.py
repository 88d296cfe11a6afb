"""Cascaded super-resolution: the SR conditioning and augmentation paths, the U-Net options, the cascade chain.

References are independent: numpy block means, a numpy bilinear 2x upsampling (half-pixel centres,
edges clamped), scipy's Gaussian filter, and a hand-written DDIM loop around the bare backbone.
"""

import keras
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

import keras_vdiff as kv
from keras_vdiff.diffusion.conditioning_augmentation import (
    augment_with_noise,
    blur_frames,
    downsample_frames,
    resize_frames,
)
from keras_vdiff.diffusion.samplers import get_sampler
from keras_vdiff.tasks.cascade import frames_at_stride
from tests.conftest import to_numpy
from tests.harness import randomise

B, F, H, C = 2, 3, 8, 1
# A tiny fully convolutional VDM U-Net: one level, no attention anywhere, pseudo-3D convolutions.
CONV = dict(in_channels=C, dim=8, dim_mults=(1,), num_res_blocks=1, norm_groups=4, attention_resolutions=(),
            temporal_attention_resolutions=(), mid_attention=False, conv_type="pseudo3d")


def _unet(image_size=H, num_frames=F, **kwargs):
    return kv.models.VDMUNet(image_size=image_size, num_frames=num_frames, **dict(CONV, **kwargs))


def _ssr(aug=True, seed=0, **kwargs):
    backbone = randomise(_unet(num_extra_input_channels=C, aug_level_conditioning=aug), seed=seed, scale=0.2)
    process = kv.diffusion.GaussianDiffusion("cosine", prediction="v")
    options = dict(max_aug_level=0.5, aug_level=0.1) if aug else dict(max_aug_level=0.0, aug_level=0.0)
    return kv.SuperResolutionDiffusion(backbone, process, interpolation="bilinear", **dict(options, **kwargs))


def _bilinear_2x(x):
    """numpy 2x bilinear upsampling of (..., h, w, c) frames: source coordinate (i + 0.5) / 2 - 0.5, clamped."""
    def along(x, axis):
        n = x.shape[axis]
        src = (np.arange(2 * n) + 0.5) / 2 - 0.5
        lo = np.clip(np.floor(src).astype(int), 0, n - 1)
        hi = np.clip(lo + 1, 0, n - 1)
        w = np.clip(src - np.floor(src), 0, 1)
        w = np.where(src < 0, 0.0, w)
        shape = [1] * x.ndim
        shape[axis] = -1
        w = w.reshape(shape)
        return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w
    return along(along(x, -3), -2)


def _low_res(seed=0, batch=B):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, F, H // 2, H // 2, C)).astype("float32")


def test_condition_tensor_functions_match_numpy_references():
    rng = np.random.default_rng(0)
    videos = rng.standard_normal((B, F, H, H, C)).astype("float32")
    blocks = videos.reshape(B, F, H // 2, 2, H // 2, 2, C).mean(axis=(3, 5))
    np.testing.assert_allclose(to_numpy(downsample_frames(videos, 2)), blocks, atol=1e-6)
    np.testing.assert_allclose(to_numpy(resize_frames(blocks, (H, H), "bilinear")), _bilinear_2x(blocks), atol=1e-5)
    assert tuple(resize_frames(blocks, (H, H), "bicubic").shape) == (B, F, H, H, C)
    noise = rng.standard_normal(blocks.shape).astype("float32")
    levels = np.array([0.0, 0.3], "float32")
    augmented = to_numpy(augment_with_noise(blocks, levels, noise))
    np.testing.assert_array_equal(augmented[0], blocks[0])  # level 0: the low-resolution video itself
    angle = 0.3 * np.pi / 2
    np.testing.assert_allclose(augmented[1], np.cos(angle) * blocks[1] + np.sin(angle) * noise[1], atol=1e-6)
    sigma = np.array([0.0, 0.6], "float32")
    blurred = to_numpy(blur_frames(videos, sigma))
    np.testing.assert_array_equal(blurred[0], videos[0])
    reference = gaussian_filter1d(gaussian_filter1d(videos[1], 0.6, axis=1, mode="nearest", truncate=2 / 0.6),
                                  0.6, axis=2, mode="nearest", truncate=2 / 0.6)
    np.testing.assert_allclose(blurred[1], reference, atol=1e-5)


def test_unet_aug_level_embedding_reaches_the_output_and_fully_convolutional_option():
    unet = _unet(aug_level_conditioning=True)
    names = [layer.name for layer in unet.layers] + list(unet.unet_layers)
    assert not [name for name in names if "attn" in name]  # fully convolutional: no attention block at all
    assert "aug_level" in unet.input
    rng = np.random.default_rng(1)
    inputs = {"latents": rng.standard_normal((B, F, H, H, C)).astype("float32"),
              "timesteps": np.array([10.0, 500.0], "float32")}

    def output(level, model):
        return to_numpy(model(dict(inputs, aug_level=np.full((B,), level, "float32"))))

    randomise(unet, seed=2, scale=0.2)
    embedding = unet.unet_layers["condition_embedding"].aug_level_embedding.dense_2
    kernel = to_numpy(embedding.kernel)
    embedding.kernel.assign(np.zeros_like(kernel))  # as initialised: the new embedding adds nothing
    np.testing.assert_allclose(output(0.0, unet), output(0.7, unet), atol=1e-6)
    embedding.kernel.assign(kernel)
    assert np.abs(output(0.0, unet) - output(0.7, unet)).max() > 1e-3
    restored = kv.models.VDMUNet.from_config(unet.get_config())
    assert restored.aug_level_conditioning and not restored.mid_attention


def test_training_input_is_the_upsampled_low_res():
    model = _ssr(aug=False)
    rng = np.random.default_rng(3)
    latents = rng.uniform(-1, 1, (B, F, H, H, C)).astype("float32")
    noise = rng.standard_normal(latents.shape).astype("float32")
    t = keras.ops.convert_to_tensor(np.array([100, 700], "int32"))
    x_t = to_numpy(model.process.add_noise(latents, noise, t))
    output = to_numpy(model._denoise_for_loss({"videos": latents}, latents, noise, x_t, t, 1, False))
    low = latents.reshape(B, F, H // 2, 2, H // 2, 2, C).mean(axis=(3, 5))
    reference = model.backbone({"latents": keras.ops.convert_to_tensor(np.concatenate([x_t, _bilinear_2x(low)], -1)),
                                "timesteps": model.process.model_timesteps(t)})
    np.testing.assert_allclose(output, to_numpy(reference), atol=1e-5)


@pytest.mark.slow
def test_fit_with_noise_augmentation_trains():
    latents = np.random.default_rng(3).uniform(-1, 1, (B, F, H, H, C)).astype("float32")
    model = _ssr(aug=True, blur_prob=0.5)  # augmentation and blur on: the loss trains and stays finite
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    history = model.fit({"videos": (127.5 * (latents + 1)).astype("uint8")}, epochs=2, batch_size=B, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def _ddim_reference(model, low_res, x_T, steps):
    """DDIM (eta 0) around the bare backbone with ``[x | bilinear(low_res)]`` and ``aug_level = 0``."""
    sampler = get_sampler("ddim", model.process, steps)
    condition = _bilinear_2x(low_res)

    def model_fn(x, t, carry):
        inputs = {"latents": keras.ops.concatenate([x, condition], axis=-1),
                  "timesteps": keras.ops.ones((x.shape[0],)) * t, "aug_level": keras.ops.zeros((x.shape[0],))}
        return model.backbone(inputs), carry

    state = sampler.initial_state(x_T)
    for i in range(steps):
        state = sampler.step(model_fn, i, state)
    return to_numpy(sampler.result(state))


def test_zero_augmentation_at_sampling_reproduces_plain_conditioning():
    model = _ssr(aug=True)
    low_res = _low_res()
    x_T = np.random.default_rng(4).standard_normal((B, F, H, H, C)).astype("float32")
    common = dict(steps=3, sampler="ddim", initial_noise=x_T, return_latents=True)
    plain = model.generate(low_res, aug_level=0.0, seed=0, **common)
    np.testing.assert_allclose(plain, _ddim_reference(model, low_res, x_T, 3), atol=1e-4)
    # the augmentation noise of another seed changes nothing at level 0, a positive level changes the samples
    np.testing.assert_allclose(model.generate(low_res, aug_level=0.0, seed=7, **common), plain, atol=1e-5)
    assert np.abs(model.generate(low_res, aug_level=0.4, seed=0, **common) - plain).max() > 1e-3
    plan = model._with_low_res(model.prepare_generation(batch_size=B), model.low_res_condition(low_res, None),
                               keras.ops.full((B,), 0.4))
    np.testing.assert_allclose(to_numpy(plan["conditions"]["aug_level"]), [0.4, 0.4])
    videos = model.generate((127.5 * (low_res + 1)).astype("uint8"), steps=2)
    assert videos.shape == (B, F, H, H, C) and videos.dtype == np.uint8


def test_projection_path_and_errors():
    latte = kv.models.Latte(input_shape=(F, H, H, C), patch_size=4, hidden_dim=16, num_layers=2, num_heads=2,
                            conditioning=None)
    model = kv.SuperResolutionDiffusion(latte, max_aug_level=0.0, aug_level=0.0)
    assert not model.concatenate_condition and model.condition_projection is not None
    assert model.generate(_low_res(), steps=1).shape == (B, F, H, H, C)
    with pytest.raises(ValueError, match="aug_level"):  # the level would not reach a backbone without the input
        kv.SuperResolutionDiffusion(latte)
    with pytest.raises(ValueError, match="num_extra_input_channels"):
        kv.SuperResolutionDiffusion(_unet(num_extra_input_channels=C + 1, aug_level_conditioning=True))
    with pytest.raises(ValueError, match="low_res_videos"):
        _ssr().generate(np.zeros((B, F, H, H, C), "float32"), steps=1)
    with pytest.raises(ValueError, match="aug_level"):
        _ssr().generate(_low_res(), aug_level=1.5, steps=1)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(_ssr(blur_prob=0.5)))
    assert isinstance(restored, kv.SuperResolutionDiffusion) and restored.blur_prob == 0.5


def _stages():
    classes = dict(conditioning="class", num_classes=4)
    base = kv.VideoDiffusion(randomise(_unet(image_size=4, **classes), seed=5, scale=0.2),
                             kv.diffusion.GaussianDiffusion("cosine"))
    tsr = kv.temporal_super_resolution(
        randomise(_unet(image_size=4, num_frames=2 * F - 1, num_extra_input_channels=C + 1, **classes), seed=6,
                  scale=0.2), kv.diffusion.GaussianDiffusion("cosine"), stride=2, substitute_known_frames=True)
    ssr_backbone = _unet(num_frames=2 * F - 1, num_extra_input_channels=C, aug_level_conditioning=True, **classes)
    ssr = kv.SuperResolutionDiffusion(randomise(ssr_backbone, seed=7, scale=0.2),
                                      kv.diffusion.GaussianDiffusion("cosine"))
    return [base, tsr, ssr]


def test_cascade_chains_base_tsr_ssr_and_passes_labels_to_every_stage():
    stages = _stages()
    seen = []
    for stage in stages:
        generate = stage.generate

        def spy(*args, _generate=generate, **kwargs):
            seen.append(kwargs.get("labels"))
            return _generate(*args, **kwargs)

        stage.generate = spy
    cascade = kv.Cascade(stages)
    eager = [dict(compile=False)] * 3  # two steps per stage: no compiled loop to build
    final, outputs = cascade.generate(labels=[0, 3], steps=2, return_stages=True, stage_options=eager)
    assert [o.shape for o in outputs] == [(B, F, 4, 4, C), (B, 2 * F - 1, 4, 4, C), (B, 2 * F - 1, H, H, C)]
    assert final.dtype == np.uint8 and final is outputs[-1]
    np.testing.assert_array_equal(outputs[1][:, ::2], outputs[0])  # the TSR keeps the base's frames (substituted)
    assert all(list(labels) == [0, 3] for labels in seen)
    known, mask = frames_at_stride(outputs[0], 2, 2 * F - 1)
    np.testing.assert_array_equal(mask[0], [1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="stage 1"):
        kv.Cascade([stages[0], stages[2]])  # 3 frames into an SSR stage of 5


@pytest.mark.slow
def test_cascade_preset_round_trip(tmp_path):
    cascade = kv.Cascade(_stages())
    cascade.save_to_preset(tmp_path / "cascade")
    loaded = kv.Cascade.from_preset(tmp_path / "cascade")
    assert [type(s).__name__ for s in loaded.stages] == ["VideoDiffusion", "FrameConditionedDiffusion",
                                                          "SuperResolutionDiffusion"]
    np.testing.assert_array_equal(loaded.generate(labels=[1, 2], steps=2), cascade.generate(labels=[1, 2], steps=2))


def test_shipped_ssr_stage_chains_after_the_shipped_base():
    ssr = kv.VideoDiffusion.from_preset("ssr_moving_mnist_16_to_32")
    assert isinstance(ssr, kv.SuperResolutionDiffusion) and ssr.low_res_shape == (10, 16, 16, 1)
    assert ssr.backbone.latent_shape == (10, 32, 32, 1) and ssr.backbone.aug_level_conditioning
    cascade = kv.Cascade.from_preset(["latte_tiny_moving_mnist", ssr])
    assert [s.conditioning for s in cascade.stages] == ["text", "text"]
    evaluation = kv.presets.registry.get_preset("ssr_moving_mnist_16_to_32")["metadata"]["evaluation"]
    assert evaluation["cascade_32"]["conditional_accuracy"] >= 0.9
