"""Presets: the registry, pipeline presets as keras-hub preset folders, the older layout, and resolution errors."""

import json
import os

import keras
import keras_hub
import numpy as np
import pytest

import keras_vdiff as kv
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.presets import pipeline_format, registry
from keras_vdiff.tasks import TextToVideoPreprocessor, VideoDiffusion

TINY_LATTE = dict(input_shape=(2, 8, 8, 1), patch_size=4, hidden_dim=16, num_layers=2, num_heads=2, learn_sigma=False,
                  conditioning=None)
CAPTIONS = ["the digit 1 is moving up", "the digit 2 is moving left"]


def text_pipeline(preprocessor=False):
    encoder = kv.text.SmallTextEncoder.from_texts(CAPTIONS, hidden_dim=16, num_layers=1, num_heads=2)
    backbone = kv.models.Latte(**dict(TINY_LATTE, conditioning="text", text_dim=16))
    return VideoDiffusion(backbone, GaussianDiffusion("cosine", prediction="v"), text_encoder=encoder, seed=0,
                          preprocessor=TextToVideoPreprocessor(encoder.tokenizer) if preprocessor else None)


def same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def write_legacy_pipeline(model, directory):
    """The single-file layout of earlier releases: pipeline.json + model.weights.h5 of the whole pipeline."""
    os.makedirs(directory)
    with open(os.path.join(directory, "pipeline.json"), "w") as file:
        json.dump({"class_name": "VideoDiffusion", "config": keras.saving.serialize_keras_object(model)}, file)
    model.save_weights(os.path.join(directory, "model.weights.h5"))


def test_list_names_every_kind_after_import_and_register_presets_takes_a_dict():
    names = set(kv.presets.list())
    assert {"latte_tiny", "dit_tiny", "frame_vae_tiny", "latte_tiny_moving_mnist"} <= names
    pipelines = kv.presets.list(kind="pipeline")
    assert "latte_tiny_moving_mnist" in pipelines
    assert all(registry.get_preset(name)["kind"] == "pipeline" for name in pipelines)
    registry.register_presets({"test_presets_dict_entry": {"class_name": "Latte", "config": TINY_LATTE,
                                                           "description": "a test entry"}})
    assert registry.get_preset("test_presets_dict_entry")["kind"] == "backbone"
    assert kv.models.Latte.from_preset("test_presets_dict_entry").hidden_dim == 16


def test_a_pipeline_preset_is_a_keras_hub_folder_whose_backbone_loads_alone(tmp_path):
    model = text_pipeline(preprocessor=True)
    directory = str(tmp_path / "pipeline")
    model.save_to_preset(directory)
    files = set(os.listdir(directory))
    assert {"config.json", "model.weights.h5", "metadata.json", "task.json", "task.weights.h5",
            "preprocessor.json", "tokenizer.json"} <= files
    assert "pipeline.json" not in files
    with open(os.path.join(directory, "task.json")) as file:
        assert json.load(file)["config"]["backbone"] == "config.json"  # one copy of the backbone config
    for loader in (kv.models.Latte.from_preset, keras_hub.models.Backbone.from_preset):
        backbone = loader(directory)
        assert isinstance(backbone, kv.models.Latte)
        assert same_weights(backbone.get_weights(), model.backbone.get_weights())
    loaded = VideoDiffusion.from_preset(directory)
    assert same_weights(loaded.get_weights(), model.get_weights())
    assert loaded.process.prediction == "v"
    np.testing.assert_array_equal(loaded.preprocessor(CAPTIONS), model.text_encoder.tokenizer(CAPTIONS))
    prompts = ["the digit 2 is moving up"]
    np.testing.assert_array_equal(loaded.generate(prompts=prompts, steps=2, seed=3, compile=False),
                                  model.generate(prompts=prompts, steps=2, seed=3, compile=False))


