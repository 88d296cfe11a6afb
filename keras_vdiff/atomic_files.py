"""Writing files and directories all at once, and never over what keras_vdiff did not write.

Every file the library writes (presets, checkpoints, JSON and markdown
results, plots, videos, feature statistics, tokenizer vocabularies) goes
through :func:`staged_file` or :func:`staged_directory`: it is written under a
temporary name next to its destination and renamed into place, so an
interrupted or failing write never leaves half a file where a reader looks.

Directories carry a manifest (``.keras_vdiff_manifest.json``, the list of the
files the library put there). :func:`staged_directory` replaces an existing
directory only when every file in it is one the library wrote (or the
directory is empty); otherwise it raises, naming the files that would be lost.
The replacement is one atomic exchange of the staged and the old directory
(Linux ``renameat2(RENAME_EXCHANGE)``), so a process killed at any instant
leaves either the old or the new directory in place. Temporary names carry the
writer's process id; the next write into the same folder removes those of
processes that no longer run.
"""

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile

MANIFEST = ".keras_vdiff_manifest.json"
STAGING_PREFIX = ".tmp-keras_vdiff-"
RETIRED_PREFIX = ".old-keras_vdiff-"

# Directories written before the manifest existed: a keras_vdiff pipeline (pipeline.json) or a keras-hub
# backbone preset (config.json + metadata.json). Files with these top-level names count as the library's.
_LEGACY_PRESET_FILES = frozenset(
    {"pipeline.json", "model.weights.h5", "state.json", "config.json", "metadata.json", "tokenizer.json",
     "task.weights.h5", "preprocessor.json", "task.json", "assets", "training.json"}
)


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _staging_name(path):
    return f"{STAGING_PREFIX}{os.getpid()}-{os.path.basename(path)}-"


def _writer_is_gone(name, prefix):
    """Whether the process that made the temporary ``name`` no longer runs (its id follows ``prefix``)."""
    pid = name[len(prefix):].split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's live process
        return False
    return False


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def clean_stale_staging(directory):
    """Remove the temporary files and folders that killed keras_vdiff writes left in ``directory``.

    Only names this module makes (``.tmp-keras_vdiff-<pid>-...``) whose
    process has ended are touched. A retired directory of an interrupted
    replacement (``.old-keras_vdiff-<pid>-<name>-...``) is moved back to
    ``<name>`` when ``<name>`` is missing, removed otherwise.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        full = os.path.join(directory, name)
        if name.startswith(STAGING_PREFIX) and _writer_is_gone(name, STAGING_PREFIX):
            _remove(full)
        elif name.startswith(RETIRED_PREFIX) and _writer_is_gone(name, RETIRED_PREFIX):
            original = name[len(RETIRED_PREFIX):].split("-", 1)[1].rsplit("-", 1)[0]
            target = os.path.join(directory, original)
            if original and not os.path.lexists(target):
                os.rename(full, target)
            else:
                _remove(full)


@contextlib.contextmanager
def staged_file(path):
    """Yield a temporary file name next to ``path`` that replaces ``path`` only if the block succeeds.

    The temporary name keeps ``path``'s extension (writers such as imageio
    and ``savefig`` choose the format from it). On success the file gets the
    ordinary permissions of a new file (``0o666`` less the umask) and is
    renamed onto ``path`` in one step; if the block raises, it is removed.

    Example:
        >>> with staged_file("loss.png") as staging:
        ...     figure.savefig(staging)
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    clean_stale_staging(directory)
    handle, staging = tempfile.mkstemp(prefix=_staging_name(path), suffix=os.path.splitext(path)[1], dir=directory)
    os.close(handle)
    try:
        yield staging
        os.chmod(staging, 0o666 & ~_umask())  # mkstemp makes it private
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise


def write_text(path, text):
    """Write ``text`` to ``path`` atomically (:func:`staged_file`)."""
    with staged_file(path) as staging, open(staging, "w") as file:
        file.write(text)


def write_json(path, payload, indent=2):
    """Write ``payload`` as JSON to ``path`` atomically (:func:`staged_file`)."""
    write_text(path, json.dumps(payload, indent=indent))


