"""Conditional accuracy: does a generated video show the digit and motion it was asked for?

The thesis behind this project (notes-000, chapter 4) observes that FVD,
CLIPSIM, SSIM and PSNR do not say whether a MovingMNIST video matches its
prompt. Conditional accuracy answers that directly: a classifier trained on
real MovingMNIST (held out from the generator) predicts the digit and the
motion of each generated video, and the metric is the share of videos where
both match the request, with digit-only and motion-only accuracies and a
10 digits x 3 motions table. Chance level is 1/30 for both-right.
"""

import numpy as np

__all__ = ["conditional_accuracy", "conditional_accuracy_table"]

NUM_DIGITS = 10
NUM_MOTIONS = 3
_MOTION_NAMES = ("up and down", "left and right", "to and fro")


def _as_labels(values, name, num_classes, names=None):
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array of labels; received shape {array.shape}.")
    if names is not None and array.dtype.kind in "USO":
        lookup = {label: index for index, label in enumerate(names)}
        unknown = sorted({str(v) for v in array.tolist() if v not in lookup})
        if unknown:
            raise ValueError(f"`{name}` holds unknown names {unknown}; valid names are {list(names)}.")
        return np.array([lookup[v] for v in array.tolist()], dtype=np.int64)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise TypeError(f"`{name}` must hold integer labels; received dtype {array.dtype}.")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            f"`{name}` must lie in [0, {num_classes - 1}]; received values in "
            f"[{array.min()}, {array.max()}]."
        )
    return array


def _default_classifier():
    from keras_vdiff.metrics.moving_mnist_classifier import MovingMNISTClassifier

    return MovingMNISTClassifier.load()


