"""Training and sampling across devices and hosts with the engines Keras drives.

JAX (``keras.distribution``):

- :func:`data_parallel` builds a ``keras.distribution.DataParallel`` (weights
  replicated, every batch split over the ``batch`` axis of the mesh);
- :func:`model_parallel` builds a ``keras.distribution.ModelParallel`` whose
  :func:`layout_map` shards the attention and MLP kernels of a backbone over a
  ``model`` axis, Megatron style: the query / key / value and first MLP kernels
  column-parallel (their output features split), the attention output and second
  MLP kernels row-parallel (their input features split), so each pair needs one
  all-reduce. Embeddings, norms and biases stay replicated; ``fsdp=True`` also
  splits every other large kernel over the ``batch`` axis (ZeRO-3 / FSDP style,
  maxdiffusion's ``fsdp`` axis);
- :func:`shard_dataset` gives each process its share of the data.

Build the model and run ``fit`` / ``generate`` under the distribution
(``with distribution.scope():`` or ``keras.distribution.set_distribution``):
``VideoDiffusion`` runs unchanged. A layout only applies to variables created
under it, so build the task inside the scope.

TensorFlow: :func:`mirrored_strategy` (``tf.distribute.MirroredStrategy``, data
parallel over local devices; ``MultiWorkerMirroredStrategy`` for several hosts).
PyTorch: single device only; asking for more raises :class:`DistributionError`.

Example:
    >>> template = kv.models.Latte.from_preset("latte_tiny")
    >>> distribution = kv.distribution.model_parallel({"batch": 2, "model": 2}, backbone=template)
    >>> with distribution.scope():
    ...     model = kv.VideoDiffusion(kv.models.Latte.from_preset("latte_tiny"))
    ...     model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    ...     model.fit(kv.distribution.shard_dataset(batches), epochs=1)
"""

import contextlib
import math
import re

import keras
import numpy as np

BATCH_AXIS = "batch"
MODEL_AXIS = "model"

# Dense layers whose output features split over `model` (column-parallel) or whose input features do
# (row-parallel), named as every family names them (layers/attention.py, layers/transformer.py, the U-Nets'
# temporal attention `qkv`, Wan's image cross-attention).
COLUMN_PARALLEL = ("query", "key", "value", "qkv", "image_key", "image_value", "fc1")
ROW_PARALLEL = ("output_projection", "fc2")
# Replicated whatever `fsdp` says: lookup tables and learned position / latent tokens are read by index.
REPLICATED = re.compile(r"(^|.*/)(embeddings|latents|relative_position_bias|null_embedding)$")
# With fsdp, kernels with fewer elements than this stay replicated (gathering them costs more than it saves).
FSDP_MIN_SIZE = 2 ** 14


class DistributionError(ValueError):
    """A distribution the backend cannot run (PyTorch beyond one device, a mesh the devices do not fill)."""


def _backend():
    return keras.backend.backend()


def _check_torch_single_device(devices):
    if _backend() == "torch" and devices is not None and len(devices) > 1:
        raise DistributionError(
            f"The PyTorch backend of keras_vdiff trains and samples on one device; {len(devices)} devices were "
            "asked for. Use KERAS_BACKEND=jax (keras.distribution) or tensorflow (kv.distribution."
            "mirrored_strategy) for several devices."
        )


def _require(backend, what):
    if _backend() == "torch":
        raise DistributionError(
            f"kv.distribution.{what} needs several devices, which the PyTorch backend of keras_vdiff does not "
            "support (one device only): use KERAS_BACKEND=jax, or tensorflow with mirrored_strategy."
        )
    if _backend() != backend:
        hint = "use kv.distribution.mirrored_strategy()" if _backend() == "tensorflow" else "use KERAS_BACKEND=jax"
        raise DistributionError(
            f"kv.distribution.{what} runs on the {backend} backend (keras.distribution), not on "
            f"{_backend()}: {hint}."
        )


