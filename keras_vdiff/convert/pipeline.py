"""A diffusers pipeline folder (``model_index.json``) -> a :class:`kv.VideoDiffusion` that samples as the pipeline does.

Supported pipelines and what each component becomes:

=====================  =============================================================================
``LattePipeline``      ``transformer`` -> ``kv.models.Latte``, ``vae`` -> ``kv.autoencoders.AutoencoderKL``
                       (frame by frame), ``text_encoder`` -> ``kv.text.T5Encoder``, ``tokenizer`` ->
                       ``kv.text.T5Tokenizer`` (120 tokens), ``scheduler`` -> process + default sampler
``DiTPipeline``        ``transformer`` -> ``kv.models.DiT``, ``vae``, ``scheduler``
``WanPipeline``        ``transformer`` -> ``kv.models.Wan``, ``vae`` -> ``kv.autoencoders.WanVAE``, ``text_encoder``
                       -> ``kv.text.UMT5Encoder`` (zero-padded outputs), ``tokenizer`` (512 tokens),
                       ``scheduler`` (Wan's UniPC with ``flow_shift``: ``"unipc"`` on ``FlowMatching``)
``CogVideoXPipeline``  ``transformer`` -> ``kv.models.CogVideoX``, ``vae`` -> ``kv.autoencoders.CogVideoXVAE``,
                       ``text_encoder`` -> ``kv.text.T5Encoder(attend_to_padding=True)``, ``tokenizer``
                       (the transformer's ``max_text_seq_length``, 226), ``scheduler`` (its DDIM or DPM)
=====================  =============================================================================

What the pipelines do around the models is reproduced by the task's options:
the prompts are lowercased and stripped (``TextToVideoPreprocessor(lowercase=True)``;
diffusers' optional caption cleaning, which needs ``bs4`` and ``ftfy``, is not
reproduced), the unconditional branch is the empty prompt (``negative_prompt=""``)
and, as ``LattePipeline`` cuts the prompt and the negative encodings to the
prompt's token count and passes the transformer no mask, the negative row
attends to the prompt's positions (``negative_prompt_mask="prompt"``) and T5's
outputs at padding positions are kept (``T5Encoder(zero_padding=False)``).
For one prompt this is exactly diffusers' computation; for several prompts in
one call diffusers zeroes the padding outputs and attends to all 120 positions,
while here every prompt is treated as it would be alone.

``CogVideoXPipeline`` pads every prompt to the transformer's text length and
runs T5 on the ids without an attention mask (``attend_to_padding``), takes no
lowercasing, and its unconditional branch is the empty prompt encoded the same
way; the transformer attends to all text tokens, so no mask choice arises. It
has no default guidance scale of its own here: diffusers' is 6
(``generate(guidance_scale=6.0)``); its ``use_dynamic_cfg`` (off by default) is
not reproduced.
"""

import json
import os

from keras_vdiff.convert.checkpoint import ConversionError

__all__ = ["convert_pipeline", "PIPELINES"]

INDEX_FILE = "model_index.json"
LATTE_MAX_TOKENS = 120  # LattePipeline's tokenizer max_length
# pipeline class -> {component: accepted (library, class) pairs}; None = optional.
PIPELINES = {
    "LattePipeline": {
        "transformer": {("diffusers", "LatteTransformer3DModel")},
        "vae": {("diffusers", "AutoencoderKL")},
        "text_encoder": {("transformers", "T5EncoderModel")},
        "tokenizer": {("transformers", "T5Tokenizer"), ("transformers", "T5TokenizerFast")},
        "scheduler": None,
    },
    "DiTPipeline": {
        "transformer": {("diffusers", "DiTTransformer2DModel")},
        "vae": {("diffusers", "AutoencoderKL")},
        "scheduler": None,
    },
    "WanPipeline": {
        "transformer": {("diffusers", "WanTransformer3DModel")},
        "vae": {("diffusers", "AutoencoderKLWan")},
        "text_encoder": {("transformers", "UMT5EncoderModel")},
        "tokenizer": {("transformers", "T5Tokenizer"), ("transformers", "T5TokenizerFast")},
        "scheduler": None,
    },
    "CogVideoXPipeline": {
        "transformer": {("diffusers", "CogVideoXTransformer3DModel")},
        "vae": {("diffusers", "AutoencoderKLCogVideoX")},
        "text_encoder": {("transformers", "T5EncoderModel")},
        "tokenizer": {("transformers", "T5Tokenizer"), ("transformers", "T5TokenizerFast")},
        "scheduler": None,
    },
}


