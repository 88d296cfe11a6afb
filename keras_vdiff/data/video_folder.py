"""A folder of videos with captions as a dataset, and atomic video writing.

Layout of a video folder (any mix of the three kinds of item)::

    my_videos/
      clip_000.mp4            a video file (mp4, gif, webm, avi, mov, mkv)
      clip_000.txt            optional: its caption, next to it
      clip_001.gif
      clip_002/               a folder of frames, read in name order (png, jpg, jpeg, bmp, webp)
        0000.png 0001.png ...
        caption.txt           optional: the caption of a frame folder
      captions.json           optional: {"clip_000.mp4": "a caption", "clip_001": "..."}
      captions.txt            optional: one "name<TAB>caption" per line

A caption is looked up in this order: the ``captions`` argument, ``captions.json``,
``captions.txt``, then the ``.txt`` file next to the item (``caption.txt`` inside
a frame folder); names may be given with or without the extension. Items with
no caption get ``""`` (the empty prompt, which a text-to-video model treats
as unconditional).

Every item is read with ``imageio``, ``num_frames`` frames are sampled
``frame_stride`` apart (from the start, the centre or a random start), frames
are resized so the shorter side is ``frame_size`` and centre-cropped to a
square (or stretched), and converted to ``channels`` (1: luminance, 3: RGB).
"""

import json
import os

import numpy as np

from keras_vdiff.atomic_files import staged_file

__all__ = ["VideoFolder", "video_folder", "read_video", "write_video", "VIDEO_EXTENSIONS", "FRAME_EXTENSIONS"]

VIDEO_EXTENSIONS = (".mp4", ".gif", ".webm", ".avi", ".mov", ".mkv")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SAMPLINGS = ("start", "center", "random")
RESIZE_MODES = ("crop", "stretch")
TOO_SHORT = ("repeat_last", "error")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601


def _as_frames(array, path, image=False):
    """imageio output -> uint8 (F, H, W, C); ``image``: one frame (H, W[, C]) rather than a video (F, H, W[, C])."""
    array = np.asarray(array)
    if image:
        array = array[None]
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise ValueError(f"Could not read frames of shape (F, H, W, C) from {path!r}; got shape {array.shape}.")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            array = np.round(np.clip(array, 0.0, 1.0) * 255.0)
        else:
            array = np.clip(array, 0, 255)
        array = array.astype(np.uint8)
    return array


def read_video(path):
    """All frames of a video file or a folder of frames: uint8 ``(F, H, W, C)`` (C as stored: 1, 3 or 4)."""
    import imageio.v3 as iio

    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(FRAME_EXTENSIONS))
        if not names:
            raise ValueError(f"The frame folder {path!r} holds no images ({', '.join(FRAME_EXTENSIONS)}).")
        frames = [_as_frames(iio.imread(os.path.join(path, n)), path, image=True)[0] for n in names]
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise ValueError(f"The frames in {path!r} differ in shape: {sorted(shapes)}.")
        return np.stack(frames)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No video at {path!r}.")
    return _as_frames(iio.imread(path, index=None), path)


def _to_channels(frames, channels):
    if frames.shape[-1] == 4:
        frames = frames[..., :3]
    if channels is None or frames.shape[-1] == channels:
        return frames
    if channels == 1:
        grey = frames.astype(np.float32) @ _LUMA
        return np.round(grey).astype(np.uint8)[..., None]
    return np.repeat(frames, 3, axis=-1)


def _resize(frames, size, mode):
    """uint8 (F, H, W, C) -> (F, size[0], size[1], C) with Pillow (antialiased)."""
    from PIL import Image

    height, width = frames.shape[1:3]
    target_h, target_w = size
    if (height, width) == (target_h, target_w):
        return frames
    if mode == "crop":  # scale so the frame covers the target, then centre-crop
        scale = max(target_h / height, target_w / width)
        scaled = (max(target_h, round(height * scale)), max(target_w, round(width * scale)))
    else:
        scaled = (target_h, target_w)
    top, left = (scaled[0] - target_h) // 2, (scaled[1] - target_w) // 2
    out = np.empty((frames.shape[0], target_h, target_w, frames.shape[-1]), np.uint8)
    for i, frame in enumerate(frames):
        image = Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame)
        image = image.resize((scaled[1], scaled[0]), Image.Resampling.BICUBIC, reducing_gap=2.0)
        resized = np.asarray(image)
        resized = resized[..., None] if resized.ndim == 2 else resized
        out[i] = resized[top : top + target_h, left : left + target_w]
    return out