def _safe_ratio(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def conditional_accuracy(videos, digits, motions, classifier=None, batch_size=64):
    """How often a classifier recognises the requested digit and motion.

    Args:
        videos: generated videos ``(N, F, H, W, C)`` in the classifier's input
            format (uint8 ``[0, 255]`` for ``MovingMNISTClassifier``).
        digits: ``(N,)`` requested digits, ints in ``[0, 9]``.
        motions: ``(N,)`` requested motions, ints in ``[0, 2]`` (indices into
            ``("up and down", "left and right", "to and fro")``, the order of
            ``kv.data.MOTIONS``) or those names.
        classifier: any object with ``predict(videos) -> (digits, motions)``
            returning integer arrays; ``None`` loads the shipped
            ``MovingMNISTClassifier``.
        batch_size: videos per ``predict`` call.

    Returns:
        dict with
        - ``"overall"``: share of videos with digit and motion both right;
        - ``"digit"``, ``"motion"``: share with the digit (motion) right;
        - ``"count"``: number of videos; ``"chance"``: 1/30;
        - ``"per_class"``: ``(10, 3)`` both-right accuracy per requested
          (digit, motion), NaN where nothing was requested;
        - ``"per_class_count"``: ``(10, 3)`` number of videos per cell;
        - ``"per_digit"`` ``(10,)``, ``"per_motion"`` ``(3,)``: both-right
          accuracy per requested digit / motion (NaN if absent);
        - ``"digit_confusion"`` ``(10, 10)``, ``"motion_confusion"`` ``(3, 3)``:
          counts, rows requested, columns predicted.

    Example:
    >>> result = conditional_accuracy(videos, data["digits"], data["motions"])
    >>> result["overall"], result["per_class"].shape
    (0.87, (10, 3))
    """
    videos = np.asarray(videos)
    if videos.ndim != 5:
        raise ValueError(f"`videos` must have shape (N, F, H, W, C); received {videos.shape}.")
    digits = _as_labels(digits, "digits", NUM_DIGITS)
    motions = _as_labels(motions, "motions", NUM_MOTIONS, names=_MOTION_NAMES)
    if not (videos.shape[0] == digits.shape[0] == motions.shape[0]):
        raise ValueError(
            f"`videos`, `digits` and `motions` must have the same length; received "
            f"{videos.shape[0]}, {digits.shape[0]} and {motions.shape[0]}."
        )
    if videos.shape[0] == 0:
        raise ValueError("`videos` is empty.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; received {batch_size!r}.")
    if classifier is None:
        classifier = _default_classifier()
    if not callable(getattr(classifier, "predict", None)):
        raise TypeError(
            "`classifier` must have a `predict(videos) -> (digits, motions)` method; "
            f"received {type(classifier).__name__}."
        )
    predicted_digits, predicted_motions = [], []
    for start in range(0, videos.shape[0], batch_size):
        batch = videos[start : start + batch_size]
        batch_digits, batch_motions = classifier.predict(batch)
        predicted_digits.append(_as_labels(batch_digits, "predicted digits", NUM_DIGITS))
        predicted_motions.append(_as_labels(batch_motions, "predicted motions", NUM_MOTIONS))
        if predicted_digits[-1].shape[0] != batch.shape[0] or predicted_motions[-1].shape[0] != batch.shape[0]:
            raise ValueError(
                f"`classifier.predict` returned {predicted_digits[-1].shape[0]} digits and "
                f"{predicted_motions[-1].shape[0]} motions for {batch.shape[0]} videos."
            )
    predicted_digits = np.concatenate(predicted_digits)
    predicted_motions = np.concatenate(predicted_motions)

    digit_right = predicted_digits == digits
    motion_right = predicted_motions == motions
    both_right = digit_right & motion_right

    per_class_count = np.zeros((NUM_DIGITS, NUM_MOTIONS), dtype=np.int64)
    per_class_right = np.zeros((NUM_DIGITS, NUM_MOTIONS), dtype=np.int64)
    np.add.at(per_class_count, (digits, motions), 1)
    np.add.at(per_class_right, (digits, motions), both_right.astype(np.int64))
    digit_confusion = np.zeros((NUM_DIGITS, NUM_DIGITS), dtype=np.int64)
    motion_confusion = np.zeros((NUM_MOTIONS, NUM_MOTIONS), dtype=np.int64)
    np.add.at(digit_confusion, (digits, predicted_digits), 1)
    np.add.at(motion_confusion, (motions, predicted_motions), 1)

    return {
        "overall": float(both_right.mean()),
        "digit": float(digit_right.mean()),
        "motion": float(motion_right.mean()),
        "count": int(videos.shape[0]),
        "chance": 1.0 / (NUM_DIGITS * NUM_MOTIONS),
        "per_class": _safe_ratio(per_class_right, per_class_count),
        "per_class_count": per_class_count,
        "per_digit": _safe_ratio(per_class_right.sum(axis=1), per_class_count.sum(axis=1)),
        "per_motion": _safe_ratio(per_class_right.sum(axis=0), per_class_count.sum(axis=0)),
        "digit_confusion": digit_confusion,
        "motion_confusion": motion_confusion,
    }


def conditional_accuracy_table(result):
    """Markdown table of a :func:`conditional_accuracy` result (digits x motions, in %)."""
    required = {"per_class", "per_digit", "per_motion", "overall"}
    if not isinstance(result, dict) or not required <= set(result):
        raise ValueError(
            f"`result` must be the dict returned by `conditional_accuracy` (keys {sorted(required)})."
        )

    def cell(value):
        return "-" if np.isnan(value) else f"{100.0 * value:.1f}"

    lines = [
        "| digit | " + " | ".join(_MOTION_NAMES) + " | all motions |",
        "|---|" + "---|" * (NUM_MOTIONS + 1),
    ]
    for digit in range(NUM_DIGITS):
        cells = [cell(v) for v in result["per_class"][digit]] + [cell(result["per_digit"][digit])]
        lines.append(f"| {digit} | " + " | ".join(cells) + " |")
    totals = [cell(v) for v in result["per_motion"]] + [cell(result["overall"])]
    lines.append("| all digits | " + " | ".join(totals) + " |")
    return "\n".join(lines)
