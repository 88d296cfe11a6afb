"""Atomic writes: a file or directory appears complete in one rename, or not at all."""

import json
import os
import stat

import pytest

from keras_vdiff.atomic_files import MANIFEST, foreign_files, staged_directory, staged_file, write_json, write_text


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_staged_file_replaces_on_success_with_ordinary_permissions(tmp_path):
    path = tmp_path / "sub" / "plot.png"
    with staged_file(path) as staging:
        assert staging.endswith(".png") and os.path.dirname(staging) == str(tmp_path / "sub")
        assert not path.exists()  # nothing at the destination until the block succeeds
        with open(staging, "wb") as file:
            file.write(b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()
    assert sorted(os.listdir(tmp_path / "sub")) == ["plot.png"]


def test_staged_file_keeps_the_old_file_and_leaves_no_temporary_on_failure(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with staged_file(path) as staging:
            with open(staging, "w") as file:
                file.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]


def test_write_text_and_json(tmp_path):
    write_text(tmp_path / "a.md", "| x |\n")
    write_json(tmp_path / "b.json", {"rows": [1, 2]})
    assert (tmp_path / "a.md").read_text() == "| x |\n"
    assert json.loads((tmp_path / "b.json").read_text()) == {"rows": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == ["a.md", "b.json"]


def test_staged_directory_replaces_whole_or_refuses(tmp_path):
    target = tmp_path / "preset"
    with staged_directory(target) as staging:
        open(os.path.join(staging, "config.json"), "w").write("{}")
    assert sorted(os.listdir(target)) == [MANIFEST, "config.json"]
    assert json.load(open(target / MANIFEST))["files"] == ["config.json"]
    with pytest.raises(ValueError):
        with staged_directory(target) as staging:
            open(os.path.join(staging, "other.json"), "w").write("{}")
            raise ValueError("interrupted")
    assert sorted(os.listdir(target)) == [MANIFEST, "config.json"] and os.listdir(tmp_path) == ["preset"]
    with pytest.raises(FileExistsError):
        with staged_directory(target, overwrite=False):
            pass


def test_foreign_files_knows_the_library_s_own_and_earlier_presets(tmp_path):
    legacy = tmp_path / "legacy"  # a pipeline saved before the manifest existed
    legacy.mkdir()
    for name in ("pipeline.json", "model.weights.h5", "state.json"):
        (legacy / name).write_text("{}")
    assert foreign_files(legacy) == []
    (legacy / "notes.txt").write_text("mine")
    assert foreign_files(legacy) == ["notes.txt"]
    plain = tmp_path / "plain"  # a config.json alone does not make a preset
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    assert foreign_files(plain) == ["config.json"]


def test_nested_staged_directories_write_into_the_outer_staging(tmp_path):
    with staged_directory(tmp_path / "ckpt") as outer:
        with staged_directory(outer) as inner:
            assert inner == outer
            open(os.path.join(inner, "a.json"), "w").write("{}")
        assert not (tmp_path / "ckpt").exists()  # the inner block swapped nothing in
        open(os.path.join(outer, "b.json"), "w").write("{}")
    assert json.load(open(tmp_path / "ckpt" / MANIFEST))["files"] == ["a.json", "b.json"]
