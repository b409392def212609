"""Check that an output path can be written BEFORE any work is done, with errors that say what to pass instead.

The check creates (and removes) a temporary file in the target directory: it catches what
``os.access`` misses (a read-only file system, a full disk's quota, running as root on a
read-only mount) and never leaves anything behind but the directories it had to create.
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


def writable_directory(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a directory that exists (created if needed) and accepts new files."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path} is an existing file, not a directory; pass a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
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
        writable_directory(path.parent, option)
    except OutputPathError:
        raise OutputPathError(
            f"cannot write {path}: its directory {path.parent} is not writable; pass {option} with a file in a "
            "directory you can write to"
        ) from None
    return path
