"""MovingMNIST text-to-video data: one handwritten digit, one named motion, one caption.

The thesis' dataset (``reference/seeds/000``, section 3.3.3): every video shows
one digit moving in one of three ways for 10 frames, captioned
``"The digit 7 is moving left and right"``:

- ``"up and down"``: the digit bounces vertically between the top and bottom edge;
- ``"left and right"``: it bounces horizontally;
- ``"to and fro"``: it stays in place and its scale oscillates (it comes towards
  the viewer and goes back; the thesis' samples "zoom in").

The digits are real handwritten digits. ``digits_source="mnist"`` uses MNIST
(downloaded once by ``keras.datasets.mnist``); ``"sklearn"`` uses the 1,797
8x8 digits that ship inside scikit-learn (offline, used by the tests, CI and the
demo); ``"auto"`` takes MNIST when it is already cached on disk and scikit-learn
otherwise, so it never downloads. Train and test splits use disjoint digit
images, so a classifier or generator can be checked on digits it never saw.

Frames are rendered by bilinear resampling of the digit at a sub-pixel position
and scale, so motion is smooth at any frame size. ``bouncing_mnist`` gives the
classic unconditional two-digit bouncing MovingMNIST (Srivastava et al. 2015).
"""

import os

import numpy as np

from keras_vdiff.validation import check_int, check_pair

MOTIONS = ("up and down", "left and right", "to and fro")
DIGITS_SOURCES = ("auto", "sklearn", "mnist")
SPLITS = ("train", "test")
_SKLEARN_TEST_FRACTION = 0.2
_CHUNK = 512  # videos rendered per vectorised chunk (bounds the memory of the gather)


def caption(digit, motion):
    """The template caption of a digit (0-9) and a motion (index or name)."""
    if isinstance(motion, (int, np.integer)):
        motion = MOTIONS[int(motion)]
    if motion not in MOTIONS:
        raise ValueError(f"`motion` must be one of {MOTIONS} or an index into it, got {motion!r}.")
    return f"The digit {int(digit)} is moving {motion}"


def _check_choice(name, value, valid):
    if value not in valid:
        raise ValueError(f"`{name}` must be one of {valid}, got {value!r}.")


def _mnist_cache_path():
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "datasets", "mnist.npz")