def _axis_sizes(mesh):
    return dict(zip(mesh.axis_names, mesh.shape))


def kernel_axes(path, shape, axis_sizes, fsdp=False):
    """The mesh axis (or ``None``) of each dimension of the variable at ``path`` with ``shape``.

    A dimension is only split when the axis divides it; otherwise it stays whole.
    """
    rank = len(shape)
    axes = [None] * rank
    parts = path.split("/")
    layer, leaf = (parts[-2] if len(parts) > 1 else ""), parts[-1]
    model = MODEL_AXIS if axis_sizes.get(MODEL_AXIS, 1) > 1 else None
    batch = BATCH_AXIS if fsdp and axis_sizes.get(BATCH_AXIS, 1) > 1 else None
    if rank < 2 or REPLICATED.match(path):
        return tuple(axes)
    if leaf == "kernel" and rank == 2 and layer in COLUMN_PARALLEL:
        axes = [batch, model]
    elif leaf == "kernel" and rank == 2 and layer in ROW_PARALLEL:
        axes = [model, batch]
    elif batch is not None and math.prod(shape) >= FSDP_MIN_SIZE:
        # FSDP: the largest dimension the batch axis divides (a conv kernel's output channels, a projection's).
        order = sorted(range(rank), key=lambda d: -shape[d])
        for dim in order:
            if shape[dim] % axis_sizes[BATCH_AXIS] == 0:
                axes[dim] = batch
                break
    return tuple(axis if axis is None or shape[d] % axis_sizes[axis] == 0 else None for d, axis in enumerate(axes))


def layout_map(backbone, mesh, fsdp=False):
    """A ``keras.distribution.LayoutMap`` sharding ``backbone``'s kernels over ``mesh``.

    Args:
        backbone: a built backbone of any family (or any Keras model); its variable paths
            (``[v.path for v in backbone.weights]``) and shapes decide the layouts, so pass one
            built with the same config as the model that will train (a tiny template for a
            config is as good as the model itself).
        mesh: a ``keras.distribution.DeviceMesh`` with a ``model`` axis (tensor parallelism) and
            optionally a ``batch`` axis (data parallelism).
        fsdp: also split every other kernel of at least ``FSDP_MIN_SIZE`` elements over the
            ``batch`` axis (the dimension it divides that is largest).

    Returns:
        A ``LayoutMap`` with one exact-path entry per sharded variable (everything else replicated):
        q / k / v / ``qkv`` / ``fc1`` kernels ``(batch-or-None, "model")``, ``output_projection`` /
        ``fc2`` kernels ``("model", batch-or-None)``. A dimension the axis does not divide stays whole.

    Example:
        >>> mesh = keras.distribution.DeviceMesh((2, 2), ("batch", "model"))
        >>> layouts = layout_map(kv.models.DiT.from_preset("dit_tiny"), mesh)
        >>> layouts["block_0/attention/query/kernel"].axes
        (None, 'model')
    """
    if not isinstance(mesh, keras.distribution.DeviceMesh):
        raise TypeError(f"`mesh` must be a keras.distribution.DeviceMesh, got {type(mesh).__name__}.")
    sizes = _axis_sizes(mesh)
    unknown = sorted(set(sizes) - {BATCH_AXIS, MODEL_AXIS})
    if unknown:
        raise ValueError(f"`mesh` has axes {list(mesh.axis_names)}; valid axis names are 'batch' and 'model'.")
    layouts = keras.distribution.LayoutMap(mesh)
    for variable in backbone.weights:
        axes = kernel_axes(variable.path, tuple(variable.shape), sizes, fsdp=fsdp)
        if any(axis is not None for axis in axes):
            layouts[variable.path] = axes
    return layouts


def _devices(devices):
    if devices is None:
        return keras.distribution.list_devices()
    if isinstance(devices, int) and not isinstance(devices, bool):
        available = keras.distribution.list_devices()
        if not 1 <= devices <= len(available):
            raise DistributionError(f"`devices`={devices} but {len(available)} device(s) are available.")
        return available[:devices]
    return list(devices)