def test_the_older_pipeline_json_layout_keeps_loading(tmp_path):
    model = text_pipeline()
    directory = str(tmp_path / "old")
    write_legacy_pipeline(model, directory)
    loaded = VideoDiffusion.from_preset(directory)
    assert same_weights(loaded.get_weights(), model.get_weights())
    with pytest.raises(ValueError, match=r"older single-file layout .*VideoDiffusion.from_preset\(directory\)"):
        kv.models.Latte.from_preset(directory)


def test_the_shipped_pipeline_is_in_the_new_layout_and_keeps_its_training_record():
    directory = registry.weights_path(registry.get_preset("latte_tiny_moving_mnist"))
    assert pipeline_format.preset_layout(directory) == "pipeline"
    assert os.path.isfile(os.path.join(directory, "training.json"))
    assert registry.get_preset("latte_tiny_moving_mnist")["metadata"]  # training.json is the preset's metadata
    model = VideoDiffusion.from_preset("latte_tiny_moving_mnist")
    backbone = kv.models.Latte.from_preset(directory)
    assert same_weights(backbone.get_weights(), model.backbone.get_weights())
    assert model.process.prediction == "v" and model.preprocessor is not None


def test_a_local_directory_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kv.models.Latte(**dict(TINY_LATTE, hidden_dim=8)).save_to_preset("latte_tiny")
    assert kv.models.Latte.from_preset("latte_tiny").hidden_dim == 8  # the shipped latte_tiny has 32
    model = text_pipeline()
    model.save_to_preset("latte_tiny_moving_mnist")
    loaded = VideoDiffusion.from_preset("latte_tiny_moving_mnist")
    assert loaded.backbone.hidden_dim == 16 and same_weights(loaded.get_weights(), model.get_weights())


def test_unknown_names_list_close_matches():
    with pytest.raises(ValueError, match="Close matches: latte_tiny_moving_mnist"):
        VideoDiffusion.from_preset("latte_tiny_moving_mnst")
    with pytest.raises(ValueError, match=r"Unknown backbone preset 'latte_tinny'.*Close matches: latte_tiny"):
        kv.models.Latte.from_preset("latte_tinny")
    with pytest.raises(ValueError, match="Close matches: dit_tiny"):
        registry.get_preset("dit_tinyy")


@pytest.mark.parametrize("layout", ["task.json", "pipeline.json"])
def test_a_task_config_without_its_process_is_an_error_naming_the_entry_and_the_file(tmp_path, layout):
    model = text_pipeline()
    directory = str(tmp_path / "preset")
    if layout == "task.json":
        model.save_to_preset(directory)
    else:
        write_legacy_pipeline(model, directory)
    path = os.path.join(directory, layout)
    with open(path) as file:
        config = json.load(file)
    task = config["config"] if layout == "task.json" else config["config"]["config"]
    del task["process"]
    with open(path, "w") as file:
        json.dump(config, file)
    with pytest.raises(ValueError, match=rf"{layout} has no 'process' entry"):
        VideoDiffusion.from_preset(directory)


def test_unknown_from_preset_arguments_raise_a_type_error_listing_the_valid_ones(tmp_path):
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) 'num_clases'.*num_classes"):
        kv.models.Latte.from_preset("latte_tiny", num_clases=10)
    directory = str(tmp_path / "pipeline")
    text_pipeline().save_to_preset(directory)
    with pytest.raises(TypeError, match=r"'num_clases'.*Valid arguments: .*num_classes"):
        kv.models.Latte.from_preset(directory, num_clases=10)
    with pytest.raises(TypeError, match=r"'unknown_kwarg'.*Valid arguments: .*condition_dropout"):
        VideoDiffusion.from_preset(directory, unknown_kwarg=1)
    assert VideoDiffusion.from_preset(directory, condition_dropout=0.0).condition_dropout == 0.0
    with pytest.raises(TypeError, match=r"'unknown_kwarg'.*condition_dropout"):
        VideoDiffusion.from_preset("latte_tiny_moving_mnist", unknown_kwarg=1)