def load_digit_images(digits_source="auto", split="train"):
    """Handwritten digit images in [0, 1] and their labels: ``(images (N, h, w) float32, labels (N,) int)``.

    ``"sklearn"``: scikit-learn's bundled 8x8 digits, split 80/20 into train/test
    by a fixed permutation. ``"mnist"``: MNIST's own 28x28 train/test split
    (downloads on first use). ``"auto"``: MNIST if cached, else scikit-learn.
    """
    _check_choice("digits_source", digits_source, DIGITS_SOURCES)
    _check_choice("split", split, SPLITS)
    if digits_source == "auto":
        digits_source = "mnist" if os.path.exists(_mnist_cache_path()) else "sklearn"
    if digits_source == "mnist":
        import keras

        try:
            (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        except Exception as error:  # noqa: BLE001 - network errors come in many types
            raise RuntimeError(
                "Could not load MNIST (no network?). Use digits_source='sklearn' for the offline digits."
            ) from error
        images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
        return images.astype(np.float32) / 255.0, labels.astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    n_test = int(round(len(labels) * _SKLEARN_TEST_FRACTION))
    chosen = order[n_test:] if split == "train" else order[:n_test]
    return images[chosen], labels[chosen]


def _render(sources, centers, scales, frame_size, digit_size):
    """Bilinear rendering of digit images at per-frame centres and scales.

    Args:
        sources: (N, h, w) digit images in [0, 1].
        centers: (N, F, 2) (row, col) of the digit centre in frame pixels.
        scales: (N, F) scale of the digit relative to ``digit_size``.
        frame_size: S, or (height, width).
    Returns: (N, F, S, S) (or (N, F, height, width)) float32 frames in [0, 1].
    """
    n, h, w = sources.shape
    frame_height, frame_width = (frame_size, frame_size) if np.isscalar(frame_size) else frame_size
    padded = np.pad(sources, ((0, 0), (1, 1), (1, 1)))  # zero border: outside the digit is black
    row_grid = np.arange(frame_height, dtype=np.float32) + 0.5
    col_grid = np.arange(frame_width, dtype=np.float32) + 0.5
    # Frame pixel -> source pixel: (p - centre) / (scale * digit_size / h) + h / 2.
    pixel_per_source = (scales * digit_size / h)[..., None]  # (N, F, 1)
    rows = (row_grid[None, None, :] - centers[..., 0:1]) / pixel_per_source + h / 2 - 0.5 + 1
    cols = (col_grid[None, None, :] - centers[..., 1:2]) / (scales * digit_size / w)[..., None] + w / 2 - 0.5 + 1
    rows = np.clip(rows, 0, h + 1 - 1e-4)
    cols = np.clip(cols, 0, w + 1 - 1e-4)
    r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    fr, fc = rows - r0, cols - c0
    r1, c1 = np.minimum(r0 + 1, h + 1), np.minimum(c0 + 1, w + 1)
    idx = np.arange(n)[:, None, None, None]

    def gather(r, c):  # (N, F, S) rows x (N, F, S) cols -> (N, F, S, S)
        return padded[idx, r[..., :, None], c[..., None, :]]

    top = gather(r0, c0) * (1 - fc[..., None, :]) + gather(r0, c1) * fc[..., None, :]
    bottom = gather(r1, c0) * (1 - fc[..., None, :]) + gather(r1, c1) * fc[..., None, :]
    return top * (1 - fr[..., :, None]) + bottom * fr[..., :, None]


def _bounce(start, velocity, low, high, num_frames):
    """Positions (N, F) of points moving at constant speed, reflected at [low, high] (scalars or (N,))."""
    high = np.reshape(high, (-1, 1))
    span = high - low
    raw = start[:, None] - low + velocity[:, None] * np.arange(num_frames)[None, :]
    folded = np.mod(raw, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


def _trajectories(motions, frame_size, digit_size, num_frames, rng):
    """Centres (N, F, 2) and scales (N, F) of each motion (``frame_size``: S or (height, width))."""
    n = len(motions)
    half = digit_size / 2
    height, width = (frame_size, frame_size) if np.isscalar(frame_size) else frame_size
    along, across = height, height  # a digit bounces along its axis and sits anywhere across the other
    if height != width:
        horizontal = motions == MOTIONS.index("left and right")
        along, across = np.where(horizontal, width, height), np.where(horizontal, height, width)
    low = half
    centers = np.empty((n, num_frames, 2), np.float32)
    scales = np.ones((n, num_frames), np.float32)
    speed = rng.uniform(0.09, 0.14, n) * min(height, width) * rng.choice([-1.0, 1.0], n)
    fixed = rng.uniform(low, across - half, n)
    moving = _bounce(rng.uniform(low, along - half, n), speed, low, along - half, num_frames)
    middle = np.array([height, width]) / 2 + rng.uniform(-0.08, 0.08, (n, 2)) * np.array([height, width])
    for axis, name in ((0, "up and down"), (1, "left and right")):
        chosen = motions == MOTIONS.index(name)
        centers[chosen, :, axis] = moving[chosen]
        centers[chosen, :, 1 - axis] = fixed[chosen, None]
    zoom = motions == MOTIONS.index("to and fro")
    centers[zoom] = middle[zoom, None, :]
    period = rng.uniform(5.0, 8.0, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    amplitude = rng.uniform(0.3, 0.4, n)
    oscillation = np.sin(phase[:, None] + 2 * np.pi * np.arange(num_frames)[None, :] / period[:, None])
    scales[zoom] = (1.0 + amplitude[:, None] * oscillation)[zoom]
    return centers, scales


def moving_mnist(
    num_videos,
    frame_size=32,
    num_frames=10,
    seed=0,
    digits_source="auto",
    split="train",
    digit_size=None,
    digits=None,
    motions=None,
):
    """Generate the MovingMNIST text-to-video set.

    Args:
        num_videos: number of videos.
        frame_size: height = width of the frames (16 for the CPU demo, 32+ otherwise), or a pair
            ``(height, width)`` for frames of another aspect ratio (native sizes: a digit moving
            "left and right" bounces across the width, "up and down" across the height).
        num_frames: frames per video (the thesis: 10).
        seed: seed of the digit choice, the motions and the trajectories.
        digits_source: ``"auto"``, ``"sklearn"`` or ``"mnist"`` (module docstring).
        split: ``"train"`` or ``"test"``: which digit images to draw from.
        digit_size: digit height in pixels at scale 1 (default half the shorter side).
        digits: optional (num_videos,) digit labels to render (default: random).
        motions: optional (num_videos,) motion indices (default: random, balanced).

    Returns:
        dict of numpy arrays: ``videos`` uint8 ``(N, F, S, S, 1)``, ``captions``
        (list of str), ``digits`` int ``(N,)``, ``motions`` int ``(N,)``
        (indices into ``MOTIONS``), ``image_ids`` int ``(N,)`` (which digit image of
        the split each video shows: ``load_digit_images(source, split)[0][image_ids]``;
        for per-image error analysis).

    Example:
        >>> data = moving_mnist(8, frame_size=16, digits_source="sklearn")
        >>> data["videos"].shape, data["captions"][0]
        ((8, 10, 16, 16, 1), 'The digit 3 is moving to and fro')
    """
    num_videos = check_int(num_videos, "num_videos")
    if isinstance(frame_size, (tuple, list)):
        height, width = check_pair(frame_size, "frame_size")
        frame_size = height if height == width else (height, width)  # square pairs render as before
    else:
        height = width = frame_size = check_int(frame_size, "frame_size")
    num_frames = check_int(num_frames, "num_frames")
    if min(height, width) < 8:
        raise ValueError(f"`frame_size` must be at least 8, got {frame_size}.")
    if num_frames < 2:
        # Every caption names a motion, which a single frame cannot show.
        raise ValueError(f"`num_frames` must be at least 2 (the captions describe motion), got {num_frames}.")
    side = min(height, width)
    digit_size = side // 2 if digit_size is None else check_int(digit_size, "digit_size")
    if digit_size * 1.4 > side:
        raise ValueError(f"`digit_size` must be at most frame_size / 1.4 = {side / 1.4:.1f}, got {digit_size}.")
    images, labels = load_digit_images(digits_source, split)
    rng = np.random.default_rng(seed)
    if digits is None:
        digits = rng.integers(0, 10, num_videos)
    digits = np.asarray(digits, np.int64).reshape(-1)
    if len(digits) != num_videos or digits.min() < 0 or digits.max() > 9:
        raise ValueError(f"`digits` must hold {num_videos} labels in [0, 9], got {digits}.")
    if motions is None:
        motions = rng.permutation(np.arange(num_videos) % len(MOTIONS))
    motions = np.asarray(motions, np.int64).reshape(-1)
    if len(motions) != num_videos or motions.min() < 0 or motions.max() >= len(MOTIONS):
        raise ValueError(f"`motions` must hold {num_videos} indices in [0, {len(MOTIONS)}), got {motions}.")
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    chosen = np.array([by_digit[d][rng.integers(len(by_digit[d]))] for d in digits])
    centers, scales = _trajectories(motions, frame_size, digit_size, num_frames, rng)
    videos = np.empty((num_videos, num_frames, height, width, 1), np.uint8)
    for start in range(0, num_videos, _CHUNK):
        part = slice(start, start + _CHUNK)
        frames = _render(images[chosen[part]], centers[part], scales[part], frame_size, digit_size)
        videos[part, ..., 0] = np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
    return {
        "videos": videos,
        "captions": [caption(d, m) for d, m in zip(digits, motions)],
        "digits": digits,
        "motions": motions,
        "image_ids": chosen.astype(np.int64),
    }


def bouncing_mnist(num_videos, frame_size=64, num_frames=20, num_digits=2, seed=0, digits_source="auto",
                   split="train", digit_size=None):
    """Classic unconditional MovingMNIST: ``num_digits`` digits bouncing in 2D, overlaid by maximum.

    Returns ``{"videos": uint8 (N, F, S, S, 1), "digits": int (N, num_digits)}``.
    """
    num_videos = check_int(num_videos, "num_videos")
    frame_size = check_int(frame_size, "frame_size")
    num_frames = check_int(num_frames, "num_frames")
    num_digits = check_int(num_digits, "num_digits")
    digit_size = (frame_size * 7) // 16 if digit_size is None else check_int(digit_size, "digit_size")
    if digit_size >= frame_size:
        raise ValueError(f"`digit_size` must be smaller than frame_size={frame_size}, got {digit_size}.")
    images, labels = load_digit_images(digits_source, split)
    rng = np.random.default_rng(seed)
    low, high = digit_size / 2, frame_size - digit_size / 2
    frames = np.zeros((num_videos, num_frames, frame_size, frame_size), np.float32)
    chosen = rng.integers(0, len(labels), (num_videos, num_digits))
    for k in range(num_digits):
        angle = rng.uniform(0, 2 * np.pi, num_videos)
        speed = rng.uniform(0.04, 0.08, num_videos) * frame_size
        rows = _bounce(rng.uniform(low, high, num_videos), speed * np.sin(angle), low, high, num_frames)
        cols = _bounce(rng.uniform(low, high, num_videos), speed * np.cos(angle), low, high, num_frames)
        centers = np.stack([rows, cols], axis=-1).astype(np.float32)
        for start in range(0, num_videos, _CHUNK):
            part = slice(start, start + _CHUNK)
            rendered = _render(images[chosen[part, k]], centers[part],
                               np.ones(centers[part].shape[:2], np.float32), frame_size, digit_size)
            frames[part] = np.maximum(frames[part], rendered)
    videos = np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)[..., None]
    return {"videos": videos, "digits": labels[chosen]}
