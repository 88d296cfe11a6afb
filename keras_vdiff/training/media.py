"""What a training or sampling job writes for people to look at: the loss curve, videos, a contact sheet.

Every file is written atomically (``keras_vdiff.atomic_files``): a reader sees
the previous file or the new one, never half of one.
"""

import os
import tempfile

import numpy as np

from keras_vdiff.atomic_files import STAGING_PREFIX, staged_file, write_json
from keras_vdiff.data.video_folder import write_video


def plot_loss(losses, path, title="training loss"):
    """Save a PNG of the per-step loss (light) and its moving average (dark)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(losses, dtype=np.float64)
    if losses.size == 0:
        raise ValueError("`losses` is empty: nothing to plot.")
    window = max(1, min(50, losses.size // 10))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    axis.plot(np.arange(1, losses.size + 1), losses, color="#9ecae1", linewidth=0.8, label="per step")
    axis.plot(np.arange(window, losses.size + 1), smooth, color="#08519c", linewidth=1.6,
              label=f"moving average ({window})")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    with staged_file(path) as staging:
        figure.savefig(staging)
    plt.close(figure)
    return path


def contact_sheet(videos, path, scale=2, labels=None):
    """Save one PNG with a row per video and a column per frame (grey or RGB uint8 ``(B, F, H, W, C)``)."""
    from PIL import Image

    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.dtype != np.uint8:
        raise ValueError(f"`videos` must be uint8 (B, F, H, W, C); got {videos.dtype} {videos.shape}.")
    batch, frames, height, width, channels = videos.shape
    gap = 1
    sheet = np.full((batch * (height + gap) - gap, frames * (width + gap) - gap, channels), 64, np.uint8)
    for b in range(batch):
        for f in range(frames):
            sheet[b * (height + gap):b * (height + gap) + height, f * (width + gap):f * (width + gap) + width] = videos[b, f]
    image = Image.fromarray(sheet[..., 0] if channels == 1 else sheet)
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    with staged_file(path) as staging:
        image.save(staging, format="PNG")
    if labels is not None:
        write_json(os.path.splitext(path)[0] + ".json", {"rows": list(labels)})
    return path


def write_samples(videos, names, output_dir, fps=4, scale=4, formats=("gif",)):
    """Write every video as ``<output_dir>/<name>.<format>`` (upscaled ``scale``x, nearest) and return the paths."""
    videos = np.asarray(videos)
    if len(names) != len(videos):
        raise ValueError(f"`names` has {len(names)} entries for {len(videos)} videos.")
    for fmt in formats:
        if fmt not in ("gif", "mp4"):
            raise ValueError(f"`formats` entries must be 'gif' or 'mp4', got {fmt!r}.")
    paths = []
    for video, name in zip(videos, names):
        big = np.repeat(np.repeat(video, scale, axis=1), scale, axis=2) if scale > 1 else video
        for fmt in formats:
            path = os.path.join(output_dir, f"{name}.{fmt}")
            write_video(path, big, fps=fps)
            paths.append(path)
    return paths


def slug(text):
    """A file-name-safe form of a caption: lower case, words joined by ``_``."""
    return "_".join("".join(c for c in word if c.isalnum()) for word in text.lower().split()).strip("_")


def check_writable(directory, name="output directory"):
    """Create ``directory`` if needed and prove a file can be written there, before any long work starts.

    Raises ``PermissionError`` / ``NotADirectoryError`` naming ``name`` and the path.
    """
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"The {name} {directory} is a file, not a directory.")
    try:
        os.makedirs(directory, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-write-check-", dir=directory)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise PermissionError(f"The {name} {directory} is not writable: {error.strerror or error}.") from None
    return directory
