"""Gradient checkpointing (remat) of backbone blocks that the compiler cannot undo.

``remat=True`` on a backbone (``remat_blocks``) gives each transformer / U-Net block
the rematerialization mode of ``keras.RematScope(mode="full")``: the forward pass
keeps only the block's inputs, and the backward pass recomputes the block from them.
Values and gradients do not change; memory drops and the step costs one more
forward pass of each block.

Keras' own remat is ``jax.checkpoint`` / ``tf.recompute_grad`` / ``torch.utils.checkpoint``.
On JAX it saved nothing on a CPU: the recomputation is the same ops on the same inputs
as the forward pass, XLA:CPU drops ``jax.checkpoint``'s optimization barriers, and
common-subexpression elimination merges the two again, so every activation is kept
(``benchmarks/RESULTS.md``, "Training memory"). On JAX the blocks therefore go through
:func:`recompute_in_backward`: the backward pass recomputes the block from inputs *tied*
to the cotangent arriving there. A tied input has the input's bits (OR-ed with a zero
that XLA computes from the cotangent and cannot fold), so XLA can neither compute it
before that cotangent exists nor identify it with the forward's input, and the
recomputation stays where remat puts it. TensorFlow keeps ``tf.recompute_grad``, which
saves the same memory as this in its graph and under XLA (measured, RESULTS), and
PyTorch ``torch.utils.checkpoint``, which nothing merges.
"""

import inspect
import re
import types

import keras
from keras.src.backend.common import remat as keras_remat
from keras.src.backend.common.remat import get_current_remat_mode

# The blocks remat checkpoints: `block_3`, `spatial_block_0`, `temporal_block_1` (transformers, latent-token
# models) and the U-Nets' `down_0_res_1`, `mid_attn`, `up_2_tattn_0`, ...
REMAT_BLOCK_NAMES = re.compile(r"((spatial|temporal)_)?block_\d+|(down|up)_\d+_(res|attn|tattn)_\d+|mid_(res_\d+|attn|tattn)")


def remat_blocks(backbone):
    """Checkpoint every block of ``backbone`` (``REMAT_BLOCK_NAMES``); returns the names of the blocks.

    Rematerialization changes memory and time, never values: the gradients equal those without it.
    """
    with keras.RematScope(mode="full"):
        mode = get_current_remat_mode()
    names = []
    for layer in backbone.layers:
        if REMAT_BLOCK_NAMES.fullmatch(layer.name):
            layer._remat_mode = mode  # what RematScope gives a layer built inside it
            layer.rematerialized_call = types.MethodType(_rematerialized_call, layer)
            names.append(layer.name)
    if not names:
        raise ValueError(f"{type(backbone).__name__} has no layer named like a block ({REMAT_BLOCK_NAMES.pattern}).")
    return names


def _rematerialized_call(layer, layer_call, *args, **kwargs):
    """``Layer.rematerialized_call`` of a block: ``layer_call`` through :func:`recompute_in_backward`.

    Only the tensor arguments pass through the checkpoint, positionally; the others (``context=None``,
    ``active=True``) are closed over. ``tf.recompute_grad`` takes neither keyword arguments nor ``None`` /
    Python values in a traced ``fit`` step, and the blocks are called with both.
    """
    bound = inspect.signature(layer_call).bind(*args, **kwargs)
    values = dict(bound.arguments)
    tensor_names = [name for name, value in values.items() if keras.ops.is_tensor(value)]

    def tensors_only(*tensors):
        return layer_call(**dict(values, **dict(zip(tensor_names, tensors))))

    checkpointed = recompute_in_backward(tensors_only)
    return lambda *_args, **_kwargs: checkpointed(*(values[name] for name in tensor_names))


def recompute_in_backward(function):
    """``function`` of positional tensors, rematerialised: its backward pass recomputes it (see the module doc).

    JAX: a ``custom_vjp`` whose forward keeps the arguments and whose backward recomputes ``function`` on
    tied arguments. The weights a Keras layer reads inside are tracers it closes over; ``jax.closure_convert``
    makes them arguments, so they get their gradients. TensorFlow and PyTorch: Keras' remat.
    """
    if keras.backend.backend() == "jax":
        return _jax_recompute(function)
    return keras_remat.remat(function)


# --- JAX -------------------------------------------------------------------------------------------------------

def _jax_recompute(function):
    import jax

    def rematerialized(*arrays):
        converted, hoisted = jax.closure_convert(function, *arrays)
        return _jax_recomputed()(converted, *arrays, *hoisted)

    return rematerialized


_JAX_RECOMPUTED = None  # the custom_vjp, built on first use (imports jax only then)


def _jax_recomputed():
    global _JAX_RECOMPUTED
    if _JAX_RECOMPUTED is None:
        import functools

        import jax

        def forward(function, *args):
            return function(*args), args

        def backward(function, args, cotangent):
            token = _jax_zero_token(jax.tree_util.tree_leaves(cotangent)[0])
            _, pullback = jax.vjp(function, *(_jax_tie(arg, token) for arg in args))
            return pullback(cotangent)

        recomputed = functools.partial(jax.custom_vjp, nondiff_argnums=(0,))(lambda function, *args: function(*args))
        recomputed.defvjp(forward, backward)
        _JAX_RECOMPUTED = recomputed
    return _JAX_RECOMPUTED


def _jax_zero_token(cotangent):
    """A uint8 zero computed from ``cotangent``: its first element's set bits counted (at most 64), shifted by 7."""
    import jax.numpy as jnp
    from jax import lax

    bits = lax.bitcast_convert_type(cotangent.reshape(-1)[:1], _unsigned(cotangent.dtype.itemsize))
    return lax.shift_right_logical(lax.population_count(bits), jnp.asarray(7, bits.dtype))[0].astype("uint8")


def _jax_tie(array, token):
    """``array`` bit for bit, computed from ``token`` as well: its bits OR-ed with the (zero) token."""
    import jax.numpy as jnp
    from jax import lax

    if not jnp.issubdtype(array.dtype, jnp.floating) or array.dtype.itemsize not in (2, 4, 8):
        return array  # integer (and complex) inputs pass untied: the float ones already order the recomputation
    unsigned = _unsigned(array.dtype.itemsize)
    return lax.bitcast_convert_type(lax.bitcast_convert_type(array, unsigned) | token.astype(unsigned), array.dtype)


def _unsigned(itemsize):
    return f"uint{8 * itemsize}"
