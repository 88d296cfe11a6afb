"""Atomic writes: a file or directory appears complete in one rename, or not at all."""

import json
import os
import stat

import pytest

from keras_vdiff.atomic_files import staged_directory, staged_file, write_json, write_text


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
    assert os.listdir(target) == ["config.json"]
    with pytest.raises(ValueError):
        with staged_directory(target) as staging:
            open(os.path.join(staging, "other.json"), "w").write("{}")
            raise ValueError("interrupted")
    assert os.listdir(target) == ["config.json"] and os.listdir(tmp_path) == ["preset"]
    with pytest.raises(FileExistsError):
        with staged_directory(target, overwrite=False):
            pass
