"""The benchmarks' shared result log: measurements appended as JSON lines under ``benchmarks/results/``."""

import hashlib
import json
import os
import subprocess
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


def code_version(root=None):
    """The code a measurement ran: the short commit, plus ``+`` and a hash of the uncommitted changes to
    ``keras_vdiff/`` and ``benchmarks/*.py`` when there are any (so the two sides of an A/B run of uncommitted code
    differ), or None outside a git checkout."""
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = ("--", "keras_vdiff", "benchmarks/*.py")

    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=30)

    try:
        commit = git("rev-parse", "--short", "HEAD")
        if commit.returncode:
            return None
        changes = git("status", "--porcelain", *paths).stdout + git("diff", "HEAD", *paths).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if not changes.strip():
        return commit.stdout.strip()
    return commit.stdout.strip() + "+" + hashlib.sha1(changes.encode()).hexdigest()[:8]


def append_rows(path, rows):
    """Append ``rows`` (dicts) to the JSON-lines file ``path``, each stamped with the same local time.

    A row also gets ``code`` (:func:`code_version`) and ``environment``, the performance-relevant variables of
    :func:`recorded_environment`, when any is set. Appending never rewrites earlier measurements; the folder is
    created when missing.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    environment = recorded_environment()
    code = code_version()
    with open(path, "a") as file:
        for row in rows:
            row = dict(row, time=stamp)
            if code and "code" not in row:
                row["code"] = code
            if environment and "environment" not in row:
                row["environment"] = environment
            file.write(json.dumps(row) + "\n")