def _relative_files(directory):
    found = []
    for root, folders, files in os.walk(directory):
        for name in files + [f for f in folders if os.path.islink(os.path.join(root, f))]:
            found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def foreign_files(directory):
    """The files in ``directory`` that keras_vdiff did not write (all of them if it wrote none).

    The library's files are those its manifest lists; a directory without a
    manifest written by an earlier keras_vdiff (``pipeline.json``, or keras-hub's
    ``config.json`` + ``metadata.json``) is recognised by those file names.
    """
    files = _relative_files(directory)
    manifest = os.path.join(directory, MANIFEST)
    if os.path.exists(manifest):
        try:
            with open(manifest) as file:
                ours = set(json.load(file)["files"]) | {MANIFEST}
        except (OSError, ValueError, KeyError, TypeError):
            ours = set()
        return [f for f in files if f not in ours]
    top = {f.split(os.sep, 1)[0] for f in files}
    if "pipeline.json" in top or {"config.json", "metadata.json"} <= top:
        return [f for f in files if f.split(os.sep, 1)[0] not in _LEGACY_PRESET_FILES]
    return files


def check_replaceable(path):
    """Raise ``FileExistsError`` unless ``path`` is absent, empty, or holds only files keras_vdiff wrote.

    The error names the files that replacing ``path`` would lose; callers run
    it before long work whose result :func:`staged_directory` will write there.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        raise FileExistsError(f"Cannot write a directory at {path}: a file of that name exists.")
    foreign = foreign_files(path)
    if foreign:
        listed = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
        raise FileExistsError(
            f"Refusing to replace {path}: it holds {len(foreign)} file(s) keras_vdiff did not write "
            f"({listed}), which would be lost. Choose a new or empty directory, or move those files away."
        )


def _exchange(a, b):
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot exchange {a} and {b}: {os.strerror(code)}")


def _replace_directory(staging, path):
    """Put ``staging`` at ``path``; an existing ``path`` is retired first and removed only afterwards."""
    if not os.path.lexists(path):
        os.rename(staging, path)
        return
    if _exchange(staging, path):
        shutil.rmtree(staging, ignore_errors=True)  # now the old directory
        return
    # Without an atomic exchange: two renames. A kill between them leaves the old directory under its
    # retired name, which the next write (clean_stale_staging) moves back.
    retired = tempfile.mkdtemp(prefix=f"{RETIRED_PREFIX}{os.getpid()}-{os.path.basename(path)}-",
                               dir=os.path.dirname(path))
    os.rmdir(retired)
    os.rename(path, retired)
    os.rename(staging, path)
    shutil.rmtree(retired, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(path, overwrite=True):
    """Yield a temporary directory that replaces ``path`` only if the block succeeds.

    Whatever the block writes appears at ``path`` in one atomic exchange; if
    the block raises (or the process dies), ``path`` is left as it was.

    ``path`` may already exist only as an empty directory or as one that
    keras_vdiff wrote (its manifest lists every file in it): anything else
    raises ``FileExistsError`` naming the files that would be lost, before
    anything is written. No option deletes files the library did not write.
    Inside another ``staged_directory`` block (``path`` is a staging folder),
    the block writes into ``path`` directly.

    Args:
        path: the directory to produce.
        overwrite: replace an existing keras_vdiff directory at ``path``; with
            ``False`` any existing ``path`` raises ``FileExistsError``.

    Example:
        >>> with staged_directory("my_preset") as staging:
        ...     write_json(os.path.join(staging, "config.json"), config)
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.basename(path).startswith(STAGING_PREFIX) and os.path.isdir(path):
        yield path
        return
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    clean_stale_staging(parent)
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(f"{path} already exists.")
        check_replaceable(path)
    staging = tempfile.mkdtemp(prefix=_staging_name(path), dir=parent)
    try:
        yield staging
        write_json(os.path.join(staging, MANIFEST),
                   {"written_by": "keras_vdiff", "files": [f for f in _relative_files(staging) if f != MANIFEST]})
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; a preset is an ordinary folder
        _replace_directory(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
