"""Parameter-efficient fine-tuning (LoRA) of backbones.

LoRA follows keras-hub's mechanism (``keras_hub.models.Backbone.enable_lora``):
Keras' ``Dense.enable_lora(rank)`` freezes a layer's kernel and adds the trainable
low-rank pair ``lora_kernel_a`` / ``lora_kernel_b`` (``kernel + a @ b * alpha / rank``,
``b`` starting at zero, so the model's outputs do not change when LoRA is
enabled). Every other weight of the backbone is frozen, the biases of the LoRA
layers included, so ``fit`` trains the LoRA pairs only. The LoRA weights are
saved alone (``save_lora_weights``: keras-hub's ``.lora.h5`` layout, written
atomically, never over a file keras_vdiff did not write) and loaded onto the
same backbone config (``load_lora_weights``).

Gradient checkpointing (``remat=True``) lives in ``models/remat.py``.
"""

import os

import h5py
import keras

from keras_vdiff.atomic_files import staged_file

# The Dense layers LoRA adapts: attention projections and MLP layers of every family (layers/attention.py,
# layers/transformer.py, the U-Nets' temporal attention `qkv`, Wan's image cross-attention).
LORA_LAYER_NAMES = ("query", "key", "value", "qkv", "output_projection", "image_key", "image_value", "fc1", "fc2")
# An attribute in every LoRA file keras_vdiff writes: a file without it is not overwritten.
LORA_FILE_MARK = "keras_vdiff_lora"


def freeze_lora_biases(backbone):
    """After keras-hub's ``enable_lora``: freeze the biases of the LoRA layers, so only the pairs train."""
    for layer in backbone._flatten_layers(include_self=False):
        if getattr(layer, "lora_enabled", False) and getattr(layer, "bias", None) is not None:
            layer.bias.trainable = False


def lora_variables(backbone):
    """The LoRA pairs of ``backbone`` (``lora_kernel_a`` / ``lora_kernel_b`` of every LoRA layer)."""
    return [v for v in backbone.weights if v.path.rsplit("/", 1)[-1] in ("lora_kernel_a", "lora_kernel_b")]


def check_lora_target(filepath):
    """Raise unless ``filepath`` ends in ``.lora.h5`` and is absent or a LoRA file keras_vdiff wrote."""
    filepath = os.fspath(filepath)
    if not filepath.endswith(".lora.h5"):
        raise ValueError(f"`filepath` must end in `.lora.h5`, got {filepath!r}.")
    if os.path.lexists(filepath):
        try:
            with h5py.File(filepath, "r") as handle:
                ours = bool(handle.attrs.get(LORA_FILE_MARK, False))
        except OSError:
            ours = False
        if not ours:
            raise FileExistsError(
                f"{filepath!r} exists and was not written by keras_vdiff's save_lora_weights: not overwriting it "
                "(remove it yourself or choose another name)."
            )
    return filepath


def save_lora_weights(backbone, filepath, write):
    """Write ``backbone``'s LoRA weights with ``write(staging_path)`` (keras-hub's writer) atomically to
    ``filepath``, marked as keras_vdiff's; refuses to replace a file keras_vdiff did not write."""
    filepath = check_lora_target(filepath)
    with staged_file(filepath) as staging:
        os.remove(staging)  # keras' H5 store creates the file itself
        staging_name = staging[: -len(".h5")] + ".lora.h5"
        try:
            write(staging_name)
            with h5py.File(staging_name, "a") as handle:
                handle.attrs[LORA_FILE_MARK] = True
            os.replace(staging_name, staging)
        finally:
            if os.path.exists(staging_name):
                os.remove(staging_name)
