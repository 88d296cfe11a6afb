"""The benchmarks' shared result log: measurements appended as JSON lines under ``benchmarks/results/``."""

import json
import os
import time

# Environment variables that change a measurement without a change of code: the allocator (glibc's ``MALLOC_*``
# and ``GLIBC_TUNABLES``; see RESULTS, "JAX on a CPU maps its temporary buffer anew every step"), the compilers'
# flags and the gradient boundary's mode.
RECORDED_VARIABLES = ("GLIBC_TUNABLES", "XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS", "KERAS_VDIFF_GRADIENT_BOUNDARY")
RECORDED_PREFIXES = ("MALLOC_",)


def recorded_environment(environ=None):
    """The variables of ``RECORDED_VARIABLES`` / ``RECORDED_PREFIXES`` set in ``environ`` (default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    return {key: value for key, value in sorted(environ.items())
            if key in RECORDED_VARIABLES or key.startswith(RECORDED_PREFIXES)}


def append_rows(path, rows):
    """Append ``rows`` (dicts) to the JSON-lines file ``path``, each stamped with the same local time.

    A row also gets ``environment``, the performance-relevant variables of :func:`recorded_environment`, when
    any is set. Appending never rewrites earlier measurements; the folder is created when missing.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    environment = recorded_environment()
    with open(path, "a") as file:
        for row in rows:
            row = dict(row, time=stamp)
            if environment and "environment" not in row:
                row["environment"] = environment
            file.write(json.dumps(row) + "\n")
