"""``FrameConditionedDiffusion.extend``: long videos from a prediction model, round by round (Video-LDM)."""

import numpy as np
import pytest

import keras_vdiff as kv
from keras_vdiff.conventions import unit_range_to_uint8


def prediction_model(**kwargs):
    backbone = kv.models.Latte(input_shape=(4, 4, 4, 1), patch_size=2, hidden_dim=16, num_layers=2, num_heads=2,
                               conditioning="class", num_classes=3, learn_sigma=False)
    options = dict(mask_modes=("prediction",), num_context_frames=2, substitute_known_frames=True)
    options.update(kwargs)
    return kv.FrameConditionedDiffusion(backbone, kv.diffusion.GaussianDiffusion("cosine"), **options)


def recording(model):
    """Wrap ``model.generate`` to keep every round's arguments and result."""
    calls = []
    generate = model.generate

    def spy(**kwargs):
        result = generate(**kwargs)
        calls.append(dict(kwargs, result=result))
        return result

    model.generate = spy
    return calls


def test_extend_appends_frames_from_the_last_context_frames_each_round():
    model = prediction_model()
    calls = recording(model)
    video = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 4, 1)).astype("uint8")
    longer = model.extend(video, num_new_frames=5, labels=[0, 2], steps=2, seed=7)
    assert longer.shape == (2, 8, 4, 4, 1) and longer.dtype == np.uint8
    np.testing.assert_array_equal(longer[:, :3], video)  # the given frames are kept
    # 4-frame windows with 2 context frames: 2 new frames a round, 3 rounds (2 + 2 + 1, the surplus dropped).
    assert len(calls) == 3
    ends = [3, 5, 7]
    for r, (call, end) in enumerate(zip(calls, ends)):
        np.testing.assert_array_equal(call["frame_mask"], [1, 1, 0, 0])
        np.testing.assert_array_equal(call["known_frames"][:, :2], longer[:, end - 2:end])  # the last two so far
        assert call["labels"] == [0, 2] and call["steps"] == 2 and call["seed"] == 7 + r
        # substitution: each window returns its context frames exactly; its new frames are the appended ones
        np.testing.assert_array_equal(call["result"][:, :2], longer[:, end - 2:end])
        new = min(2, 8 - end)
        np.testing.assert_array_equal(call["result"][:, 2:2 + new], longer[:, end:end + new])


def test_extend_with_one_context_frame_and_float_videos():
    model = prediction_model(substitute_known_frames=False)
    calls = recording(model)
    video = np.linspace(-1, 1, 2 * 2 * 16).reshape(2, 2, 4, 4, 1).astype("float32")
    longer = model.extend(video, 3, context_frames=1, labels=[1, 1], steps=2)
    assert longer.shape == (2, 5, 4, 4, 1)
    np.testing.assert_array_equal(longer[:, :2], unit_range_to_uint8(video))
    assert len(calls) == 1  # 3 new frames per round with one context frame
    np.testing.assert_array_equal(calls[0]["frame_mask"], [1, 0, 0, 0])
    np.testing.assert_array_equal(calls[0]["known_frames"][:, 0], longer[:, 1])


def test_extend_rejects_bad_arguments():
    model = prediction_model()
    video = np.zeros((1, 3, 4, 4, 1), np.uint8)
    for value in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="num_new_frames"):
            model.extend(video, value, labels=[0])
    for value in (0, 4, 2.0):
        with pytest.raises(ValueError, match="context_frames"):
            model.extend(video, 2, context_frames=value, labels=[0])
    with pytest.raises(ValueError, match="at least 2"):
        model.extend(video[:, :1], 2, labels=[0])
    with pytest.raises(ValueError, match=r"\(B, F, H, W, C\)"):
        model.extend(video[:, 0], 2, labels=[0])
    with pytest.raises(ValueError, match="frame_mask"):
        model.extend(video, 2, labels=[0], frame_mask=[1, 1, 0, 0])
    with pytest.raises(ValueError, match="'prediction' mask mode"):
        prediction_model(mask_modes=("first_frame",)).extend(video, 2, labels=[0])