def data_parallel(devices=None):
    """``keras.distribution.DataParallel`` over ``devices`` (JAX): replicated weights, split batches.

    Args:
        devices: ``None`` (every device), a count (the first ``n``) or a list of device names
            (``keras.distribution.list_devices()``).

    Returns:
        The distribution; use it as ``with distribution.scope():`` around building, ``fit`` and ``generate``.
        The global batch (what the dataset yields) must be divisible by the device count.

    Example:
        >>> with kv.distribution.data_parallel().scope():
        ...     model = kv.VideoDiffusion(kv.models.DiT.from_preset("dit_tiny"))
        ...     model.compile(optimizer="adamw"); model.fit(batches)
    """
    _require("jax", "data_parallel")
    return keras.distribution.DataParallel(devices=_devices(devices))


def mesh_sizes(mesh_shape):
    """``{"batch": B, "model": M}`` of a mesh shape given as a dict, ``(B, M)`` or ``"batch=B,model=M"``."""
    if isinstance(mesh_shape, str):  # "batch=2,model=2", the form of the command line
        try:
            mesh_shape = {k.strip(): int(v) for k, v in (item.split("=") for item in mesh_shape.split(","))}
        except ValueError:
            raise ValueError(f"`mesh_shape` {mesh_shape!r} is not of the form 'batch=2,model=2'.") from None
    if isinstance(mesh_shape, dict):
        sizes = dict(mesh_shape)
    else:
        shape = tuple(mesh_shape)
        if len(shape) != 2:
            raise ValueError(f"`mesh_shape` {mesh_shape!r}: give (batch, model) sizes or a dict of axis sizes.")
        sizes = {BATCH_AXIS: shape[0], MODEL_AXIS: shape[1]}
    unknown = sorted(set(sizes) - {BATCH_AXIS, MODEL_AXIS})
    if unknown or any(not isinstance(v, int) or v < 1 for v in sizes.values()):
        raise ValueError(f"`mesh_shape` {mesh_shape!r}: axes must be 'batch' / 'model' with positive integer sizes.")
    return {BATCH_AXIS: sizes.get(BATCH_AXIS, 1), MODEL_AXIS: sizes.get(MODEL_AXIS, 1)}


def model_parallel(mesh_shape, backbone, fsdp=False, devices=None):
    """``keras.distribution.ModelParallel`` with :func:`layout_map` of ``backbone`` (JAX).

    Args:
        mesh_shape: axis sizes, ``{"batch": 2, "model": 2}``, ``(2, 2)`` (batch, model) or ``"batch=2,model=2"``;
            their product must equal the number of devices used.
        backbone: a backbone built with the training model's config (its paths and shapes give the layouts).
        fsdp: also shard the other large kernels over ``batch`` (:func:`layout_map`).
        devices: ``None`` (every device), a count or a list of device names.

    Returns:
        The distribution (batches split over ``batch``, kernels per the layout map). Build the task under
        ``distribution.scope()``: layouts apply to variables as they are created.

    Example:
        >>> distribution = kv.distribution.model_parallel("batch=2,model=2", backbone=template)
        >>> with distribution.scope():
        ...     model = kv.VideoDiffusion(kv.models.DiT.from_preset("dit_tiny"))
    """
    sizes = mesh_sizes(mesh_shape)
    count = sizes[BATCH_AXIS] * sizes[MODEL_AXIS]
    _require("jax", "model_parallel")
    devices = _devices(devices) if devices is not None else _devices(None)
    if len(devices) != count:
        raise DistributionError(
            f"`mesh_shape` {sizes} needs {count} devices, {len(devices)} were given or are available."
        )
    mesh = keras.distribution.DeviceMesh((sizes[BATCH_AXIS], sizes[MODEL_AXIS]), (BATCH_AXIS, MODEL_AXIS), devices)
    return keras.distribution.ModelParallel(layout_map=layout_map(backbone, mesh, fsdp=fsdp),
                                            batch_dim_name=BATCH_AXIS)


