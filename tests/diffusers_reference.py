"""Reference models for the converter tests, built the way diffusers and keras-hub test their converters.

A reference model (diffusers / transformers, PyTorch) is built from a small
config; :func:`randomize` gives every floating tensor of its state dict random,
non-zero values (zero-initialised ones included: adaLN-Zero gates, output
projections, ``scale_shift_table``), so a converter that drops or misplaces a
tensor shows in the outputs; :func:`save` writes it with ``save_pretrained``,
the folder a user downloads; the test loads it with ``kv.convert.from_diffusers``
and compares with :func:`relative_error`.

Import this module only inside tests that need it (it imports torch).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def randomize(module, seed=0):
    """Set every floating tensor of ``module``'s state dict to random values (in place); returns ``module``.

    Matrices and kernels get ``N(0, 1/fan_in)`` (activations keep unit scale
    through depth); vectors get ``N(0, 0.2^2)``, plus 1 for the weights of
    norms (``*norm*.weight``, ``*.scale``) so that normalisations stay well
    conditioned.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.dtype.is_floating_point:
                continue
            if tensor.ndim >= 2:
                fan_in = int(np.prod(tensor.shape[1:])) if tensor.ndim > 2 else tensor.shape[-1]
                value = torch.randn(tensor.shape, generator=generator) / np.sqrt(max(fan_in, 1))
            else:
                value = 0.2 * torch.randn(tensor.shape, generator=generator)
                if name.endswith(".weight") and "norm" in name.lower() or name.endswith(".scale"):
                    value = value + 1.0
            tensor.copy_(value.to(tensor.dtype))
    return module.eval()


def save(module, path):
    """``module.save_pretrained(path)`` as safetensors; returns ``str(path)``."""
    module.save_pretrained(str(path), safe_serialization=True)
    return str(path)


def to_torch(array):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(array, dtype="float32")))


def relative_error(actual, expected):
    """``max |actual - expected| / max |expected|`` (the error bound the converter issues state)."""
    actual = np.asarray(actual, dtype="float64")
    expected = np.asarray(expected, dtype="float64")
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def tiny_t5_tokenizer_folder(path, corpus, vocab_size=72, extra_ids=4):
    """A T5 tokenizer folder as the Hub holds one (``spiece.model`` + ``tokenizer_config.json``), trained on ``corpus``.

    The sentencepiece model is trained here (offline) with T5's special ids
    (pad 0, end 1, unk 2); returns transformers' tokenizer loaded from the folder.
    """
    import io
    import json
    import os

    import sentencepiece
    import transformers

    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(corpus) * 3), model_writer=proto, vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        hard_vocab_limit=False, minloglevel=2,
    )
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "spiece.model"), "wb") as f:
        f.write(proto.getvalue())
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                   "extra_ids": extra_ids, "additional_special_tokens": [f"<extra_id_{i}>" for i in range(extra_ids)],
                   "model_max_length": 512}, f)
    return transformers.AutoTokenizer.from_pretrained(str(path))


def _weights_file(source):
    import os

    names = [n for n in ("model.safetensors", "diffusion_pytorch_model.safetensors")
             if os.path.isfile(os.path.join(source, n))]
    assert len(names) == 1, f"{source} is not a single-file model folder"
    return names[0]


def folder_tensors(source):
    """The state dict (numpy) of the single-file model folder ``source`` (transformers' or diffusers' file name)."""
    import os

    from safetensors.numpy import load_file

    return load_file(os.path.join(source, _weights_file(source)))


def edited_folder(source, path, tensors=None, **config_changes):
    """A copy of the single-file model folder ``source`` at ``path`` with other ``tensors`` and config fields.

    ``tensors``: the state dict to write (default: ``source``'s); ``config_changes`` update its ``config.json``.
    Returns ``str(path)``; for the converters' unsupported-config and missing / unused-tensor tests.
    """
    import json
    import os

    from safetensors.numpy import save_file

    if tensors is None:
        tensors = folder_tensors(source)
    with open(os.path.join(source, "config.json")) as f:
        config = json.load(f)
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({**config, **config_changes}, f)
    save_file(tensors, os.path.join(path, _weights_file(source)))
    return str(path)