def _read_caption_file(path):
    with open(path, encoding="utf-8") as file:
        return file.read().strip()


class VideoFolder:
    """A folder of videos (files or frame folders) with captions, as an indexable dataset.

    Args:
        path: the folder.
        num_frames: frames per sample.
        frame_size: output side (int) or ``(height, width)``; ``None`` keeps the stored size.
        frame_stride: take every ``frame_stride``-th frame.
        channels: 1 (luminance), 3 (RGB) or ``None`` (as stored, alpha dropped).
        sampling: where the frames start: ``"start"``, ``"center"`` or
            ``"random"`` (a new start each time an item is read, from ``seed``).
        resize_mode: ``"crop"`` (keep the aspect ratio, centre-crop) or ``"stretch"``.
        too_short: a video with fewer than ``(num_frames - 1) * frame_stride + 1``
            frames is padded by repeating its last frame (``"repeat_last"``) or
            rejected (``"error"``).
        captions: optional dict ``name -> caption`` or path of a ``.json`` /
            ``.txt`` captions file (overrides the files in the folder).
        seed: seed of ``sampling="random"``.

    Items are dicts ``{"videos": uint8 (num_frames, H, W, C), "captions": str}``.
    ``to_arrays()`` stacks every item into the dict format of
    ``kv.data.moving_mnist`` (``videos`` (N, F, H, W, C), ``captions`` list), ready
    for ``model.fit`` (via ``kv.data.VideoBatches`` for token ids).

    Example:
        >>> data = VideoFolder("my_videos", num_frames=16, frame_size=64, frame_stride=2)
        >>> item = data[0]
        >>> item["videos"].shape, item["captions"]
        ((16, 64, 64, 3), 'a dog runs on the beach')
    """

    def __init__(
        self,
        path,
        num_frames=10,
        frame_size=None,
        frame_stride=1,
        channels=None,
        sampling="start",
        resize_mode="crop",
        too_short="repeat_last",
        captions=None,
        seed=0,
    ):
        if not os.path.isdir(path):
            raise ValueError(f"`path` must be an existing folder, got {path!r}.")
        for name, value in (("num_frames", num_frames), ("frame_stride", frame_stride)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if frame_size is not None:
            size = (frame_size, frame_size) if isinstance(frame_size, (int, np.integer)) else tuple(frame_size)
            if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
                raise ValueError(f"`frame_size` must be a positive int, a (height, width) pair or None, got {frame_size!r}.")
            frame_size = (int(size[0]), int(size[1]))
        if channels not in (None, 1, 3):
            raise ValueError(f"`channels` must be 1, 3 or None, got {channels!r}.")
        for name, value, valid in (("sampling", sampling, SAMPLINGS), ("resize_mode", resize_mode, RESIZE_MODES),
                                   ("too_short", too_short, TOO_SHORT)):
            if value not in valid:
                raise ValueError(f"`{name}` must be one of {valid}, got {value!r}.")
        self.path = path
        self.num_frames = int(num_frames)
        self.frame_size = frame_size
        self.frame_stride = int(frame_stride)
        self.channels = channels
        self.sampling = sampling
        self.resize_mode = resize_mode
        self.too_short = too_short
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.items = self._discover(path)
        if not self.items:
            raise ValueError(
                f"No videos in {path!r}: expected files ending in {', '.join(VIDEO_EXTENSIONS)} or folders of "
                f"frames ({', '.join(FRAME_EXTENSIONS)})."
            )
        table = self._caption_table(captions)
        self.captions = [self._caption(item, table) for item in self.items]

    @staticmethod
    def _discover(path):
        items = []
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if name.startswith("."):
                continue
            if os.path.isfile(full) and name.lower().endswith(VIDEO_EXTENSIONS):
                items.append(full)
            elif os.path.isdir(full) and any(n.lower().endswith(FRAME_EXTENSIONS) for n in os.listdir(full)):
                items.append(full)
        return items

    def _caption_table(self, captions):
        """name -> caption from captions.txt, then captions.json, then the argument (later ones win)."""
        table = {}
        for name in ("captions.txt", "captions.json"):
            file = os.path.join(self.path, name)
            if os.path.isfile(file):
                table.update(self._parse_captions_file(file))
        if isinstance(captions, dict):
            table.update({str(k): str(v) for k, v in captions.items()})
        elif isinstance(captions, (str, os.PathLike)) and os.path.isfile(captions):
            table.update(self._parse_captions_file(os.fspath(captions)))
        elif captions is not None:
            raise ValueError(f"`captions` must be a dict or an existing .json/.txt file, got {captions!r}.")
        return table

    @staticmethod
    def _parse_captions_file(path):
        if path.lower().endswith(".json"):
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
            if not isinstance(data, dict):
                raise ValueError(f"{path!r} must hold a JSON object name -> caption.")
            return {str(k): str(v) for k, v in data.items()}
        table = {}
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, 1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                if "\t" not in line:
                    raise ValueError(f"{path!r} line {number}: expected 'name<TAB>caption', got {line!r}.")
                name, text = line.split("\t", 1)
                table[name.strip()] = text.strip()
        return table

    def _caption(self, item, table):
        name = os.path.basename(item)
        stem = os.path.splitext(name)[0] if os.path.isfile(item) else name
        for key in (name, stem):
            if key in table:
                return table[key]
        beside = os.path.join(item, "caption.txt") if os.path.isdir(item) else os.path.splitext(item)[0] + ".txt"
        return _read_caption_file(beside) if os.path.isfile(beside) else ""

    def __len__(self):
        return len(self.items)

    def frame_indices(self, total):
        """The ``num_frames`` indices read from a video of ``total`` frames."""
        span = (self.num_frames - 1) * self.frame_stride + 1
        if total < span:
            if self.too_short == "error":
                raise ValueError(
                    f"A video has {total} frames but num_frames={self.num_frames} with "
                    f"frame_stride={self.frame_stride} needs {span}."
                )
            start = 0
        elif self.sampling == "start":
            start = 0
        elif self.sampling == "center":
            start = (total - span) // 2
        else:
            start = int(self.rng.integers(0, total - span + 1))
        return np.minimum(start + self.frame_stride * np.arange(self.num_frames), total - 1)

    def __getitem__(self, index):
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"`index` must be an integer, got {type(index).__name__}.")
        if not -len(self) <= index < len(self):
            raise IndexError(f"`index` {index} is out of range for {len(self)} videos.")
        item = self.items[index]
        frames = read_video(item)
        frames = frames[self.frame_indices(len(frames))]
        frames = _to_channels(frames, self.channels)
        if self.frame_size is not None:
            frames = _resize(frames, self.frame_size, self.resize_mode)
        return {"videos": frames, "captions": self.captions[index]}

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    def to_arrays(self):
        """Every item stacked: ``{"videos": uint8 (N, F, H, W, C), "captions": list[str]}``."""
        items = list(self)
        shapes = {item["videos"].shape for item in items}
        if len(shapes) > 1:
            raise ValueError(f"Videos differ in shape {sorted(shapes)}; set `frame_size` and `channels` to stack them.")
        return {"videos": np.stack([item["videos"] for item in items]), "captions": [i["captions"] for i in items]}


