"""Shared test set-up: every test runs under the backend chosen by KERAS_BACKEND."""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite's programs are tiny, so on JAX (and TensorFlow's XLA) most of a test's time is XLA:CPU compiling
# them, and most of that is LLVM optimising the generated loops. Level 0 skips those passes: on JAX it cut the
# CPU time of tests/test_video_diffusion.py by 42% and of test_training_and_cli.py + test_models_latte.py by 40%
# with every test passing. Floating-point semantics are IEEE at either level (XLA:CPU's fast math is off by
# default), so the numbers the tests check are the ones a user gets; benchmarks and user runs are unaffected.
# A level already set in XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import keras  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield


@pytest.fixture
def backend():
    return keras.backend.backend()


def to_numpy(x):
    """Any backend tensor (or nested structure of them) as numpy."""
    return keras.ops.convert_to_numpy(x)
