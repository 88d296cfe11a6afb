"""A gradient boundary between transformer blocks: the fix for XLA:CPU's superlinear backward under JAX.

The backward of a residual stack carries one cotangent ``g`` down the residual
stream. Between two blocks it is built only from elementwise ops (the adds of
the residual branches, the LayerNorm and adaLN backward), and every consumer of
``g`` inside a block (the gate's multiply, the gate's reduction, the transposed
copies that feed the weight-gradient dots) can fuse elementwise producers. So
XLA:CPU's instruction fusion duplicates the whole chain above a block into each
of those consumers instead of materialising ``g`` once: each block's fusions
recompute the cotangents of every block above it, and the compiled gradient's
size and memory traffic grow quadratically with depth (an 8-block DiT: 38k HLO
lines and 4.0 GB accessed against 14.5k and 2.45 GB with the boundary; see
``benchmarks/RESULTS.md``, "JAX gradient and depth"). ``optimization_barrier``
does not help, XLA:CPU removes it before fusion, and neither does ``jax.checkpoint``.

:func:`gradient_boundary` is the identity in the forward pass. On JAX its
backward passes the cotangent through a reduction: its bit pattern OR-ed with
zeros over a stacked axis, exactly ``g`` but not duplicated, so XLA materialises
the cotangent once per block and the backward grows linearly with depth. Other
backends get the input back untouched: TensorFlow's and PyTorch's gradients do
not have the problem.

``DiTBlock`` (every adaLN block family subclasses it: DiT, Latte's video
blocks, VideoDiT, CogVideoX, Wan) applies it to the residual stream it is
given, token sequences ``(B, N, D)`` and video tokens ``(B, F, N, D)`` alike;
``MMDiTBlock`` to both of its streams (VideoDiT's joint mode). The video
streams were first left alone, because the demo's Latte (16 tokens a frame, no
cross-attention) compiles to a linear gradient without it and runs 11-12%
slower with it; but a Latte with 64 tokens a frame and text cross-attention
(the diffusers-sized ``tiny`` of issue 23, adaLN-single or adaLN-Zero alike)
is quadratic without it (2 / 4 / 8 layers: 9.0k / 19.8k / 53.7k HLO lines,
0.80 / 1.84 / 4.77 GB; with it 7.0k / 11.5k / 20.6k, 0.71 / 1.37 / 2.69 GB;
its 4-layer gradient 4.3-4.6 s -> 1.6-2.2 s), and the released models are
deeper still.

When it is on (decided when a function is traced, so set it before the first
``fit`` / ``jit``):

- ``"auto"`` (default): on for the JAX backend when JAX's default device is
  the CPU, where it was measured (the gradient of an 8-block DiT 3.1x faster);
  off on GPU / TPU, whose fusion passes differ and where it was not measured.
- ``"on"``: on for the JAX backend on every device; ``"off"``: never.

Set it with :func:`set_gradient_boundaries` or the environment variable
``KERAS_VDIFF_GRADIENT_BOUNDARY``; the function wins over the variable.
"""

import contextlib
import os

import keras

GRADIENT_BOUNDARY_MODES = ("auto", "on", "off")
ENVIRONMENT_VARIABLE = "KERAS_VDIFF_GRADIENT_BOUNDARY"

_mode = None  # None: read ENVIRONMENT_VARIABLE, default "auto"
_jax_boundary = None  # the custom-VJP identity, built on first use (imports jax only then)


def _checked_mode(mode, source):
    if mode not in GRADIENT_BOUNDARY_MODES:
        raise ValueError(f"{source} must be one of {GRADIENT_BOUNDARY_MODES}, got {mode!r}.")
    return mode


def set_gradient_boundaries(mode):
    """Set when :func:`gradient_boundary` acts: ``"auto"``, ``"on"``, ``"off"``, or None for the environment.

    Returns the previous setting (None when it came from the environment).
    Takes effect for functions traced afterwards, not for already compiled ones.
    """
    global _mode
    previous = _mode
    _mode = None if mode is None else _checked_mode(mode, "`mode`")
    return previous


@contextlib.contextmanager
def gradient_boundaries(mode):
    """Context manager form of :func:`set_gradient_boundaries` (benchmarks and tests)."""
    previous = set_gradient_boundaries(mode)
    try:
        yield
    finally:
        set_gradient_boundaries(previous)


def gradient_boundaries_enabled():
    """Whether :func:`gradient_boundary` changes the backward of functions traced now."""
    mode = _mode or _checked_mode(os.environ.get(ENVIRONMENT_VARIABLE, "auto"), f"${ENVIRONMENT_VARIABLE}")
    if mode == "off" or keras.backend.backend() != "jax":
        return False
    if mode == "on":
        return True
    import jax

    return jax.default_backend() == "cpu"


def _build_jax_boundary():
    import jax
    import jax.numpy as jnp
    from jax import lax

    @jax.custom_vjp
    def boundary(x):
        return x

    def forward(x):
        return x, None

    def backward(_, cotangent):
        # Exactly the cotangent, bit for bit, through a reduction XLA does not duplicate into its consumers:
        # the bit pattern OR-ed with zeros over a stacked axis of two. A float sum, sum(stack([g, 0])), blocks
        # the duplication as well, but XLA:CPU hands it to YNNPACK, whose reduction over the outer axis is slow:
        # 5.0 ms against this one's 0.45 ms between two elementwise ops on a 4 x 512 x 256 cotangent, 0.31 ms
        # with no boundary (RESULTS, "JAX gradient and depth").
        bits = lax.bitcast_convert_type(cotangent, jnp.dtype(f"uint{8 * cotangent.dtype.itemsize}"))
        stacked = jnp.stack([bits, jnp.zeros_like(bits)])
        merged = lax.reduce(stacked, jnp.zeros((), bits.dtype), lax.bitwise_or, (0,))
        return (lax.bitcast_convert_type(merged, cotangent.dtype),)

    boundary.defvjp(forward, backward)
    return boundary


def gradient_boundary(x):
    """Identity; on JAX (see the module docstring) the cotangent of ``x`` is materialised once in the backward.

    Put it on the residual stream where it enters a transformer block. Symbolic
    Keras tensors (functional model construction) pass through unchanged.
    """
    global _jax_boundary
    if isinstance(x, keras.KerasTensor) or not gradient_boundaries_enabled():
        return x
    if _jax_boundary is None:
        _jax_boundary = _build_jax_boundary()
    return _jax_boundary(x)