def video_folder(path, **kwargs):
    """``VideoFolder(path, **kwargs).to_arrays()``: a folder as a dict of numpy arrays (see :class:`VideoFolder`)."""
    return VideoFolder(path, **kwargs).to_arrays()


def write_video(path, video, fps=8):
    """Write a uint8 video ``(F, H, W, C)`` (C = 1 or 3) as ``.gif`` or ``.mp4``, atomically.

    The file is written under a temporary name in the same folder and renamed,
    so a reader never sees a half-written video. MP4 uses H.264 (lossy;
    sizes are rounded up to a multiple of 16 by the encoder); GIF is lossless
    for grey and for up to 256 colours (identical consecutive frames may be
    merged by the GIF encoder). Grey MP4s are stored as RGB.
    """
    import imageio.v3 as iio

    video = np.asarray(video)
    if video.ndim == 3:
        video = video[..., None]
    if video.ndim != 4 or video.shape[-1] not in (1, 3):
        raise ValueError(f"`video` must have shape (F, H, W, 1|3) or (F, H, W); got {video.shape}.")
    if video.dtype != np.uint8:
        raise TypeError(f"`video` must be uint8 in [0, 255]; got dtype {video.dtype}.")
    if not (isinstance(fps, (int, float, np.integer, np.floating)) and fps > 0):
        raise ValueError(f"`fps` must be a positive number, got {fps!r}.")
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".gif", ".mp4"):
        raise ValueError(f"`path` must end in .gif or .mp4, got {path!r}.")
    with staged_file(path) as staging:
        if extension == ".gif":
            frames = video[..., 0] if video.shape[-1] == 1 else video
            iio.imwrite(staging, frames, extension=".gif", duration=1000.0 / fps, loop=0)
        else:
            frames = np.repeat(video, 3, axis=-1) if video.shape[-1] == 1 else video
            iio.imwrite(staging, frames, extension=".mp4", fps=fps, codec="libx264")
    return path
