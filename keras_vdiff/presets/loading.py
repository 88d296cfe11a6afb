"""Building a model whose weights are about to be loaded, without drawing random initial values.

Every model this library loads (a preset with its weights file, a converted
diffusers checkpoint) is first built, which runs each variable's initializer,
and then overwritten. On JAX each new weight shape compiles a random-number
kernel (about a second each on a CPU); converting the tiny test pipeline spent
75 of its 77 seconds there. :func:`weights_to_load` skips that work.
"""

import contextlib

import numpy as np

__all__ = ["weights_to_load", "mark_assigned", "listed"]


def listed(names, limit):
    """``names`` joined for an error message, the first ``limit`` of them and how many in all."""
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


class _WeightsToLoad:
    """The variables created inside :func:`weights_to_load` and those :func:`mark_assigned` was told of since."""

    def __init__(self):
        self.created, self.assigned = [], set()

    def check_all_assigned(self, where, error=ValueError):
        """Raise ``error`` listing the model variables no loaded value was assigned to (they would stay zero)."""
        missing = [v.path for v in self.created if id(v) not in self.assigned]
        if missing:
            raise error(f"The loading of {where} set no value for these weights: {listed(missing, 12)}.")


_LOADING = []  # the active _WeightsToLoad, innermost last


@contextlib.contextmanager
def weights_to_load():
    """Build models whose every weight a checkpoint is about to set, without drawing random initial values.

    Inside the block, new Keras variables start as zeros (seed-generator states
    excepted) instead of running their initializers: on JAX each new weight
    shape otherwise compiles a random-number kernel (seconds each on a CPU),
    and at the size of Latte-1 the random draw alone costs what the loading
    does. Yields a record whose ``check_all_assigned(where)`` raises for any
    variable not passed to :func:`mark_assigned` (the converters' ``assign``
    does), so a weight cannot silently stay zero; Keras' own ``load_weights``
    raises by itself when a file lacks a layer's weights.

    Example:
        >>> with weights_to_load():
        ...     model = Latte(**config)          # no random draws
        ...     model.load_weights(path)
    """
    from keras.src.backend.common import variables  # the one private hook; initialisation is not public API

    record = _WeightsToLoad()
    original = variables.Variable._initialize_with_initializer

    def zeros_instead(variable, initializer):
        if "seed_generator" in (variable.path or variable.name):
            return original(variable, initializer)
        record.created.append(variable)
        return original(variable, lambda shape, dtype=None: np.zeros(shape, dtype=_numpy_dtype(dtype)))

    variables.Variable._initialize_with_initializer = zeros_instead
    _LOADING.append(record)
    try:
        yield record
    finally:
        _LOADING.remove(record)
        variables.Variable._initialize_with_initializer = original


def _numpy_dtype(dtype):
    return "float32" if dtype in (None, "bfloat16") else dtype  # the variable converts to its own dtype


def mark_assigned(variable):
    """Record that ``variable`` received its loaded value (for ``check_all_assigned``)."""
    for record in _LOADING:
        record.assigned.add(id(variable))
