"""Masked-frame conditioning: masks, the backbone input, ConsistI2V substitution, training and image-to-video."""

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_vdiff.diffusion.frame_masks import (
    first_frame_mask,
    frame_condition,
    frame_mask,
    interpolation_mask,
    mask_known_frames,
    masked_frame_inputs,
    training_masks,
)
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.diffusion.schedules import NoiseSchedule
from keras_vdiff.tasks import FrameConditionedDiffusion
from keras_vdiff.models.inflation import MakeAVideoUNet
from keras_vdiff.models.latte import Latte

B, F, S, C = 2, 3, 8, 2
SMALL = dict(image_size=S, in_channels=C, dim=8, dim_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
             num_heads=2, norm_groups=4)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _randomise(model, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    model.set_weights([scale * rng.standard_normal(w.shape).astype("float32") for w in model.get_weights()])


def _process():
    return GaussianDiffusion(NoiseSchedule("cosine", num_timesteps=50), prediction="v")


def _uint8_videos(seed=3):
    return np.random.default_rng(seed).integers(0, 256, (B, F, S, S, C)).astype("uint8")


@pytest.fixture(scope="module")
def model():
    """A Make-A-Video U-Net with concatenated masked-frame channels, random weights everywhere."""
    backbone = MakeAVideoUNet(num_frames=F, fps_conditioning=True, num_extra_input_channels=C + 1, **SMALL)
    _randomise(backbone, seed=1)
    return FrameConditionedDiffusion(backbone, _process(), mask_modes=("first_frame", "interpolation"), seed=0)


def test_masks():
    np.testing.assert_array_equal(first_frame_mask(4, batch_size=2), [[1, 0, 0, 0]] * 2)
    np.testing.assert_array_equal(interpolation_mask(6, 2), [[1, 0, 1, 0, 1, 1]])
    np.testing.assert_array_equal(frame_mask(4, [0, -1]), [[1, 0, 0, 1]])
    masks = training_masks(4, ("first_frame", "prediction", "random", "none"), num_context_frames=2)
    np.testing.assert_array_equal(masks, [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="known_frames"):
        frame_mask(4, [4])
    with pytest.raises(ValueError, match="stride"):
        interpolation_mask(4, 0)
    with pytest.raises(ValueError, match="mask mode"):
        training_masks(4, ("last_frame",))


def test_masked_frame_inputs_layout():
    noisy, clean = _rand(B, F, S, S, C, seed=4), _rand(B, F, S, S, C, seed=5)
    mask = np.array([[1, 0, 0], [1, 0, 1]], "float32")
    x = to_numpy(masked_frame_inputs(noisy, clean, mask))
    assert x.shape == (B, F, S, S, 2 * C + 1)
    np.testing.assert_array_equal(x[..., :C], noisy)
    np.testing.assert_array_equal(x[..., C : 2 * C], clean * mask[:, :, None, None, None])
    np.testing.assert_array_equal(x[..., 2 * C], np.broadcast_to(mask[:, :, None, None], (B, F, S, S)))


def test_known_frames_reach_the_backbone_input_channels(model):
    noisy, clean = _rand(B, F, S, S, C, seed=6), _rand(B, F, S, S, C, seed=7)
    mask = first_frame_mask(F, B)
    condition = frame_condition(clean, mask)
    x = to_numpy(model.backbone_latents(noisy, condition))
    np.testing.assert_array_equal(x, to_numpy(masked_frame_inputs(noisy, clean, mask)))
    # ConsistI2V substitution per sample: sample 0 gets its clean first frame, sample 1 keeps the noise
    x = to_numpy(model.backbone_latents(noisy, condition, substitute=np.array([1.0, 0.0], "float32")))
    np.testing.assert_array_equal(x[0, 0, ..., :C], clean[0, 0])
    np.testing.assert_array_equal(x[0, 1:, ..., :C], noisy[0, 1:])
    np.testing.assert_array_equal(x[1, ..., :C], noisy[1])
    # and they change the output: a different first frame gives a different denoiser output
    out = [to_numpy(model({"latents": model.backbone_latents(noisy, frame_condition(z, mask)),
                           "timesteps": np.array([10.0, 30.0], "float32")})) for z in (clean, clean + 1.0)]
    assert np.abs(out[0] - out[1]).max() > 1e-4


def test_substitution_keeps_the_given_frames_and_plain_sampling_does_not(model):
    videos = _uint8_videos()
    kwargs = dict(steps=2, sampler="ddim", seed=0, compile=False, fps=8.0)
    kept = model.generate(known_frames=videos[:, 0], substitute_known_frames=True, **kwargs)
    assert kept.shape == (B, F, S, S, C) and kept.dtype == np.uint8
    np.testing.assert_array_equal(kept[:, 0], videos[:, 0])
    plain = model.generate(known_frames=videos[:, 0], **kwargs)
    assert np.abs(plain[:, 0].astype(int) - videos[:, 0]).max() > 10, "an untrained model does not copy"
    np.testing.assert_array_equal(plain[:, 1:], model.generate(known_frames=videos[:, 0], **kwargs)[:, 1:])
    # interpolation: given key frames 0 and 2 of videos
    mask = interpolation_mask(F, 2)[0]
    both = model.generate(known_frames=videos, frame_mask=mask, substitute_known_frames=True, **kwargs)
    np.testing.assert_array_equal(both[:, [0, 2]], videos[:, [0, 2]])
    assert np.abs(both[:, 1].astype(int) - videos[:, 1]).max() > 10


def test_fit_step_with_frozen_spatial_weights_passthrough_inputs_and_substitution(model):
    """One compiled training step: Make-A-Video freezing + masked frames + ConsistI2V substitution."""
    backbone = model.backbone
    backbone.freeze_spatial()
    try:
        substituting = FrameConditionedDiffusion(backbone, model.process, substitute_known_frames=True, seed=1)
        substituting.compile(optimizer=keras.optimizers.Adam(1e-2))
        batch = {"videos": _uint8_videos(seed=8), "fps": np.array([4.0, 8.0], "float32"),
                 "temporal_mask": np.array([1.0, 0.0], "float32")}
        before = {w.path: to_numpy(w).copy() for w in backbone.weights}
        history = substituting.fit(batch, batch_size=B, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        changed = {w.path for w in backbone.weights if not np.array_equal(to_numpy(w), before[w.path])}
        temporal = {w.path for layer in backbone.temporal_layers() for w in layer.weights}
        assert changed <= temporal, f"spatial weights changed: {sorted(changed - temporal)[:3]}"
        for part in ("condition_in", "fps", "tattn", "temporal"):  # every temporal path received a gradient
            assert any(part in path for path in changed), part
    finally:
        backbone.freeze_spatial(False)


def test_mask_known_frames_drops_known_frames_from_the_loss():
    process = GaussianDiffusion(NoiseSchedule("cosine", num_timesteps=50), prediction="epsilon")
    x0, noise, output = _rand(B, F, S, S, C, seed=9), _rand(B, F, S, S, C, seed=10), _rand(B, F, S, S, C, seed=11)
    t = np.array([3, 40], "int32")
    x_t = process.add_noise(x0, noise, t)
    mask = np.array([[1, 0, 0], [1, 0, 1]], "float32")
    masked = mask_known_frames(process, output, x0, noise, t, mask)
    loss = to_numpy(process.compute_loss(masked, x0, noise, x_t, t))
    squared = (output - noise) ** 2 * (1 - mask)[:, :, None, None, None]
    np.testing.assert_allclose(loss, squared.reshape(B, -1).mean(axis=1), rtol=1e-5)


def test_any_video_backbone_through_the_added_projection():
    latte = Latte(input_shape=(F, S, S, C), patch_size=2, hidden_dim=16, num_layers=2, num_heads=2,
                  conditioning="class", num_classes=3, learn_sigma=False)
    _randomise(latte, seed=16)  # Latte's output layers start at zero: its output would ignore the input
    model = FrameConditionedDiffusion(latte, _process(), seed=0)
    assert not model.concatenate_condition and model.condition_projection is not None
    noisy, clean = _rand(B, F, S, S, C, seed=12), _rand(B, F, S, S, C, seed=13)
    condition = frame_condition(clean, first_frame_mask(F, B))
    np.testing.assert_array_equal(to_numpy(model.backbone_latents(noisy, condition)), noisy)  # zero at start
    _randomise(model.condition_projection, seed=14)
    projection = to_numpy(model.condition_projection.kernel)
    np.testing.assert_allclose(
        to_numpy(model.backbone_latents(noisy, condition)), noisy + to_numpy(condition) @ projection, atol=1e-5
    )
    videos = _uint8_videos(seed=15)
    kwargs = dict(labels=[0, 1], substitute_known_frames=True, steps=2, guidance_scale=2.0)  # compiled loop
    model.condition_projection.kernel.assign(np.zeros_like(projection))
    plain = model.generate(known_frames=videos[:, 0], **kwargs)
    np.testing.assert_array_equal(plain[:, 0], videos[:, 0])
    model.condition_projection.kernel.assign(projection)  # a trained projection reaches the cached loop
    conditioned = model.generate(known_frames=videos[:, 0], **kwargs)
    np.testing.assert_array_equal(conditioned[:, 0], videos[:, 0])
    assert np.abs(conditioned[:, 1:].astype(int) - plain[:, 1:]).max() > 0


def test_known_frames_travel_as_explicit_task_inputs_not_hidden_state(model):
    """The known frames reach the sampling step through the plan's ``task_inputs``; the model keeps no state."""
    videos = np.random.default_rng(0).uniform(-1, 1, (B, F, S, S, C)).astype("float32")
    model.generate(known_frames=videos[:, 0], steps=1, compile=False, guidance_scale=1.0)
    assert not any(name.startswith("_pending") for name in vars(model))
    plan = model.prepare_generation(batch_size=B, guidance_scale=1.0)
    latents, mask = model._known_frames_and_mask(videos[:, 0], None, None, B)
    plan = model._with_known_frames(plan, frame_condition(latents, mask), True, None)
    assert set(plan["task_inputs"]) >= {"frame_condition", "substitute_known_frames"}
    assert "frame_condition" not in plan["conditions"]  # nothing but backbone inputs in the backbone's dict
    inputs = model.denoiser_inputs(keras.ops.zeros((B, F, S, S, C)), keras.ops.zeros((B,)), plan)
    assert set(inputs) <= set(model.backbone.input)


def test_config_round_trip_and_errors(model):
    config = model.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert isinstance(restored, FrameConditionedDiffusion)
    assert restored.mask_modes == ("first_frame", "interpolation") and not restored.substitute_known_frames
    assert restored.get_config()["mask_modes"] == config["mask_modes"]
    wrong = MakeAVideoUNet(num_frames=F, num_extra_input_channels=1, **SMALL)
    with pytest.raises(ValueError, match="num_extra_input_channels"):
        FrameConditionedDiffusion(wrong)
    with pytest.raises(ValueError, match="mask_modes"):
        FrameConditionedDiffusion(model.backbone, model.process, mask_modes=())
    videos = _uint8_videos()
    with pytest.raises(ValueError, match="frame_mask"):
        model.generate(known_frames=videos, steps=1, compile=False)
    with pytest.raises(ValueError, match="frame_mask"):
        model.generate(known_frames=videos, frame_mask=np.ones((B, F + 1)), steps=1, compile=False)


def _ink_centroids(videos):
    """Per frame: (row, column) centre of ink and total ink of uint8 videos (N, F, H, W, 1)."""
    ink = videos[..., 0].astype("float64")
    total = ink.sum(axis=(2, 3)) + 1e-6
    rows, cols = np.arange(ink.shape[2])[:, None], np.arange(ink.shape[3])[None, :]
    return (ink * rows).sum(axis=(2, 3)) / total, (ink * cols).sum(axis=(2, 3)) / total, total


@pytest.mark.slow
def test_image_to_video_on_moving_mnist_keeps_the_first_frame_and_moves_the_digit():
    """A tiny pseudo-3D U-Net trained briefly with the first frame given (no substitution).

    All training videos move "left and right", so a continuation must move the
    digit sideways. Checked on held-out digits: the sampled first frame matches
    the given one (mean absolute error, 0-255 scale), the digit keeps its ink
    and its centre moves horizontally, not vertically.
    """
    from keras_vdiff.data import moving_mnist
    from keras_vdiff.models.vdm_unet import VDMUNet

    frames, size = 3, 16
    left_right = 1
    train = moving_mnist(512, frame_size=size, num_frames=frames, motions=np.full(512, left_right), seed=0)
    test = moving_mnist(8, frame_size=size, num_frames=frames, motions=np.full(8, left_right), seed=1, split="test")
    backbone = VDMUNet(image_size=size, num_frames=frames, in_channels=1, dim=16, dim_mults=(1, 2),
                       num_res_blocks=1, attention_resolutions=(8,), temporal_attention_resolutions=(8,),
                       num_heads=2, norm_groups=8, conv_type="pseudo3d", num_extra_input_channels=2)
    model = FrameConditionedDiffusion(backbone, GaussianDiffusion(NoiseSchedule("cosine"), prediction="v"),
                                      mask_modes=("first_frame",), seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(2e-3, weight_decay=0.0))
    model.fit({"videos": train["videos"]}, batch_size=16, epochs=10, verbose=0)
    given = test["videos"]
    samples = model.generate(known_frames=given[:, 0], steps=25, sampler="ddim", seed=0)
    error = np.abs(samples[:, 0].astype("float64") - given[:, 0]).mean()
    error_to_other_digits = np.abs(samples[:, 0].astype("float64") - np.roll(given[:, 0], 1, axis=0)).mean()
    assert error < 15.0 and error < 0.3 * error_to_other_digits, (error, error_to_other_digits)
    rows, cols, ink = _ink_centroids(samples)
    moved_sideways = np.abs(cols[:, -1] - cols[:, 0]).mean()
    moved_up_down = np.abs(rows[:, -1] - rows[:, 0]).mean()
    assert moved_sideways > 1.0 and moved_up_down < 0.5 * moved_sideways, (moved_sideways, moved_up_down)
    assert 0.6 < (ink[:, -1] / ink[:, 0]).mean() < 1.6
