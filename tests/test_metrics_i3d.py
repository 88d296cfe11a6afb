"""I3D architecture: shapes, weight conversion from the pytorch-i3d naming, config, preprocessing."""

import keras
import numpy as np
import pytest

from keras_vdiff import metrics


def random_state_dict(model, seed):
    """Random weights in pytorch-i3d naming and layout, with valid batch-norm statistics."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, value in model.pytorch_state_dict().items():
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 1.5, value.shape)
        elif key.endswith("bn.weight"):
            state[key] = rng.uniform(0.8, 1.2, value.shape)
        elif key.endswith("conv3d.weight"):
            fan_in = np.prod(value.shape[1:])
            state[key] = rng.normal(0.0, np.sqrt(2.0 / fan_in), value.shape)
        else:
            state[key] = rng.normal(0.0, 0.1, value.shape)
    return state


@pytest.fixture(scope="module")
def full_i3d():
    # Published channel widths on a small input; zeros init skips slow random kernels, weights come next.
    return metrics.I3D(video_shape=(8, 64, 64, 3), kernel_initializer="zeros")


def test_full_width_shapes_and_pytorch_weight_layout(full_i3d):
    names = metrics.pytorch_i3d_weight_names()
    state = full_i3d.pytorch_state_dict()
    assert sorted(state) == sorted(names) and len(names) == 57 * 5 + 2
    # Published layouts: (out, in, t, h, w) convolutions, 1x1x1 logits convolution over 1024 channels.
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["Mixed_3b.b1b.conv3d.weight"].shape == (128, 96, 3, 3, 3)
    assert state["Mixed_5c.b3b.conv3d.weight"].shape == (128, 832, 1, 1, 1)
    assert state["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)

    weights = random_state_dict(full_i3d, seed=0)
    full_i3d.load_pytorch_state_dict(weights)
    videos = np.random.default_rng(0).integers(0, 256, size=(2, 8, 64, 64, 3), dtype=np.uint8)
    logits = full_i3d.features(videos)
    pooled = full_i3d.features(videos, output="pooled")
    assert logits.shape == (2, 400) and pooled.shape == (2, 1024)
    assert np.all(np.isfinite(logits)) and np.all(pooled >= 0.0)  # pooled ReLU features
    assert not np.allclose(logits[0], logits[1])
    # The logits are the reference's 1x1x1 convolution applied to the pooled features.
    kernel = weights["logits.conv3d.weight"].reshape(400, 1024)
    np.testing.assert_allclose(logits, pooled @ kernel.T + weights["logits.conv3d.bias"], rtol=1e-4, atol=1e-4)
    # features() is preprocess + the forward pass.
    direct = full_i3d.predict_on_batch(full_i3d.preprocess(videos))
    np.testing.assert_allclose(direct["logits"], logits, rtol=1e-5, atol=1e-5)


def test_weight_files_round_trip_and_config(tmp_path):
    def small(video_shape=(4, 32, 32, 3)):
        return metrics.I3D(video_shape=video_shape, width_multiplier=0.125, num_classes=7, kernel_initializer="zeros")

    model = small()
    state = random_state_dict(model, seed=1)
    model.load_pytorch_state_dict({"module." + k: v for k, v in state.items()})  # DataParallel prefix
    videos = np.random.default_rng(1).integers(0, 256, size=(2, 4, 32, 32, 3), dtype=np.uint8)
    expected = model.features(videos, output="pooled")
    assert expected.shape == (2, 128)

    np.savez(tmp_path / "i3d.npz", **state)
    keras_path = str(tmp_path / "i3d.weights.h5")
    model.save_weights(keras_path)
    other_state = random_state_dict(model, seed=2)
    for path in (str(tmp_path / "i3d.npz"), keras_path):
        model.load_pytorch_state_dict(other_state)
        assert not np.allclose(model.features(videos, output="pooled"), expected, rtol=1e-3)
        model.load_weights(path)
        np.testing.assert_allclose(model.features(videos, output="pooled"), expected, rtol=1e-6, atol=1e-6)

    clone = metrics.I3D.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()
    # The weights do not depend on the input size: another video_shape accepts the same state dict.
    other = small(video_shape=(6, 40, 40, 3))
    other.load_pytorch_state_dict(state)
    for key, value in other.pytorch_state_dict().items():
        np.testing.assert_allclose(value, state[key], rtol=1e-6, atol=1e-7)


def test_preprocess_resizes_grey_videos_and_rejects_bad_input():
    model = metrics.I3D(video_shape=(4, 32, 32, 3), width_multiplier=0.0625, kernel_initializer="zeros")
    grey = np.full((1, 4, 16, 16, 1), 255, np.uint8)
    prepared = model.preprocess(grey)
    assert prepared.shape == (1, 4, 32, 32, 3)
    np.testing.assert_allclose(prepared, 1.0, atol=1e-6)  # 255 -> +1 everywhere
    np.testing.assert_allclose(model.preprocess(np.zeros((1, 4, 32, 32, 3), np.uint8)), -1.0)
    with pytest.raises(ValueError, match="frames"):
        model.preprocess(np.zeros((1, 5, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        model.preprocess(np.full((1, 4, 32, 32, 3), -1.0))
    with pytest.raises(ValueError, match="output"):
        model.features(np.zeros((1, 4, 32, 32, 3), np.uint8), output="mixed_5c")
    with pytest.raises(ValueError, match="video_shape"):
        metrics.I3D(video_shape=(4, 32, 32))
    with pytest.raises(ValueError, match="lacks"):
        model.load_pytorch_state_dict({})
    state = model.pytorch_state_dict()
    state["Conv3d_1a_7x7.conv3d.weight"] = np.zeros((64, 3, 7, 7, 7))
    with pytest.raises(ValueError, match="width_multiplier"):
        model.load_pytorch_state_dict(state)
