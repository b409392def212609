"""Check an output path BEFORE any work is done, with errors that say what to pass instead.

The rule every command follows: it never writes over one of its own inputs, over a file it did
not create, or outside its output directory, and it never deletes something it reads.

* :func:`writable_directory` / :func:`writable_file`: the place accepts new files. The check
  creates (and removes) a temporary file in the target directory (or, when that does not exist
  yet, in its nearest existing ancestor): it catches what ``os.access`` misses (a read-only file
  system, running as root on a read-only mount) and leaves nothing behind except, when asked to
  (``create=True``), the directory itself.
* :func:`check_not_read`: an output is none of the command's inputs (:data:`Reads`), not even
  through a link; :func:`check_keeps_reads`: a directory about to be cleared holds none of them.
* :func:`check_replaceable`: an existing file is replaced only when it is this command's own
  earlier output (the caller says how to recognise one).
* :func:`plain_name_problem`: a name used as one folder of an output directory (a benchmark
  method's label) cannot point anywhere else.
* :func:`writing`: an ``OSError`` while a file is written (disk full, a directory made read-only
  meanwhile) becomes an :class:`OutputPathError` naming the file and the reason.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
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


#: what a command reads: ``(what it is, path)`` pairs, e.g. ``("the checkpoint", ckpt)``; None paths are skipped
Reads = Sequence[tuple[str, "str | Path | None"]]


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def same_path(a: str | Path, b: str | Path) -> bool:
    """``a`` and ``b`` name the same file (through links and hard links too)."""
    try:
        if Path(a).exists() and Path(b).exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return _resolved(a) == _resolved(b)


def inside(directory: str | Path, path: str | Path) -> bool:
    """``path`` is ``directory`` itself or lies somewhere below it (links resolved)."""
    d, p = _resolved(directory), _resolved(path)
    return p == d or d in p.parents


def _reads(reads: Reads) -> Iterable[tuple[str, Path]]:
    return ((what, Path(path)) for what, path in reads if path is not None and str(path) != "")


def check_not_read(path: str | Path, reads: Reads, option: str = "--out", subject: str | None = None) -> None:
    """Refuse to write ``path`` when it is one of the files this command reads (``subject``: how the
    message names ``path``, by default ``"<option> <path>"``)."""
    for what, read in _reads(reads):
        if same_path(path, read):
            named = "" if str(read) == str(path) else f" ({read})"
            raise OutputPathError(
                f"{subject or f'{option} {path}'} is {what}{named}, which this command reads; writing there would "
                f"destroy it: pass {option} with another path"
            )


def check_keeps_reads(directory: str | Path, reads: Reads, action: str = "refusing --overwrite") -> None:
    """Refuse to clear ``directory`` when it holds (or is) something this command reads."""
    for what, read in _reads(reads):
        if inside(directory, read):
            raise OutputPathError(
                f"{action}: {directory} contains {what} {read}, which this command reads; move it out of "
                f"{directory} first, or choose another --out"
            )


def check_replaceable(path: str | Path, ours: Callable[[Path], bool], kind: str, option: str = "--out") -> None:
    """An existing ``path`` is replaced only when ``ours(path)``: it is this command's own earlier output."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not ours(path)):
        raise OutputPathError(
            f"{path} already exists and is not {kind}; this command replaces only its own earlier output. "
            f"Move the file away, or pass {option} with another path"
        )


def plain_name_problem(name: str, reserved: Iterable[str] = ()) -> str | None:
    """Why ``name`` cannot be one folder inside an output directory (None when it can)."""
    if not name or not name.strip():
        return "is empty"
    if "\0" in name:
        return "contains a NUL character"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if name in (".", "..") or Path(name).is_absolute():
        return "names another directory"
    if name in set(reserved):
        return "is the name of a file or folder the command writes itself"
    return None


@contextmanager
def writing(path: str | Path, what: str = "", atomic: bool = False) -> Iterator[None]:
    """Inside, an ``OSError`` (no space left, read-only, quota …) is an :class:`OutputPathError` that names
    ``path`` (``what``: how to call it, e.g. ``"the checkpoint "``); ``atomic``: the write replaces the
    file by a rename, so an earlier version is still there and the message says so."""
    try:
        yield
    except OSError as err:
        path = Path(path)
        if not atomic and isinstance(err.filename, str) and not Path(err.filename).name.startswith("."):
            path = Path(err.filename)  # the file that failed, when a step writes several (not a temporary one)
        kept = f"; the previous {path.name} is unchanged" if atomic and path.exists() else ""
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "Free some space, then run the command again"
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = f"Make {path.parent} writable, then run the command again"
        else:
            fix = "Run the command again once the file can be written"
        raise OutputPathError(f"cannot write {what}{path}: {_reason(err)}{kept}. {fix}") from None
