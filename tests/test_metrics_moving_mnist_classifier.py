"""The shipped MovingMNIST classifier: held-out accuracy, robustness, and its use as the conditional-accuracy judge."""

import numpy as np
import pytest

from keras_vdiff.data.moving_mnist import MOTIONS, moving_mnist
from keras_vdiff.metrics.conditional_accuracy import conditional_accuracy
from keras_vdiff.metrics.moving_mnist_classifier import MovingMNISTClassifier, augment_like_samples


@pytest.fixture(scope="module")
def classifier():
    return MovingMNISTClassifier.load()


def held_out(frame_size, num_videos=600, seed=7):
    # split="test": digit images the classifier never saw in training (disjoint from the train split).
    return moving_mnist(num_videos, frame_size=frame_size, seed=seed, digits_source="sklearn", split="test")


@pytest.mark.parametrize("frame_size", [16, 28, 32, 64])
def test_held_out_accuracy(classifier, frame_size):
    data = held_out(frame_size)
    digits, motions = classifier.predict(data["videos"])
    assert digits.shape == motions.shape == (600,) and digits.dtype == np.int64
    # Measured on 5,000 held-out videos per size (test below): digits 98.7% (16x16), 99.1% (28, 32 and
    # 64), motions 100%; on these 600 videos 99.0% (16), 99.3% (28), 99.2% (32), 99.3% (64).
    assert np.mean(digits == data["digits"]) >= 0.98
    assert np.mean(motions == data["motions"]) >= 0.98


@pytest.mark.slow
@pytest.mark.parametrize("frame_size", [28, 32, 64])
def test_held_out_accuracy_reaches_99_percent_at_the_dataset_sizes(classifier, frame_size):
    # Issue 7's bar (>= 99%) at the frame sizes it names, on the 5,000 videos of
    # benchmarks/classifier_error_analysis.py (seed 2026): 99.08% / 99.06% / 99.06%, 46-47 errors; the bar
    # allows 50. 16x16, the CPU experiments' size, is below it (98.74%): see benchmarks/RESULTS.md.
    data = moving_mnist(5000, frame_size=frame_size, seed=2026, digits_source="sklearn", split="test")
    digits, motions = classifier.predict(data["videos"])
    assert np.mean((digits == data["digits"]) & (motions == data["motions"])) >= 0.99


def test_recognises_degraded_videos(classifier):
    data = held_out(32, num_videos=300, seed=11)
    degraded = augment_like_samples(data["videos"] / 255.0, np.random.default_rng(0))
    assert np.abs(degraded - data["videos"] / 255.0).mean() > 0.02  # the degradation is real
    digits, motions = classifier.predict(degraded)
    assert np.mean(digits == data["digits"]) >= 0.95  # 97.9% at training time (1,200 videos)
    assert np.mean(motions == data["motions"]) >= 0.97


def test_conditional_accuracy_with_the_default_classifier():
    data = held_out(16, num_videos=200, seed=3)
    names = [MOTIONS[m] for m in data["motions"]]
    result = conditional_accuracy(data["videos"], data["digits"], names)  # classifier=None: the shipped one
    assert result["overall"] >= 0.93 and result["motion"] >= 0.98

    # Videos that show nothing recognisable score near chance, not near the real videos.
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, data["videos"].shape).astype(np.uint8)
    result = conditional_accuracy(noise, data["digits"], data["motions"])
    assert result["overall"] < 0.25 and result["digit"] < 0.3


def test_wrong_digit_or_motion_requested_is_not_rewarded(classifier):
    data = held_out(16, num_videos=120, seed=5)
    shifted = conditional_accuracy(data["videos"], (data["digits"] + 1) % 10, data["motions"], classifier=classifier)
    assert shifted["digit"] < 0.1 and shifted["overall"] < 0.1
    swapped = conditional_accuracy(data["videos"], data["digits"], (data["motions"] + 1) % 3, classifier=classifier)
    assert swapped["motion"] < 0.05


def test_probabilities_and_float_input(classifier):
    data = held_out(32, num_videos=16, seed=9)
    digit_probs, motion_probs = classifier.predict(data["videos"], return_probabilities=True)
    assert digit_probs.shape == (16, 10) and motion_probs.shape == (16, 3)
    np.testing.assert_allclose(digit_probs.sum(-1), 1.0, atol=1e-5)
    digits, motions = classifier.predict(data["videos"].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(digits, digit_probs.argmax(-1))
    np.testing.assert_array_equal(motions, motion_probs.argmax(-1))


def test_bad_input_and_config_round_trip(classifier):
    with pytest.raises(ValueError, match="videos"):
        classifier.predict(np.zeros((2, 10, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="frames"):
        classifier.predict(np.zeros((2, 2, 16, 16, 1), np.uint8))
    with pytest.raises(ValueError, match="frame_size"):
        MovingMNISTClassifier(frame_size=4)
    with pytest.raises(FileNotFoundError, match="train_moving_mnist_classifier"):
        MovingMNISTClassifier.load(weights="/nonexistent/classifier.weights.h5")
    clone = MovingMNISTClassifier.from_config(classifier.get_config())
    assert clone.get_config() == classifier.get_config()


def test_features_serve_as_a_frechet_distance_space(classifier):
    from keras_vdiff.metrics.feature_statistics import frechet_video_distance

    real = held_out(16, num_videos=160, seed=21)["videos"]
    other_real = held_out(16, num_videos=160, seed=22)["videos"]
    blurred = (augment_like_samples(other_real / 255.0, np.random.default_rng(1), strength=2.0) * 255).astype(np.uint8)
    noise = np.random.default_rng(2).integers(0, 256, real.shape).astype(np.uint8)
    features = classifier.features(real[:4])
    assert features.shape == (4, 2 * classifier.filters[-1]) and features.dtype == np.float32
    np.testing.assert_allclose(classifier.features(real[:4] / 255.0), features, atol=1e-5)
    same = frechet_video_distance(real, other_real, classifier, batch_size=64)
    degraded = frechet_video_distance(real, blurred, classifier, batch_size=64)
    unrelated = frechet_video_distance(real, noise, classifier, batch_size=64)
    assert same < degraded < unrelated  # the distance orders sample quality


def test_error_analysis_groups_every_digit_error_by_its_image(classifier):
    """benchmarks/classifier_error_analysis.py: per-image counts add up to the errors and agree with predict."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from classifier_error_analysis import analyse

    row = analyse(classifier, 16, 300, seed=11)
    data = held_out(16, num_videos=300, seed=11)
    digits, _ = classifier.predict(data["videos"])
    assert row["digit_errors"] == int(np.sum(digits != data["digits"]))
    assert row["digit"] == pytest.approx(1.0 - row["digit_errors"] / 300)
    assert sum(r["misread"] for r in row["per_image"]) == row["digit_errors"]
    for r in row["per_image"]:
        shown = data["image_ids"] == r["image"]
        assert r["videos"] == int(shown.sum()) and r["label"] == int(data["digits"][shown][0])
        assert r["read_as"] != r["label"]
