"""The benchmarks' shared helpers: the result log (appends, records the environment) and the timing of ``fit``."""

import json
import os
import subprocess
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from fit_timing import timed_fit  # noqa: E402
from results_log import (RECORDED_PREFIXES, RECORDED_VARIABLES, append_rows, code_version,  # noqa: E402
                         recorded_environment)


def read_rows(path):
    with open(path) as file:
        return [json.loads(line) for line in file]


def test_rows_are_appended_and_stamped(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key in RECORDED_VARIABLES or key.startswith(RECORDED_PREFIXES):
            monkeypatch.delenv(key)
    path = str(tmp_path / "results" / "speed.jsonl")  # the folder does not exist yet
    append_rows(path, [{"steps_per_second": 1.0}])
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_xnnpack=false")
    monkeypatch.setenv("UNRELATED_VARIABLE", "x")
    append_rows(path, [{"steps_per_second": 2.0}, {"steps_per_second": 3.0, "environment": {"given": "kept"}}])
    first, second, third = read_rows(path)
    assert first["steps_per_second"] == 1.0 and "environment" not in first and "time" in first
    assert second["environment"] == {"MALLOC_ARENA_MAX": "1", "XLA_FLAGS": "--xla_cpu_use_xnnpack=false"}
    assert third["environment"] == {"given": "kept"}  # a row's own record wins


def test_recorded_environment_filters_by_name():
    environ = {"MALLOC_TRIM_THRESHOLD_": "10", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "HOME": "/root"}
    assert recorded_environment(environ) == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
                                             "MALLOC_TRIM_THRESHOLD_": "10"}


def test_code_version_names_the_commit_and_uncommitted_library_changes(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "keras_vdiff").mkdir()
    (tmp_path / "keras_vdiff" / "model.py").write_text("A = 1\n")
    (tmp_path / "notes.md").write_text("draft\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    commit = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    (tmp_path / "notes.md").write_text("edited\n")  # outside the library: not a change of the measured code
    assert code_version(str(tmp_path)) == commit
    (tmp_path / "keras_vdiff" / "model.py").write_text("A = 2\n")
    first = code_version(str(tmp_path))
    assert first.startswith(commit + "+") and len(first) == len(commit) + 9
    (tmp_path / "keras_vdiff" / "model.py").write_text("A = 3\n")
    assert code_version(str(tmp_path)) not in (first, commit)  # the other side of an A/B run
    (tmp_path / "keras_vdiff" / "model.py").write_text("A = 2\n")
    assert code_version(str(tmp_path)) == first
    assert code_version(str(tmp_path / "keras_vdiff" / "missing")) is None  # not a checkout


def test_timed_fit_runs_one_epoch_and_keeps_the_callers_callbacks():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")

    class CountBatches(keras.callbacks.Callback):
        batches = 0

        def on_train_batch_end(self, batch, logs=None):
            CountBatches.batches += 1

    x, y = np.ones((12, 3), "float32"), np.zeros((12, 1), "float32")
    history, seconds, teardown = timed_fit(model, x, y=y, batch_size=4, verbose=0, callbacks=[CountBatches()])
    assert len(history.history["loss"]) == 1 and CountBatches.batches == 3
    assert seconds > 0 and teardown >= 0
