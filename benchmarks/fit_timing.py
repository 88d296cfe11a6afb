"""Timing a ``fit`` call the way the benchmarks do: up to the end of its epoch, with the teardown apart.

On TensorFlow, deleting the ``tf.data`` iterator at the end of a ``fit`` call sometimes waits for the pipeline's
autotune thread to wake up: 3.4 s after an 8-step call in about half of the calls fed NumPy arrays (RESULTS,
"TensorFlow: fit waits in its teardown"). That wait comes once per call, not per step. Timing the whole call
would halve the rate of a short one, so the clock stops when the epoch ends: by then its logs exist, so every
step has finished on every backend.
"""

import time


def timed_fit(model, x, **fit_kwargs):
    """Run ``model.fit(x, epochs=1, **fit_kwargs)``: (history, seconds to the epoch's end, teardown seconds)."""
    import keras

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.time = time.perf_counter()

    stamp = EpochEnd()
    callbacks = list(fit_kwargs.pop("callbacks", None) or []) + [stamp]
    start = time.perf_counter()
    history = model.fit(x, epochs=1, callbacks=callbacks, **fit_kwargs)
    returned = time.perf_counter()
    return history, stamp.time - start, returned - stamp.time
