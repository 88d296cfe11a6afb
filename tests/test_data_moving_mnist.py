"""MovingMNIST text-to-video data: shapes, captions, splits and a motion test that no caption can fake."""

import numpy as np
import pytest

from keras_vdiff.data.moving_mnist import MOTIONS, bouncing_mnist, caption, load_digit_images, moving_mnist


def centre_of_mass(videos):
    """(N, F, S, S, 1) -> rows, cols (N, F) of the intensity centre of mass."""
    frames = videos[..., 0].astype(np.float64)
    grid = np.arange(frames.shape[-1]) + 0.5
    total = frames.sum(axis=(2, 3))
    rows = (frames.sum(axis=3) * grid).sum(axis=2) / total
    cols = (frames.sum(axis=2) * grid).sum(axis=2) / total
    return rows, cols


def test_shapes_dtypes_and_captions():
    data = moving_mnist(12, frame_size=16, num_frames=10, seed=3, digits_source="sklearn")
    assert data["videos"].shape == (12, 10, 16, 16, 1) and data["videos"].dtype == np.uint8
    assert len(data["captions"]) == 12
    for text, digit, motion in zip(data["captions"], data["digits"], data["motions"]):
        assert text == f"The digit {digit} is moving {MOTIONS[motion]}"
    assert np.bincount(data["motions"], minlength=3).tolist() == [4, 4, 4]  # balanced
    assert data["videos"].max() > 200  # digits are bright on black


def test_same_seed_same_data_other_seed_other_data():
    a = moving_mnist(4, frame_size=16, seed=1, digits_source="sklearn")
    b = moving_mnist(4, frame_size=16, seed=1, digits_source="sklearn")
    c = moving_mnist(4, frame_size=16, seed=2, digits_source="sklearn")
    np.testing.assert_array_equal(a["videos"], b["videos"])
    assert not np.array_equal(a["videos"], c["videos"])


@pytest.mark.parametrize("frame_size", [16, 32])
def test_motion_is_what_the_caption_says(frame_size):
    """'up and down' moves the centre of mass vertically only, 'left and right' horizontally only,
    'to and fro' keeps it in place while the digit's area oscillates."""
    n = 30
    motions = np.repeat(np.arange(3), n)
    data = moving_mnist(3 * n, frame_size=frame_size, seed=0, digits_source="sklearn", motions=motions)
    rows, cols = centre_of_mass(data["videos"])
    row_range = rows.max(axis=1) - rows.min(axis=1)
    col_range = cols.max(axis=1) - cols.min(axis=1)
    area = (data["videos"][..., 0] > 64).sum(axis=(2, 3)).astype(np.float64)
    area_change = (area.max(axis=1) - area.min(axis=1)) / area.mean(axis=1)
    vertical, horizontal, zoom = (motions == 0), (motions == 1), (motions == 2)
    big, still = 0.2 * frame_size, 0.05 * frame_size
    assert (row_range[vertical] > big).all() and (col_range[vertical] < still).all()
    assert (col_range[horizontal] > big).all() and (row_range[horizontal] < still).all()
    assert (row_range[zoom] < 0.1 * frame_size).all() and (col_range[zoom] < 0.1 * frame_size).all()
    assert (area_change[zoom] > 0.5).all() and (area_change[vertical | horizontal] < 0.5).all()


def test_digit_is_the_requested_one():
    """Rendered frames show the requested digit: a nearest-neighbour vote over frames of other
    digit images (the test split) recovers the label of most videos."""
    from sklearn.neighbors import KNeighborsClassifier

    train = moving_mnist(600, frame_size=16, seed=0, digits_source="sklearn", motions=np.full(600, 2))
    test = moving_mnist(60, frame_size=16, seed=1, digits_source="sklearn", split="test", motions=np.full(60, 2))
    frames = lambda d: d["videos"][..., 0].reshape(-1, 16 * 16).astype(np.float64)  # noqa: E731
    knn = KNeighborsClassifier(n_neighbors=5).fit(frames(train), np.repeat(train["digits"], 10))
    votes = knn.predict(frames(test)).reshape(60, 10)
    predicted = np.array([np.bincount(row, minlength=10).argmax() for row in votes])
    assert (predicted == test["digits"]).mean() > 0.7  # chance is 0.1


def test_train_and_test_splits_use_disjoint_digit_images():
    train, _ = load_digit_images("sklearn", "train")
    test, _ = load_digit_images("sklearn", "test")
    train_rows = {row.tobytes() for row in train}
    shared = sum(row.tobytes() in train_rows for row in test)
    assert len(train) + len(test) == 1797 and shared <= 2  # sklearn holds a couple of exact duplicates


def test_requested_digits_and_motions_are_kept():
    digits, motions = np.array([7, 0, 3]), np.array([1, 2, 0])
    data = moving_mnist(3, frame_size=16, digits_source="sklearn", digits=digits, motions=motions)
    np.testing.assert_array_equal(data["digits"], digits)
    np.testing.assert_array_equal(data["motions"], motions)
    assert data["captions"][0] == "The digit 7 is moving left and right" == caption(7, "left and right")


def test_image_ids_name_the_digit_image_of_each_video():
    data = moving_mnist(40, frame_size=16, seed=5, digits_source="sklearn", split="test")
    _, labels = load_digit_images("sklearn", "test")
    ids = data["image_ids"]
    assert ids.shape == (40,) and ids.min() >= 0 and ids.max() < len(labels)
    np.testing.assert_array_equal(labels[ids], data["digits"])
    assert len(np.unique(ids)) > 20  # drawn from the whole split, not a few images


def test_bouncing_mnist_shapes():
    data = bouncing_mnist(3, frame_size=32, num_frames=6, num_digits=2, digits_source="sklearn")
    assert data["videos"].shape == (3, 6, 32, 32, 1) and data["digits"].shape == (3, 2)
    assert not np.array_equal(data["videos"][:, 0], data["videos"][:, -1])  # the digits move


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_videos=0), "num_videos"),
        (dict(num_videos=2, frame_size=4), "frame_size"),
        (dict(num_videos=2, digits_source="emnist"), "digits_source"),
        (dict(num_videos=2, split="val"), "split"),
        (dict(num_videos=2, digits=[1, 11]), "digits"),
        (dict(num_videos=2, motions=[0, 3]), "motions"),
        (dict(num_videos=2, frame_size=16, digit_size=15), "digit_size"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    kwargs.setdefault("digits_source", "sklearn")
    with pytest.raises(ValueError, match=match):
        moving_mnist(**kwargs)


def test_caption_rejects_unknown_motion():
    with pytest.raises(ValueError, match="motion"):
        caption(3, "diagonally")
