"""Check that an output path can be written BEFORE any work is done, with errors that say what to pass instead.

The check creates (and removes) a temporary file in the target directory (or, when that does
not exist yet, in its nearest existing ancestor): it catches what ``os.access`` misses (a
read-only file system, running as root on a read-only mount) and leaves nothing behind except,
when asked to (``create=True``), the directory itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mmanet.errors import MMANetError


class OutputPathError(MMANetError):
    """An output path that cannot be written (a file where a directory is needed, read-only, …)."""


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def writable_directory(path: str | Path, option: str = "--out", create: bool = True) -> Path:
    """``path`` as a directory that accepts new files: created now (``create``), or creatable later."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path} is an existing file, not a directory; pass a directory")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"cannot write to {path}: {existing} is a file; pass {option} with a directory")
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path if create else existing):
            pass
    except OSError as err:
        raise OutputPathError(
            f"cannot write to {path} ({_reason(err)}); pass {option} with a directory you can write to"
        ) from None
    return path


def writable_file(path: str | Path, option: str = "--out", example_name: str = "output") -> Path:
    """``path`` as a file name that can be (over)written: not a directory, in a writable directory."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a directory; pass a file name, e.g. {path / example_name}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"cannot overwrite {path} (permission denied); pass {option} with another file")
    try:
        writable_directory(path.parent, option, create=False)
    except OutputPathError:
        raise OutputPathError(
            f"cannot write {path}: its directory {path.parent} is not writable; pass {option} with a file in a "
            "directory you can write to"
        ) from None
    return path
