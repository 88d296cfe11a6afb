"""``TextToVideoPreprocessor``: prompts to the token ids a task's text encoder reads.

keras-hub splits a generation model into a task and a preprocessor that owns
the tokenizer (``StableDiffusion3TextToImagePreprocessor``); keras_vdiff does
the same, so a converted pipeline plugs in its own tokenizer next to its own
text encoder. The task calls the preprocessor on strings only (``generate``'s
prompts); training batches already carry token ids (``kv.data.VideoBatches``
tokenizes them with ``model.tokenizer``).

In a preset folder the preprocessor is ``preprocessor.json``, its tokenizer
``tokenizer.json``, and the tokenizer's asset files (a keras-hub tokenizer's
vocabulary) ``assets/tokenizer/``.
"""

import json
import os

import keras

from keras_vdiff.presets.pipeline_format import PREPROCESSOR_CONFIG_FILE, TOKENIZER_ASSETS_DIR, TOKENIZER_CONFIG_FILE


@keras.saving.register_keras_serializable(package="keras_vdiff")
class TextToVideoPreprocessor:
    """Texts -> token ids with ``tokenizer``.

    Args:
        tokenizer: a callable ``tokenizer(list_of_strings) -> token ids (B, L)`` with
            ``get_config`` (``kv.text.WordTokenizer``, a keras-hub tokenizer, or a
            text adapter's ``tokenize``-style object returning a dict of ``token_ids``).
        lowercase: lowercase and strip every text first (diffusers' Latte and PixArt
            pipelines do, unless they clean captions with optional packages).

    Example:
        >>> encoder = kv.text.SmallTextEncoder.from_texts(captions)
        >>> preprocessor = TextToVideoPreprocessor(encoder.tokenizer)
        >>> preprocessor(["The digit 3 is moving up and down"]).shape
        (1, 8)
    """

    def __init__(self, tokenizer, lowercase=False):
        if not callable(tokenizer):
            raise TypeError(f"`tokenizer` must be callable on a list of strings, got {type(tokenizer).__name__}.")
        self.tokenizer = tokenizer
        self.lowercase = bool(lowercase)

    def __call__(self, texts):
        """A string or a list of strings -> what the tokenizer returns for the list."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if self.lowercase:
            texts = [text.lower().strip() for text in texts]
        return self.tokenizer(texts)

    def get_config(self):
        return {"tokenizer": keras.saving.serialize_keras_object(self.tokenizer), "lowercase": self.lowercase}

    @classmethod
    def from_config(cls, config):
        tokenizer = config["tokenizer"]
        if isinstance(tokenizer, dict):
            tokenizer = keras.saving.deserialize_keras_object(tokenizer)
        return cls(tokenizer, lowercase=config.get("lowercase", False))

    def save_to_preset(self, preset_dir):
        """Write ``preprocessor.json``, ``tokenizer.json`` and the tokenizer's assets into ``preset_dir``."""
        for file_name, obj in ((PREPROCESSOR_CONFIG_FILE, self), (TOKENIZER_CONFIG_FILE, self.tokenizer)):
            with open(os.path.join(preset_dir, file_name), "w") as file:
                json.dump(keras.saving.serialize_keras_object(obj), file, indent=2)
        if hasattr(self.tokenizer, "save_assets"):
            assets = os.path.join(preset_dir, TOKENIZER_ASSETS_DIR)
            os.makedirs(assets, exist_ok=True)
            self.tokenizer.save_assets(assets)

    def load_preset_assets(self, preset_dir):
        """Load the tokenizer's asset files (keras-hub tokenizers) from a preset folder."""
        if hasattr(self.tokenizer, "load_preset_assets"):
            self.tokenizer.load_preset_assets(preset_dir)

    @classmethod
    def from_preset(cls, preset_dir):
        """The preprocessor of a preset folder written by ``save_to_preset``."""
        path = os.path.join(preset_dir, PREPROCESSOR_CONFIG_FILE)
        if not os.path.isfile(path):
            raise ValueError(f"The preset {preset_dir!r} has no {PREPROCESSOR_CONFIG_FILE}.")
        with open(path) as file:
            preprocessor = keras.saving.deserialize_keras_object(json.load(file))
        preprocessor.load_preset_assets(preset_dir)
        return preprocessor


def as_preprocessor(preprocessor):
    """None, a ``TextToVideoPreprocessor`` or its serialized dict -> None or a ``TextToVideoPreprocessor``."""
    if isinstance(preprocessor, dict):
        preprocessor = keras.saving.deserialize_keras_object(preprocessor)
    if preprocessor is not None and not isinstance(preprocessor, TextToVideoPreprocessor):
        raise TypeError(f"`preprocessor` must be a TextToVideoPreprocessor, got {type(preprocessor).__name__}.")
    return preprocessor
