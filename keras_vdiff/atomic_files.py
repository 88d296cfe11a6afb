"""Writing files and directories all at once: staged under a temporary name, then renamed into place.

Every file the library writes (presets, checkpoints, JSON and markdown
results, plots, videos, feature statistics, tokenizer vocabularies) goes
through :func:`staged_file` or :func:`staged_directory`, so an interrupted
or failing write never leaves a half-written file where a reader looks for
it, and never leaves the temporary one behind.
"""

import contextlib
import json
import os
import shutil
import tempfile


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


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
    handle, staging = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
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


@contextlib.contextmanager
def staged_directory(path, overwrite=True):
    """Yield a temporary directory next to ``path`` that replaces ``path`` only if the block succeeds.

    Whatever the block writes appears at ``path`` in one rename; if the block
    raises (or is interrupted), the temporary directory is removed and
    ``path`` is left as it was, so a reader never sees half a preset.

    Args:
        path: the directory to produce.
        overwrite: replace an existing ``path``; with ``False`` an existing
            ``path`` raises ``FileExistsError`` before anything is written.

    Example:
        >>> with staged_directory("my_preset") as staging:
        ...     backbone.save_to_preset(staging)
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists.")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-preset-", dir=parent)
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; a preset is an ordinary folder
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
