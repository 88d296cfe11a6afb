"""Loading pretrained checkpoints written by diffusers and transformers: ``kv.convert.from_diffusers``.

One entry point reads a folder saved with ``save_pretrained`` and returns the
matching keras_vdiff object, on whichever Keras backend is active:

=================================  ======================================================================
``config.json`` class              keras_vdiff object
=================================  ======================================================================
``DiTTransformer2DModel``          ``kv.models.DiT``
``LatteTransformer3DModel``        ``kv.models.Latte``
``CogVideoXTransformer3DModel``    ``kv.models.CogVideoX``
``WanTransformer3DModel``          ``kv.models.Wan``
``AutoencoderKL``                  ``kv.autoencoders.AutoencoderKL``
``AutoencoderKLCogVideoX``         ``kv.autoencoders.CogVideoXVAE``
``AutoencoderKLWan``               ``kv.autoencoders.WanVAE``
``T5EncoderModel``                 ``kv.text.T5Encoder``
``UMT5EncoderModel``               ``kv.text.UMT5Encoder``
a pipeline (``model_index.json``)  ``kv.VideoDiffusion`` (backbone, VAE, text encoder, tokenizer, scheduler)
=================================  ======================================================================

Weights are read with ``safetensors`` in numpy, one tensor at a time
(:mod:`keras_vdiff.convert.checkpoint`); a config field the converter does not
support, a missing tensor or a tensor left unused raises
:class:`ConversionError` naming it. Nothing is written: save the result with
``save_to_preset`` (or ``keras-vdiff convert --diffusers``).
"""

import importlib
import os

from keras_vdiff.convert.checkpoint import ConversionError, PretrainedFolder, class_name, weights_to_load

__all__ = ["from_diffusers", "ConversionError", "MODEL_CONVERTERS", "PretrainedFolder"]

PIPELINE_INDEX = "model_index.json"

# config.json class -> "module:function"; each converter is ``function(folder, dtype=None) -> object``.
MODEL_CONVERTERS = {
    "DiTTransformer2DModel": "keras_vdiff.convert.dit:convert_dit",
    "LatteTransformer3DModel": "keras_vdiff.convert.latte:convert_latte",
    "CogVideoXTransformer3DModel": "keras_vdiff.convert.cogvideox:convert_cogvideox",
    "WanTransformer3DModel": "keras_vdiff.convert.wan:convert_wan",
    "AutoencoderKL": "keras_vdiff.convert.autoencoder_kl:convert_autoencoder_kl",
    "AutoencoderKLCogVideoX": "keras_vdiff.convert.cogvideox_vae:convert_cogvideox_vae",
    "AutoencoderKLWan": "keras_vdiff.convert.wan_vae:convert_wan_vae",
    "T5EncoderModel": "keras_vdiff.convert.t5:convert_t5_encoder",
    "UMT5EncoderModel": "keras_vdiff.convert.t5:convert_umt5_encoder",
}


def _converter(name):
    module, function = MODEL_CONVERTERS[name].split(":")
    return getattr(importlib.import_module(module), function)


def convert_model_folder(path, dtype=None):
    """The keras_vdiff model of one ``save_pretrained`` model folder (``config.json`` + safetensors)."""
    folder = PretrainedFolder(path)
    name = class_name(folder.config)
    if name not in MODEL_CONVERTERS:
        raise ConversionError(
            f"{os.path.join(folder.path, 'config.json')} describes a {name!r}; supported: {sorted(MODEL_CONVERTERS)}."
        )
    with weights_to_load() as weights:
        model = _converter(name)(folder, dtype=dtype)
    weights.check_all_assigned(f"{folder.path!r} ({name})", ConversionError)
    return model


def from_diffusers(path, dtype=None):
    """Load a diffusers / transformers folder as a keras_vdiff model or pipeline.

    Args:
        path: a model folder (``config.json`` + ``*.safetensors``, sharded or
            not) or a pipeline folder (``model_index.json`` and one sub-folder
            per component), e.g. a download of ``maxin-cn/Latte-1``.
        dtype: dtype policy of the built models (``"float32"`` default,
            ``"bfloat16"``, ``"mixed_bfloat16"``); weights are cast as they load.

    Returns:
        The keras_vdiff backbone / autoencoder / text encoder of a model
        folder, or a ``kv.VideoDiffusion`` for a pipeline folder.

    Raises:
        FileNotFoundError: the folder is neither.
        ConversionError: an unsupported config value, a missing or unused tensor.

    Example:
        >>> pipeline = kv.convert.from_diffusers("Latte-1")            # LattePipeline folder
        >>> videos = pipeline.generate(prompts=["a dog running on the beach"], steps=50)
        >>> dit = kv.convert.from_diffusers("DiT-XL-2-256/transformer")  # one model
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"`path`={path!r} is not a folder.")
    if os.path.isfile(os.path.join(path, PIPELINE_INDEX)):
        from keras_vdiff.convert.pipeline import convert_pipeline

        return convert_pipeline(path, dtype=dtype)
    return convert_model_folder(path, dtype=dtype)
