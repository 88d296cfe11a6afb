"""The files of a pipeline preset folder, in keras-hub's Task layout, and the older single-file layout.

A pipeline preset (``VideoDiffusion.save_to_preset``) is a keras-hub preset
folder, so the backbone in it loads on its own (``kv.models.Latte.from_preset(folder)``,
or keras-hub's ``Backbone.from_preset``)::

    config.json         the backbone's config, as keras-hub writes it (``registered_name`` + ``config``)
    model.weights.h5    the backbone's weights, as keras-hub writes them
    metadata.json       keras-hub's metadata (versions, parameter count, date)
    task.json           the task: class, diffusion process, text encoder, autoencoder, options;
                        its ``backbone`` entry names ``config.json`` instead of repeating it
    task.weights.h5     every weight of the task outside the backbone (text encoder, autoencoder,
                        task-owned layers) and, when saved with the optimizer, the optimizer state
    preprocessor.json   the text preprocessor, when the task has one of its own (keras-hub's
    tokenizer.json      ``TextToImagePreprocessor`` split), with its tokenizer's config and
    assets/tokenizer/   the tokenizer's asset files where the tokenizer has them (keras-hub tokenizers)

``task.json`` marks the folder as a pipeline preset. The single-file layout of
earlier releases, ``pipeline.json`` (the whole pipeline's config) + ``model.weights.h5``
(all its weights), still loads.

This module is on the presets floor (``docs/ARCHITECTURE.md``): it reads and
writes files and resolves classes by their registered Keras names, so it
imports no model and no task.
"""

import contextlib
import json
import os

import keras

TASK_CONFIG_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
BACKBONE_CONFIG_FILE = "config.json"
BACKBONE_WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
PREPROCESSOR_CONFIG_FILE = "preprocessor.json"
TOKENIZER_CONFIG_FILE = "tokenizer.json"
TOKENIZER_ASSETS_DIR = os.path.join("assets", "tokenizer")
LEGACY_CONFIG_FILE = "pipeline.json"
LEGACY_WEIGHTS_FILE = "model.weights.h5"

# What a task config must name: without ``process`` a v-prediction model would load as the default
# cosine / epsilon process and sample garbage, so a missing entry is an error, never a default.
REQUIRED_TASK_ENTRIES = ("backbone", "process")


def preset_layout(directory):
    """``"pipeline"`` (task.json), ``"legacy_pipeline"`` (pipeline.json), ``"backbone"`` (config.json) or None."""
    if not isinstance(directory, (str, os.PathLike)) or not os.path.isdir(directory):
        return None
    for name, layout in ((TASK_CONFIG_FILE, "pipeline"), (LEGACY_CONFIG_FILE, "legacy_pipeline"),
                         (BACKBONE_CONFIG_FILE, "backbone")):
        if os.path.isfile(os.path.join(directory, name)):
            return layout
    return None


def read_json(directory, file_name):
    """The JSON object in ``directory/file_name``; the error names the file when it is not valid JSON."""
    path = os.path.join(directory, file_name)
    try:
        with open(path) as file:
            return json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the preset is damaged.") from None


def registered_class(serialized, path):
    """The Keras-registered class a serialized object (``registered_name`` / ``class_name``) names."""
    name = serialized.get("registered_name") or f"keras_vdiff>{serialized.get('class_name')}"
    cls = keras.saving.get_registered_object(name)
    if cls is None:
        raise ValueError(f"{path} names the class {name!r}, which is not registered (import its package first).")
    return cls


def check_task_config(task_config, path):
    """Raise if the task config lacks an entry it must have, naming the entry and the file."""
    config = task_config.get("config") if isinstance(task_config, dict) else None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a serialized task ({{'class_name': ..., 'config': {{...}}}}).")
    missing = [key for key in REQUIRED_TASK_ENTRIES if config.get(key) is None]
    if missing:
        raise ValueError(
            f"{path} has no {', '.join(repr(key) for key in missing)} entry; a pipeline preset must name its "
            f"{' and '.join(missing)} (no default is assumed: a wrong process samples garbage)."
        )


def read_task_config(directory):
    """The serialized task of a preset folder (either layout), checked, with the path it came from."""
    layout = preset_layout(directory)
    if layout == "pipeline":
        path = os.path.join(directory, TASK_CONFIG_FILE)
        task_config = read_json(directory, TASK_CONFIG_FILE)
    elif layout == "legacy_pipeline":
        path = os.path.join(directory, LEGACY_CONFIG_FILE)
        task_config = read_json(directory, LEGACY_CONFIG_FILE).get("config")
    else:
        raise ValueError(
            f"`preset` directory {directory!r} holds no {TASK_CONFIG_FILE} (nor an older {LEGACY_CONFIG_FILE}); "
            "was it written by VideoDiffusion.save_to_preset?"
            + (" It is a backbone preset: load it with its backbone class." if layout == "backbone" else "")
        )
    check_task_config(task_config, path)
    return task_config, path


def write_task_files(task, directory):
    """Write ``task.json``, ``task.weights.h5`` and the preprocessor files of ``task`` into ``directory``.

    The backbone's files (``config.json``, ``model.weights.h5``, ``metadata.json``)
    are written by the caller with keras-hub's ``Backbone.save_to_preset``.
    """
    serialized = keras.saving.serialize_keras_object(task)
    serialized["config"]["backbone"] = BACKBONE_CONFIG_FILE
    with open(os.path.join(directory, TASK_CONFIG_FILE), "w") as file:
        json.dump(serialized, file, indent=2)
    backbone_layers = list(task.backbone._flatten_layers())
    keras.saving.save_weights(task, os.path.join(directory, TASK_WEIGHTS_FILE), objects_to_skip=backbone_layers)
    preprocessor = getattr(task, "preprocessor", None)
    if preprocessor is not None and serialized["config"].get("preprocessor") is not None:
        preprocessor.save_to_preset(directory)


@contextlib.contextmanager
def naming_weights_file(path):
    """Re-raise a failure to read the weights file ``path`` as a ``ValueError`` that names the file.

    h5py says "truncated file: eof = ..." and Keras "24 objects could not be
    loaded" without saying which file; a user with a half-copied download needs the path.
    """
    try:
        yield
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Cannot load the weights file {path}: {error}. The file is truncated or damaged (an interrupted copy "
            "or download), or it belongs to another model configuration."
        ) from error


def load_task_weights(task, directory):
    """Load ``task.weights.h5`` into everything of ``task`` outside its backbone."""
    path = os.path.join(directory, TASK_WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"The preset {directory!r} has no {TASK_WEIGHTS_FILE}; it is incomplete.")
    with naming_weights_file(path):
        keras.saving.load_weights(task, path, objects_to_skip=list(task.backbone._flatten_layers()))
