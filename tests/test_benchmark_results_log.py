"""The benchmarks' result log appends, never rewrites, and records the environment a row was measured under."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from results_log import append_rows, recorded_environment  # noqa: E402


def read_rows(path):
    with open(path) as file:
        return [json.loads(line) for line in file]


def test_rows_are_appended_and_stamped(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key in ("GLIBC_TUNABLES", "XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS", "KERAS_VDIFF_GRADIENT_BOUNDARY") \
                or key.startswith("MALLOC_"):
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