def mirrored_strategy(devices=None):
    """``tf.distribute.MirroredStrategy`` over local devices (TensorFlow): build the task, compile and fit
    under its ``scope()``; Keras splits every global batch over the replicas and sums the gradients.

    Args:
        devices: ``None`` (every GPU, else the CPU), a count (the first ``n`` logical devices) or names.

    Returns:
        The strategy. For several hosts use ``tf.distribute.MultiWorkerMirroredStrategy`` (``TF_CONFIG``).

    Example:
        >>> strategy = kv.distribution.mirrored_strategy()
        >>> with strategy.scope():
        ...     model = kv.VideoDiffusion(kv.models.DiT.from_preset("dit_tiny")); model.compile("adamw")
        >>> model.fit(dataset)
    """
    _require("tensorflow", "mirrored_strategy")
    import tensorflow as tf

    if isinstance(devices, int) and not isinstance(devices, bool):
        available = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        if not 1 <= devices <= len(available):
            raise DistributionError(f"`devices`={devices} but {len(available)} logical device(s) are available.")
        devices = [d.name for d in available[:devices]]
    return tf.distribute.MirroredStrategy(devices=devices)


def process_shard():
    """``(process_index, process_count)`` of this host (JAX multi-host; ``(0, 1)`` elsewhere)."""
    if _backend() == "jax":
        import jax

        return jax.process_index(), jax.process_count()
    return 0, 1


def shard_dataset(dataset, distribution=None):
    """This process' share of ``dataset``.

    Args:
        dataset: a ``tf.data.Dataset`` (split by ``distribution.distribute_dataset``, which also
            batches per process), a ``kv.data.VideoBatches`` or a dict of per-example arrays (examples
            ``process_index::process_count``: every process then yields ``1/process_count`` of the global
            batch, as Keras' JAX trainer expects of each host).
        distribution: the ``keras.distribution`` in use (default: the active one); without one, or on
            one process, the dataset is returned unchanged.

    Returns:
        The same kind of object, holding this process' examples.
    """
    distribution = distribution or (keras.distribution.distribution() if _backend() == "jax" else None)
    index, count = process_shard()
    if count == 1:
        return dataset
    if hasattr(dataset, "element_spec") and distribution is not None:  # tf.data
        return distribution.distribute_dataset(dataset)
    if isinstance(dataset, dict):
        return {key: value[index::count] for key, value in dataset.items()}
    data = getattr(dataset, "data", None)
    if isinstance(data, dict):
        from keras_vdiff.data import VideoBatches

        if dataset.batch_size % count:
            raise DistributionError(f"The global batch size {dataset.batch_size} is not divisible by the "
                                    f"{count} processes.")
        # Captions are token ids already: the identity "tokenizer" keeps them.
        return VideoBatches({k: v[index::count] for k, v in data.items()}, batch_size=dataset.batch_size // count,
                            tokenizer=np.asarray, keys=dataset.keys, shuffle=dataset.shuffle,
                            drop_remainder=dataset.drop_remainder, seed=int(dataset.rng.integers(2 ** 31)))
    raise TypeError(f"`dataset` of type {type(dataset).__name__}: give a tf.data.Dataset, VideoBatches or a dict.")


def check_single_device(devices):
    """Raise :class:`DistributionError` on PyTorch when more than one device is asked for (no silent fallback)."""
    _check_torch_single_device(list(devices) if not isinstance(devices, int) else [None] * devices)


@contextlib.contextmanager
def no_distribution():
    """A block that runs without the active ``keras.distribution`` (single-device references)."""
    if _backend() != "jax":
        yield
        return
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


__all__ = ["BATCH_AXIS", "MODEL_AXIS", "DistributionError", "data_parallel", "layout_map", "mesh_sizes",
           "mirrored_strategy", "model_parallel", "process_shard", "shard_dataset", "kernel_axes", "check_single_device"]
