"""Compiling the sampling loop: the one place with backend-specific code.

``build_sampling_loop(step_fn, ...)`` turns a pure, backend-neutral step
``step_fn(i, state, args, noise) -> state`` into a loop
``loop(state, args, seed) -> state``:

- JAX: ``jax.jit`` over the whole ``fori_loop``; the model's variables enter
  as explicit arguments (a ``keras.StatelessScope`` maps them), so later
  training is seen without recompiling.
- TensorFlow: ``tf.function(jit_compile=True)`` (XLA) over the whole loop.
- PyTorch: ``torch.compile`` of one step (the step index enters as a tensor,
  so one graph serves all steps), driven by a Python loop with a progress bar
  (an unrolled 50-step graph would take minutes to build); falls back to eager
  when compilation fails, and says so in a log line.
- ``compile=False``: the same step in a Python loop, eagerly (the reference
  the benchmark compares against).

Per-step noise comes from a counter-based generator keyed by (seed, step), the
same in the compiled and the eager loop of a backend, so both give the same
samples.
"""

import logging

import keras
from keras import ops

logger = logging.getLogger("keras_vdiff")


def _jax_noise(key, i, shape):
    import jax

    return jax.random.normal(jax.random.fold_in(key, i), shape, dtype="float32")


_TF_NOISE_XLA = {}


def _tf_noise(seed, i, shape):
    # XLA's stateless normal draws other numbers than TensorFlow's own kernel for the
    # same seed, so the noise is always drawn by XLA: inside the compiled loop (inlined)
    # and in the eager loop alike, which then give the same samples.
    import tensorflow as tf

    shape = tuple(int(d) for d in shape)
    draw = _TF_NOISE_XLA.get(shape)
    if draw is None:

        def draw_fn(seed, i):
            seed_pair = tf.stack([tf.cast(seed, "int32"), tf.cast(i, "int32")])
            return tf.random.stateless_normal(shape, seed=seed_pair, alg="philox")

        draw = _TF_NOISE_XLA[shape] = tf.function(draw_fn, jit_compile=True)
    return draw(seed, i)


def _torch_noise(seed, i, shape):
    import torch

    from keras.src.backend.torch.core import get_device

    generator = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(i)) & 0xFFFFFFFF)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(get_device())


def backend_seed(seed):
    """The backend's form of an integer sampling seed (a JAX key, an int32 tensor, or the int)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.random.PRNGKey(seed)
    if backend == "tensorflow":
        return ops.convert_to_tensor(seed, dtype="int32")
    return int(seed)


def step_noise(seed, i, shape):
    """Standard normal noise for step ``i`` of a run with backend seed ``seed``."""
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_noise(seed, i, shape)
    if backend == "tensorflow":
        return _tf_noise(seed, i, shape)
    if backend == "torch":
        return _torch_noise(seed, i, shape)
    raise ValueError(f"Sampling supports the jax, tensorflow and torch backends, not {backend!r}.")


class SamplingLoop:
    """A built sampling loop; ``loop(state, args, seed) -> state``. ``mode`` says how it runs."""

    def __init__(self, step_fn, steps, stochastic, noise_shape, variables, compile=True, progress=False):
        self.step_fn = step_fn
        self.steps = steps
        self.stochastic = stochastic
        self.noise_shape = tuple(noise_shape)
        self.variables = list(variables)
        self.progress = progress
        self.backend = keras.backend.backend()
        self._compiled = None
        if not compile:
            self.mode = "eager"
        elif self.backend == "jax":
            self.mode = "jax.jit"
            self._compiled = self._build_jax()
        elif self.backend == "tensorflow":
            self.mode = "tf.function(jit_compile=True)"
            self._compiled = self._build_tensorflow()
        elif self.backend == "torch":
            self.mode = "torch.compile"
            self._compiled = self._build_torch()
        else:
            raise ValueError(f"Sampling supports the jax, tensorflow and torch backends, not {self.backend!r}.")

    # --- the loop body shared by every mode ---------------------------------------------------
    def _body(self, i, state, args, seed):
        noise = step_noise(seed, i, self.noise_shape) if self.stochastic else None
        return self.step_fn(i, state, args, noise)

    def _full_loop(self, state, args, seed):
        return ops.fori_loop(0, self.steps, lambda i, s: self._body(i, s, args, seed), state)

    # --- backends -------------------------------------------------------------------------------
    def _build_jax(self):
        import jax

        variables = self.variables

        def run(values, state, args, seed):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return self._full_loop(state, args, seed)

        jitted = jax.jit(run)
        return lambda state, args, seed: jitted([v.value for v in variables], state, args, seed)

    def _build_tensorflow(self):
        import tensorflow as tf

        return tf.function(self._full_loop, jit_compile=True, reduce_retracing=False)

    def _build_torch(self):
        import torch

        return torch.compile(self.step_fn, dynamic=False)

    def _python_loop(self, step, state, args, seed):
        bar = keras.utils.Progbar(self.steps, unit_name="step") if self.progress else None
        for i in range(self.steps):
            noise = step_noise(seed, i, self.noise_shape) if self.stochastic else None
            state = step(i, state, args, noise)
            if bar is not None:
                bar.update(i + 1)
        return state

    def __call__(self, state, args, seed):
        if self.backend != "torch":
            if self.mode == "eager":
                return self._python_loop(self.step_fn, state, args, seed)
            return self._compiled(state, args, seed)
        import torch

        if self._compiled is None:
            with torch.no_grad():
                return self._python_loop(self.step_fn, state, args, seed)

        compiled = self._compiled

        def step(i, state, args, noise):
            # The step index enters as a tensor so one graph serves every step.
            return compiled(torch.tensor(i, dtype=torch.int64), state, args, noise)

        try:
            with torch.no_grad():
                return self._python_loop(step, state, args, seed)
        except Exception as error:  # noqa: BLE001 - any compiler failure falls back to eager
            logger.warning("torch.compile of the sampling step failed (%s); sampling eagerly.", error)
            self.mode = "eager (torch.compile failed)"
            self._compiled = None
            with torch.no_grad():
                return self._python_loop(self.step_fn, state, args, seed)
