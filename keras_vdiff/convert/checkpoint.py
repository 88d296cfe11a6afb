"""Reading a ``save_pretrained`` folder: its ``config.json`` and its safetensors, one tensor at a time.

diffusers and transformers write a model as ``config.json`` plus either one
``*.safetensors`` file or shards listed by a ``*.safetensors.index.json``
(``weight_map``: tensor name -> shard file). :class:`PretrainedFolder` opens
them with the ``safetensors`` package in numpy mode (torch is never imported)
and hands out one tensor at a time, so converting a model holds the Keras
model plus one tensor, not two copies of the model.

A converter takes every tensor it maps with :meth:`PretrainedFolder.take` and
ends with :meth:`PretrainedFolder.check_all_taken`, which raises on tensors the
converter did not map (a config field it does not understand, usually), and
assigns with :func:`assign`, which checks shapes. Config fields go through
:func:`check_config`: a value the converter does not support raises an
error naming the field and the value.

Example:
    >>> folder = PretrainedFolder("Latte-1/transformer")
    >>> folder.config["_class_name"]
    'LatteTransformer3DModel'
    >>> kernel = folder.take("proj_out.weight").T
"""

import json
import os

import numpy as np

# weights_to_load is re-exported: the converters' building context lives with the preset loaders.
from keras_vdiff.presets.loading import listed, mark_assigned, weights_to_load  # noqa: F401

__all__ = ["PretrainedFolder", "ConversionError", "assign", "check_config", "linear", "class_name"]

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors")


class ConversionError(ValueError):
    """A checkpoint this library cannot convert faithfully (unsupported config, missing or unused tensors)."""


def class_name(config):
    """The model class a ``config.json`` describes: diffusers' ``_class_name`` or transformers' ``architectures[0]``."""
    if config.get("_class_name"):
        return config["_class_name"]
    architectures = config.get("architectures") or []
    return architectures[0] if architectures else None


