"""VideoFolder and write_video: gif/mp4/frame-folder round trips, captions, sampling, resizing."""

import json
import os

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from keras_vdiff.data.video_folder import VideoFolder, read_video, video_folder, write_video


def moving_square(num_frames=12, size=16, channels=1, seed=0):
    """A bright square moving one pixel right per frame, frame index written in the top-left pixel."""
    rng = np.random.default_rng(seed)
    video = np.zeros((num_frames, size, size, channels), np.uint8)
    for f in range(num_frames):
        video[f, 4:10, f % (size - 6) : f % (size - 6) + 6] = 200
        video[f, 0, 0] = 10 * f
    if channels == 3:
        video = (video * rng.uniform(0.5, 1.0, 3)).astype(np.uint8)
    return video


def test_gif_round_trip_is_lossless_for_grey(tmp_path):
    video = moving_square()
    path = write_video(os.path.join(tmp_path, "clip.gif"), video, fps=10)
    assert sorted(os.listdir(tmp_path)) == ["clip.gif"]  # nothing temporary left
    frames = read_video(path)
    assert frames.shape[0] == 12
    np.testing.assert_array_equal(frames[..., :1], video)  # read back as grey or as RGB with equal channels
    assert np.all(frames == frames[..., :1])


def test_mp4_round_trip_is_close(tmp_path):
    video = moving_square(num_frames=8, channels=3)
    path = write_video(os.path.join(tmp_path, "clip.mp4"), video, fps=8)
    frames = read_video(path)
    assert frames.shape == (8, 16, 16, 3) and frames.dtype == np.uint8
    # H.264 is lossy: compare the mean absolute error (in [0, 255]) to a loose bound.
    assert np.abs(frames.astype(float) - video.astype(float)).mean() < 12.0
    assert iio.immeta(path)["fps"] == pytest.approx(8.0)


