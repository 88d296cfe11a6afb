"""The examples run as written, in their --smoke mode (the full families sweep is slow-marked)."""

import importlib
import os
import sys

import numpy as np
import pytest

import keras_vdiff as kv

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))

HAS_TRAINED_PRESET = "latte_tiny_moving_mnist" in kv.presets.list(kind="pipeline")


def example(name):
    return importlib.import_module(name)


def test_train_family_latte_smoke():
    videos = example("train_family").main(["--family", "latte", "--smoke"])
    assert videos.shape == (2, 4, 16, 16, 1) and videos.dtype == np.uint8


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dit", "gentron", "video_dit", "snapvideo", "rin", "unet2d", "vdm_unet",
                                    "make_a_video"])
def test_train_family_smoke(family):
    videos = example("train_family").main(["--family", family, "--smoke"])
    assert videos.shape[0] == 2 and videos.dtype == np.uint8


@pytest.mark.skipif(not HAS_TRAINED_PRESET, reason="the trained preset is not shipped in this checkout")
def test_sample_from_preset_smoke(tmp_path):
    paths = example("sample_from_preset").main(["--smoke", "--output-dir", str(tmp_path)])
    assert all(os.path.exists(p) for p in paths) and len(paths) == 3


def test_backends_example_round_trip(tmp_path, capsys):
    weights = str(tmp_path / "dit.weights.h5")
    example("backends").main(["--weights", weights])
    example("backends").main(["--weights", weights])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert float(line.rsplit(" ", 1)[1]) < 1e-5


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRAINED_PRESET, reason="the trained preset is not shipped in this checkout")
def test_evaluate_smoke():
    scores = example("evaluate").main(["--smoke"])
    assert scores["num_videos"] == 30


@pytest.mark.slow
def test_latent_diffusion_smoke():
    assert example("latent_diffusion").main(["--smoke"]).shape == (2, 4, 16, 16, 1)


@pytest.mark.slow
def test_image_to_video_smoke():
    assert example("image_to_video").main(["--smoke"]).shape == (2, 4, 16, 16, 1)


@pytest.mark.slow
def test_convert_and_sample_smoke(tmp_path):
    """A tiny random diffusers LattePipeline converted and sampled (the parity tests cover the numbers)."""
    paths = example("convert_and_sample").main(["--smoke", "--output-dir", str(tmp_path)])
    assert paths and all(os.path.exists(p) for p in paths)