class PretrainedFolder:
    """A diffusers / transformers model folder: ``config`` and lazily read tensors.

    Args:
        path: the folder holding ``config.json`` and the safetensors file(s).

    Attributes:
        path: the folder.
        config: the parsed ``config.json``.
        names: every tensor name in the checkpoint (sorted).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        config_path = os.path.join(self.path, CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(
                f"`path`={self.path!r} has no {CONFIG_FILE}: it is not a folder written by diffusers' or "
                "transformers' `save_pretrained`."
            )
        with open(config_path) as f:
            self.config = json.load(f)
        self._shard_of = self._index()
        self.names = sorted(self._shard_of)
        self._taken = set()

    def _index(self):
        files = sorted(os.listdir(self.path))
        indexes = [f for f in files if f.endswith(".safetensors.index.json")]
        if indexes:
            with open(os.path.join(self.path, indexes[0])) as f:
                weight_map = json.load(f).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ConversionError(f"{os.path.join(self.path, indexes[0])} has no `weight_map`.")
            missing = sorted({s for s in weight_map.values() if not os.path.isfile(os.path.join(self.path, s))})
            if missing:
                raise FileNotFoundError(f"The shards {missing} listed in {indexes[0]} are not in {self.path!r}.")
            return dict(weight_map)
        singles = [f for f in WEIGHT_FILES if f in files] or [f for f in files if f.endswith(".safetensors")]
        if not singles:
            bins = [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
            hint = (f" It holds {bins}: re-save it with `save_pretrained(..., safe_serialization=True)`."
                    if bins else "")
            raise FileNotFoundError(f"`path`={self.path!r} has no *.safetensors weights.{hint}")
        if len(singles) > 1:
            raise ConversionError(
                f"`path`={self.path!r} holds several safetensors files {singles} and no *.safetensors.index.json."
            )
        from safetensors import safe_open

        with safe_open(os.path.join(self.path, singles[0]), framework="numpy") as handle:
            return {name: singles[0] for name in handle.keys()}

    def __contains__(self, name):
        return name in self._shard_of

    def numbered(self, prefix):
        """The indices ``i`` of the ``{prefix}.{i}.*`` tensors, checked to run ``0..n-1``."""
        indices = set()
        for name in self.names:
            if name.startswith(prefix + "."):
                head = name[len(prefix) + 1:].split(".", 1)[0]
                if head.isdigit():
                    indices.add(int(head))
        if indices and indices != set(range(len(indices))):
            raise ConversionError(
                f"The `{prefix}.N` tensors of {self.path!r} are not numbered 0..n-1: {sorted(indices)}."
            )
        return sorted(indices)

    def take(self, name, shape=None):
        """The tensor ``name`` as a float32 numpy array (bfloat16 / float16 files upcast), marked as used.

        Args:
            name: the tensor's name in the checkpoint.
            shape: the expected shape; a mismatch raises naming the tensor.
        """
        if name not in self._shard_of:
            raise ConversionError(f"{self.path!r} has no tensor {name!r} (class {class_name(self.config)!r}).")
        value = self._read(name)
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ConversionError(f"Tensor {name!r} of {self.path!r} has shape {value.shape}; expected {tuple(shape)}.")
        self._taken.add(name)
        return value

    def _read(self, name):
        # One short-lived handle per tensor: a handle kept open keeps the pages it read mapped, which counted
        # as 4.5 GB of resident memory while converting Latte-1 (benchmarks/RESULTS.md).
        from safetensors import safe_open

        try:
            with safe_open(os.path.join(self.path, self._shard_of[name]), framework="numpy") as handle:
                value = handle.get_tensor(name)
        except (TypeError, ValueError):
            # numpy has no bfloat16: read the raw 16 bits and widen them to float32.
            value = _read_bfloat16(os.path.join(self.path, self._shard_of[name]), name)
        if value.dtype != np.float32 and (value.dtype.kind == "f" or value.dtype.name == "bfloat16"):
            value = value.astype("float32")  # ml_dtypes' bfloat16 has kind "V"
        return value

    def skip(self, name):
        """Mark ``name`` as deliberately unused (a buffer this library recomputes), if present."""
        if name in self._shard_of:
            self._taken.add(name)

    def check_all_taken(self):
        """Raise listing the tensors no converter step mapped."""
        unused = [name for name in self.names if name not in self._taken]
        if unused:
            shown = listed(unused, 20)
            raise ConversionError(
                f"{len(unused)} tensor(s) of {self.path!r} ({class_name(self.config)}) are not used by the "
                f"conversion, so the converted model would differ from the checkpoint: {shown}."
            )


def _read_bfloat16(file_path, name):
    """A bfloat16 tensor of a safetensors file as float32 (the header gives its offsets and shape)."""
    with open(file_path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_size))
        entry = header[name]
        if entry["dtype"] != "BF16":
            raise ConversionError(f"Tensor {name!r} of {file_path!r} has dtype {entry['dtype']}, not readable.")
        start, end = entry["data_offsets"]
        f.seek(8 + header_size + start)
        raw = np.frombuffer(f.read(end - start), dtype="<u2")
    return (raw.astype("uint32") << 16).view("float32").reshape(entry["shape"])


def check_config(config, supported, where):
    """Raise naming the first config field whose value the converter does not support.

    Args:
        config: the parsed ``config.json``.
        supported: ``{field: allowed}``; ``allowed`` is a tuple of valid values
            or a predicate. A field absent from ``config`` is not checked (its
            default is whatever the library defaults to, which the converter
            states by listing it with that value).
        where: the model class, for the message.
    """
    for field, allowed in supported.items():
        if field not in config:
            continue
        value = config[field]
        ok = allowed(value) if callable(allowed) else _normalised(value) in [_normalised(a) for a in allowed]
        if not ok:
            what = "" if callable(allowed) else f"; supported: {list(allowed)}"
            raise ConversionError(f"{where} config field `{field}`={value!r} is not supported{what}.")


def _normalised(value):
    return tuple(value) if isinstance(value, list) else value


def assign(variable, value, name):
    """Set a Keras variable from a numpy array, checking the shape; ``name`` is the checkpoint tensor."""
    if tuple(variable.shape) != tuple(value.shape):
        raise ConversionError(
            f"Tensor {name!r} of shape {tuple(value.shape)} does not fit the Keras variable {variable.path!r} "
            f"of shape {tuple(variable.shape)}."
        )
    variable.assign(value.astype(variable.dtype) if variable.dtype != value.dtype else value)
    mark_assigned(variable)


def linear(folder, prefix, dense, bias=True):
    """Load a PyTorch ``nn.Linear`` ``{prefix}.weight`` (out, in) / ``.bias`` into a Keras ``Dense``."""
    assign(dense.kernel, folder.take(prefix + ".weight").T, prefix + ".weight")
    if bias:
        assign(dense.bias, folder.take(prefix + ".bias"), prefix + ".bias")
    elif prefix + ".bias" in folder:
        raise ConversionError(f"{folder.path!r} has {prefix}.bias but the Keras layer {dense.path!r} has no bias.")


def patch_embedding(folder, prefix, layer):
    """Load a ``Conv2d`` patch embedding ``{prefix}.weight`` (D, C, p, p) / ``.bias`` into a ``PatchEmbedding``.

    The convolution with stride ``p`` is a Dense over each ``(p_row, p_col, C)``
    patch: its kernel is transposed to ``(p, p, C, D)`` and flattened in that order.
    """
    conv = folder.take(prefix + ".weight")
    kernel = np.transpose(conv, (2, 3, 1, 0)).reshape(-1, conv.shape[0])
    assign(layer.projection.kernel, kernel, prefix + ".weight")
    assign(layer.projection.bias, folder.take(prefix + ".bias"), prefix + ".bias")


def check_fixed_table(folder, name, expected, atol=1e-4):
    """A saved fixed buffer (a sin-cos table) must equal what the library recomputes; marks it used."""
    if name not in folder:
        return
    saved = folder.take(name).reshape(expected.shape)
    error = float(np.abs(saved - expected).max())
    if error > atol:
        raise ConversionError(
            f"Tensor {name!r} of {folder.path!r} is not the sin-cos table the config implies (max difference "
            f"{error:.3g}); the converted model would embed positions differently."
        )


def learns_sigma(config, where, in_channels):
    """Whether a denoiser's ``out_channels`` adds the learned-variance channels (``2 * in_channels``)."""
    out_channels = int(config.get("out_channels") or in_channels)
    if out_channels not in (in_channels, 2 * in_channels):
        raise ConversionError(
            f"{where} config field `out_channels`={out_channels} is not supported: it must be `in_channels` "
            f"({in_channels}) or twice that (learned variance)."
        )
    return out_channels == 2 * in_channels
