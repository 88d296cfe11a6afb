"""Conditional accuracy with a rule-based classifier whose answers the test controls."""

import numpy as np
import pytest

from keras_vdiff import metrics


class PixelCodeClassifier:
    """Reads the predicted digit and motion from pixel (0, 0, 0) of the first frame: 10 * digit + motion."""

    def __init__(self):
        self.batch_sizes = []

    def predict(self, videos):
        self.batch_sizes.append(len(videos))
        code = videos[:, 0, 0, 0, 0].astype(int)
        return code // 10, code % 10


def make_videos(predicted_digits, predicted_motions):
    videos = np.zeros((len(predicted_digits), 2, 4, 4, 1), np.uint8)
    videos[:, 0, 0, 0, 0] = 10 * np.asarray(predicted_digits) + np.asarray(predicted_motions)
    return videos


def test_overall_digit_motion_and_tables():
    rng = np.random.default_rng(0)
    n = 200
    digits = rng.integers(0, 10, n)
    motions = rng.integers(0, 3, n)
    predicted_digits = np.where(rng.random(n) < 0.7, digits, rng.integers(0, 10, n))
    predicted_motions = np.where(rng.random(n) < 0.8, motions, rng.integers(0, 3, n))
    classifier = PixelCodeClassifier()
    result = metrics.conditional_accuracy(
        make_videos(predicted_digits, predicted_motions), digits, motions, classifier=classifier, batch_size=64
    )
    assert classifier.batch_sizes == [64, 64, 64, 8]

    # Reference computed with explicit loops.
    both = [(predicted_digits[i] == digits[i]) and (predicted_motions[i] == motions[i]) for i in range(n)]
    assert result["overall"] == pytest.approx(sum(both) / n)
    assert result["digit"] == pytest.approx(np.mean(predicted_digits == digits))
    assert result["motion"] == pytest.approx(np.mean(predicted_motions == motions))
    assert result["count"] == n and result["chance"] == pytest.approx(1 / 30)
    for d in range(10):
        for m in range(3):
            cell = [both[i] for i in range(n) if digits[i] == d and motions[i] == m]
            assert result["per_class_count"][d, m] == len(cell)
            if cell:
                assert result["per_class"][d, m] == pytest.approx(np.mean(cell))
            else:
                assert np.isnan(result["per_class"][d, m])
        in_digit = [both[i] for i in range(n) if digits[i] == d]
        assert result["per_digit"][d] == pytest.approx(np.mean(in_digit))
        assert result["digit_confusion"][d].sum() == len(in_digit)
    for m in range(3):
        assert result["per_motion"][m] == pytest.approx(np.mean([both[i] for i in range(n) if motions[i] == m]))
        for p in range(3):
            assert result["motion_confusion"][m, p] == np.sum((motions == m) & (predicted_motions == p))

    table = metrics.conditional_accuracy_table(result)
    assert table.count("\n") == 12  # header, rule, 10 digits, totals
    assert f"{100 * result['overall']:.1f} |" in table.splitlines()[-1]


def test_motion_names_and_absent_classes():
    digits = np.array([3, 3, 7])
    motions = ["up and down", "to and fro", "to and fro"]
    videos = make_videos([3, 3, 1], [0, 1, 2])
    result = metrics.conditional_accuracy(videos, digits, motions, classifier=PixelCodeClassifier())
    assert result["overall"] == pytest.approx(1 / 3)
    assert result["digit"] == pytest.approx(2 / 3)
    assert result["motion"] == pytest.approx(2 / 3)
    assert result["per_class"][3, 0] == 1.0 and result["per_class"][3, 2] == 0.0
    assert np.isnan(result["per_class"][0, 0]) and np.isnan(result["per_digit"][5])
    assert "| 5 | - | - | - | - |" in metrics.conditional_accuracy_table(result)


def test_rejects_bad_input():
    videos = make_videos([1, 2], [0, 1])
    classifier = PixelCodeClassifier()
    with pytest.raises(ValueError, match="same length"):
        metrics.conditional_accuracy(videos, [1, 2, 3], [0, 1, 2], classifier=classifier)
    with pytest.raises(ValueError, match=r"`digits` must lie in \[0, 9\]"):
        metrics.conditional_accuracy(videos, [1, 10], [0, 1], classifier=classifier)
    with pytest.raises(ValueError, match="unknown names"):
        metrics.conditional_accuracy(videos, [1, 2], ["up and down", "spinning"], classifier=classifier)
    with pytest.raises(ValueError, match=r"\(N, F, H, W, C\)"):
        metrics.conditional_accuracy(videos[:, 0], [1, 2], [0, 1], classifier=classifier)
    with pytest.raises(TypeError, match="predict"):
        metrics.conditional_accuracy(videos, [1, 2], [0, 1], classifier=object())

    class WrongLength:
        def predict(self, videos):
            return np.zeros(1, int), np.zeros(1, int)

    with pytest.raises(ValueError, match="returned 1 digits"):
        metrics.conditional_accuracy(videos, [1, 2], [0, 1], classifier=WrongLength())
