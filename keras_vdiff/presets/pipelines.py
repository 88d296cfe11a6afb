"""Whole-pipeline presets (backbone + process + text encoder), trained by the project.

A trained pipeline ships as the preset directory ``VideoDiffusion.save_to_preset``
writes (a keras-hub preset folder: ``config.json`` + ``model.weights.h5`` for the
backbone, ``task.json`` + ``task.weights.h5`` for the rest, the tokenizer's
``preprocessor.json`` / ``tokenizer.json``; see ``pipeline_format``) under
``keras_vdiff/presets/weights/<name>/``, next to a ``training.json`` with the
command that produced it and its measured scores. It is registered only when
that directory holds a pipeline, so ``keras_vdiff.presets.list()`` never names
a preset that cannot load.
"""

import json
import os

from keras_vdiff.presets.pipeline_format import preset_layout
from keras_vdiff.presets.registry import WEIGHTS_DIR, register_preset

TRAINED_PIPELINES = {
    "latte_tiny_moving_mnist": (
        "Text-to-video Latte (variant 1, 16x16 frames, 10 frames, patch 4) with a word-level text encoder, "
        "trained on generated MovingMNIST by `keras-vdiff train`; see training.json for the command and scores."
    ),
    "latte_tiny_moving_mnist_distilled": (
        "latte_tiny_moving_mnist distilled (one progressive round 16 -> 8 steps that folds the guidance in): a "
        "guidance-conditioned student sampling 8 DDIM steps without the null pass; see training.json for the "
        "command and scores."
    ),
    "ssr_moving_mnist_16_to_32": (
        "A 16x16 -> 32x32 spatial super-resolution stage for latte_tiny_moving_mnist (SuperResolutionDiffusion, "
        "a fully convolutional pseudo-3D VDMUNet with noise-conditioning augmentation, text-conditioned); "
        "kv.Cascade([base, ssr]); see training.json for the command and scores."
    ),
}


def _register():
    for name, description in TRAINED_PIPELINES.items():
        directory = os.path.join(WEIGHTS_DIR, name)
        if preset_layout(directory) not in ("pipeline", "legacy_pipeline"):
            continue
        metadata = {}
        info = os.path.join(directory, "training.json")
        if os.path.exists(info):
            with open(info) as file:
                metadata = json.load(file)
        register_preset(name, "VideoDiffusion", {"directory": name}, description, weights=name, kind="pipeline",
                        metadata=metadata)


_register()