def read_index(path):
    """The parsed ``model_index.json`` of a pipeline folder, checked against :data:`PIPELINES`."""
    with open(os.path.join(path, INDEX_FILE)) as f:
        index = json.load(f)
    name = index.get("_class_name")
    if name not in PIPELINES:
        raise ConversionError(
            f"{os.path.join(path, INDEX_FILE)} describes a {name!r}; supported pipelines: {sorted(PIPELINES)}."
        )
    for component, accepted in PIPELINES[name].items():
        entry = index.get(component)
        if not entry or entry[0] is None:
            raise ConversionError(f"The {name} at {path!r} has no `{component}`; keras_vdiff needs it.")
        if accepted is not None and tuple(entry) not in accepted:
            raise ConversionError(
                f"The {name} component `{component}`={entry!r} is not supported; supported: {sorted(accepted)}."
            )
        if not os.path.isdir(os.path.join(path, component)):
            raise FileNotFoundError(f"The {name} at {path!r} lists `{component}` but has no {component}/ folder.")
    return index


def convert_pipeline(path, dtype=None):
    """The :class:`kv.VideoDiffusion` of a diffusers pipeline folder (see the module docstring).

    Args:
        path: the pipeline folder (a download of ``maxin-cn/Latte-1``, ``facebook/DiT-XL-2-256`` or
            ``THUDM/CogVideoX-2b``).
        dtype: dtype policy of every converted model (``"bfloat16"`` halves the memory).

    Returns:
        a ``VideoDiffusion`` whose ``generate`` samples with the scheduler's settings.
    """
    from keras_vdiff.convert import convert_model_folder
    from keras_vdiff.convert.schedulers import from_scheduler_config
    from keras_vdiff.tasks import TextToVideoPreprocessor, VideoDiffusion

    index = read_index(path)
    name = index["_class_name"]
    part = lambda component: os.path.join(path, component)  # noqa: E731
    backbone = convert_model_folder(part("transformer"), dtype=dtype)
    autoencoder = convert_model_folder(part("vae"), dtype=dtype)
    scheduler = from_scheduler_config(part("scheduler"), learn_sigma=bool(backbone.learn_sigma))
    text = {}
    if name == "LattePipeline":
        from keras_vdiff.convert.t5 import tokenizer_from_folder

        text_encoder = convert_model_folder(part("text_encoder"), dtype=dtype)
        text_encoder.zero_padding = False
        tokenizer = tokenizer_from_folder(part("tokenizer"), sequence_length=LATTE_MAX_TOKENS)
        text = dict(text_encoder=text_encoder, preprocessor=TextToVideoPreprocessor(tokenizer, lowercase=True),
                    negative_prompt="", negative_prompt_mask="prompt")
    if name == "WanPipeline":
        from keras_vdiff.convert.wan import wan_text_arguments

        text = wan_text_arguments(path, index, dtype)
    if name == "CogVideoXPipeline":
        from keras_vdiff.convert.t5 import tokenizer_from_folder

        text_encoder = convert_model_folder(part("text_encoder"), dtype=dtype)
        text_encoder.attend_to_padding = True
        tokenizer = tokenizer_from_folder(part("tokenizer"), sequence_length=backbone.text_length)
        text = dict(text_encoder=text_encoder, preprocessor=TextToVideoPreprocessor(tokenizer), negative_prompt="")
    return VideoDiffusion(backbone, autoencoder=autoencoder, **text, **scheduler.task_arguments())
