"""Shared test set-up: every test runs under the backend chosen by KERAS_BACKEND."""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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
