"""``Dense`` and the norms of keras_vdiff's blocks: Keras' layers, leaner on PyTorch, flat on JAX.

On JAX and TensorFlow a layer's Python runs once, while the step is traced, so
what Keras does around each call costs nothing per step. On PyTorch the model
runs eagerly, and ``Layer.__call__`` (argument inspection, input conversion,
the call context, mask bookkeeping, name scopes) costs ~150 µs a call on a
2-core CPU: about a sixth of an eager forward of a small Latte, which calls
~100 Dense and LayerNorm layers. These subclasses keep every weight, name,
initialiser and option of Keras' own. On PyTorch they differ in two ways:

- **lean call** (:class:`LeanTorchCall`, also mixed into keras_vdiff's
  ``Attention``, ``MLP`` and modulation layers): when nothing in ``__call__``
  would change the result — the layer is built, its float tensor arguments are
  already in its compute dtype, no autocast scope, remat mode, quantization,
  activity regulariser or Keras mask is in play — ``layer(...)`` runs
  ``layer.call(...)`` directly. Anything else (a symbolic build, numpy input,
  mixed precision, a quantized or rematerialised layer) takes Keras' path.
- **fused bias** (``Dense``): ``torch.addmm`` multiplies and adds the bias in one
  kernel, as ``torch.nn.Linear`` does, instead of a matmul and a separate add.

The outputs are the same to float rounding (the bias is added inside the GEMM);
``benchmarks/sampling_speed.py`` measures the effect.

On JAX, ``Dense`` multiplies a 2-D view ``(tokens, features)`` of an input of
rank 3 or more and reshapes the product back (**flat matmul**). The forward is
the same dot, but the kernel's gradient becomes a dot with one contracting
axis, which XLA:CPU runs on the row-major operands as they are. The matmul of
the full-rank input contracts the cotangent with the input over every leading
axis, and XLA:CPU lays such a dot out by copying a transposed input first. On
the ``(B, F, N, D)`` tokens of a video block, dropping those copies made a
``medium`` Latte's training step 1.24x faster (``benchmarks/RESULTS.md``, "JAX:
the flat matmul").

Example:
    >>> dense = Dense(8, name="fc1")
    >>> dense(keras.ops.ones((2, 5, 4))).shape
    (2, 5, 8)
"""

import keras
from keras.src import backend as keras_backend


def _lean_call_applies(layer, args, kwargs):
    """Whether ``layer(*args, **kwargs)`` may skip ``Layer.__call__`` (see the module docstring)."""
    if keras.backend.backend() != "torch" or not args or not layer.built:
        return False
    if (layer._remat_mode is not None or layer.quantization_mode is not None
            or layer.activity_regularizer is not None or keras_backend.get_autocast_scope() is not None
            or layer.compute_dtype != layer.variable_dtype):
        return False
    import torch

    if not isinstance(args[0], torch.Tensor):  # a symbolic build, or numpy input to convert
        return False
    for value in (*args, *kwargs.values()):
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, torch.Tensor) or getattr(value, "_keras_mask", None) is not None:
            return False
        if value.is_floating_point() and keras_backend.standardize_dtype(value.dtype) != layer.compute_dtype:
            return False
    return True


class LeanTorchCall:
    """Mixin of a layer: on PyTorch, ``layer(...)`` calls ``layer.call(...)`` where ``Layer.__call__`` would not
    change the result (module docstring).

    For layers whose ``call`` has no behaviour of its own that depends on ``training`` (it may pass ``training``
    on: a sublayer called with ``training=None`` still reads the training flag of the enclosing call).
    """

    def __call__(self, *args, **kwargs):
        if _lean_call_applies(self, args, kwargs):
            self._called = True
            if "training" in kwargs and not self._call_has_training_arg:  # Keras drops it too
                kwargs = {name: value for name, value in kwargs.items() if name != "training"}
            return self.call(*args, **kwargs)
        return super().__call__(*args, **kwargs)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class Dense(LeanTorchCall, keras.layers.Dense):
    """``keras.layers.Dense`` with a lean call and a fused bias on PyTorch, and a flat matmul on JAX (module
    docstring)."""

    def call(self, inputs, training=None):
        backend = keras.backend.backend()
        if backend == "jax" and self.quantization_mode is None and len(inputs.shape) > 2:
            return self._flat_matmul(inputs)
        if backend != "torch" or self.quantization_mode is not None:
            return super().call(inputs, training=training)
        import torch

        # `self.kernel` merges LoRA's factors (and unpacks quantized kernels: not this path).
        kernel = keras_backend.convert_to_tensor(self.kernel if self.lora_enabled else self._kernel)
        if inputs.dtype != kernel.dtype or inputs.ndim < 2:
            return super().call(inputs, training=training)
        flat = inputs.reshape(-1, inputs.shape[-1])
        if self.bias is None:
            outputs = torch.mm(flat, kernel)
        else:
            outputs = torch.addmm(keras_backend.convert_to_tensor(self.bias), flat, kernel)
        outputs = outputs.reshape(*inputs.shape[:-1], self.units)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _flat_matmul(self, inputs):
        """``inputs @ kernel + bias`` through a 2-D view of ``inputs`` (JAX; the module docstring)."""
        outputs = keras.ops.matmul(keras.ops.reshape(inputs, (-1, inputs.shape[-1])), self.kernel)
        if self.bias is not None:
            outputs = keras.ops.add(outputs, self.bias)
        outputs = keras.ops.reshape(outputs, (*inputs.shape[:-1], self.units))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


@keras.saving.register_keras_serializable(package="keras_vdiff")
class LayerNormalization(LeanTorchCall, keras.layers.LayerNormalization):
    """``keras.layers.LayerNormalization`` with a lean call on PyTorch (module docstring)."""


@keras.saving.register_keras_serializable(package="keras_vdiff")
class RMSNormalization(LeanTorchCall, keras.layers.RMSNormalization):
    """``keras.layers.RMSNormalization`` with a lean call on PyTorch (module docstring)."""