def test_write_video_is_atomic_and_validates(tmp_path, monkeypatch):
    target = os.path.join(tmp_path, "clip.gif")
    write_video(target, moving_square(num_frames=4), fps=5)
    before = open(target, "rb").read()

    def failing_write(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(iio, "imwrite", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_video(target, moving_square(num_frames=6), fps=5)
    assert open(target, "rb").read() == before and os.listdir(tmp_path) == ["clip.gif"]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="gif or .mp4"):
        write_video(os.path.join(tmp_path, "clip.avi"), moving_square(), fps=5)
    with pytest.raises(TypeError, match="uint8"):
        write_video(target, moving_square().astype(np.float32), fps=5)
    with pytest.raises(ValueError, match="fps"):
        write_video(target, moving_square(), fps=0)


def make_folder(root):
    os.makedirs(root)
    write_video(os.path.join(root, "a.gif"), moving_square(12, seed=0), fps=10)
    write_video(os.path.join(root, "b.mp4"), moving_square(16, channels=3, seed=1), fps=10)
    frames_dir = os.path.join(root, "c")
    os.makedirs(frames_dir)
    video = moving_square(5, channels=3, seed=2)
    for f, frame in enumerate(video):
        Image.fromarray(frame).save(os.path.join(frames_dir, f"{f:04d}.png"))
    with open(os.path.join(root, "a.txt"), "w") as file:
        file.write("a square moves right\n")
    with open(os.path.join(frames_dir, "caption.txt"), "w") as file:
        file.write("frames in a folder")
    with open(os.path.join(root, "notes.md"), "w") as file:
        file.write("not a video")
    return video


def test_folder_items_captions_and_stride(tmp_path):
    root = os.path.join(tmp_path, "videos")
    frame_folder_video = make_folder(root)
    data = VideoFolder(root, num_frames=4, frame_stride=2, channels=1)
    assert len(data) == 3 and [os.path.basename(p) for p in data.items] == ["a.gif", "b.mp4", "c"]
    assert data.captions == ["a square moves right", "", "frames in a folder"]
    item = data[0]
    assert item["videos"].shape == (4, 16, 16, 1) and item["videos"].dtype == np.uint8
    # Stride 2 from the start: frames 0, 2, 4, 6, identified by the code in pixel (0, 0).
    np.testing.assert_array_equal(item["videos"][:, 0, 0, 0], [0, 20, 40, 60])
    # The frame folder has 5 frames; stride 2 needs 7: the last frame repeats.
    frames = data[2]["videos"]
    luma = np.round(frame_folder_video.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    np.testing.assert_array_equal(frames[..., 0], luma[[0, 2, 4, 4]].astype(np.uint8))
    # captions.json overrides the .txt beside a video, and the argument overrides both.
    with open(os.path.join(root, "captions.json"), "w") as file:
        json.dump({"a": "from json", "b.mp4": "b from json"}, file)
    assert VideoFolder(root, num_frames=4).captions == ["from json", "b from json", "frames in a folder"]
    assert VideoFolder(root, num_frames=4, captions={"c": "given"}).captions[2] == "given"
    with open(os.path.join(root, "captions.txt"), "w") as file:
        file.write("c\tfrom the txt table\n")
    assert VideoFolder(root, num_frames=4).captions[2] == "from the txt table"


def test_resize_sampling_and_arrays(tmp_path):
    root = os.path.join(tmp_path, "videos")
    make_folder(root)
    data = VideoFolder(root, num_frames=3, frame_size=8, channels=3, sampling="center")
    arrays = data.to_arrays()
    assert arrays["videos"].shape == (3, 3, 8, 8, 3) and len(arrays["captions"]) == 3
    # Centre sampling of the 12-frame gif: start (12 - 3) // 2 = 4.
    np.testing.assert_array_equal(data.frame_indices(12), [4, 5, 6])
    # Downscaling by 2 is an antialiased resample: compare with Pillow directly.
    original = read_video(os.path.join(root, "a.gif"))[4:7]
    expected = np.stack([np.asarray(Image.fromarray(np.repeat(f, 3, -1) if f.shape[-1] == 1 else f[..., :3])
                                    .resize((8, 8), Image.Resampling.BICUBIC, reducing_gap=2.0)) for f in original])
    np.testing.assert_array_equal(arrays["videos"][0], expected)
    random = VideoFolder(root, num_frames=3, sampling="random", seed=0)
    starts = {int(random.frame_indices(12)[0]) for _ in range(20)}
    assert len(starts) > 1 and min(starts) >= 0 and max(starts) <= 9
    stretched = video_folder(root, num_frames=2, frame_size=(8, 12), resize_mode="stretch", channels=1)
    assert stretched["videos"].shape == (3, 2, 8, 12, 1)


def test_bad_arguments(tmp_path):
    root = os.path.join(tmp_path, "videos")
    make_folder(root)
    with pytest.raises(ValueError, match="path"):
        VideoFolder(os.path.join(tmp_path, "missing"))
    with pytest.raises(ValueError, match="No videos"):
        VideoFolder(str(tmp_path), num_frames=2)  # holds only the folder "videos", which has no frames
    with pytest.raises(ValueError, match="num_frames"):
        VideoFolder(root, num_frames=0)
    with pytest.raises(ValueError, match="channels"):
        VideoFolder(root, channels=2)
    with pytest.raises(ValueError, match="sampling"):
        VideoFolder(root, sampling="middle")
    with pytest.raises(ValueError, match="needs 31"):
        VideoFolder(root, num_frames=16, frame_stride=2, too_short="error")[0]
    with pytest.raises(IndexError):
        VideoFolder(root)[3]
    write_video(os.path.join(root, "d.gif"), moving_square(4, size=8), fps=5)
    with pytest.raises(ValueError, match="differ in shape"):
        VideoFolder(root, num_frames=2, channels=1).to_arrays()  # 16x16 and 8x8 without `frame_size`
