"""Writing a preset directory all at once: staged under a temporary name, then renamed into place."""

import contextlib
import os
import shutil
import tempfile


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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; a preset is an ordinary folder
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
