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
