"""What the files under ``data.root`` looked like when a run trained on them.

A run's configuration names its data by path only, so a dataset regenerated or edited in place
(new samples, a re-exported depth map, a fixed label file) would leave the configuration unchanged:
``train`` would resume, and ``benchmark`` / ``tune`` would reuse finished runs, on data they were
not trained on. The fingerprint closes that gap: a run directory records one
(``data_fingerprint.json``), and a resume or a reuse compares it with the data as it is now.

The fingerprint hashes the sorted (relative path, size, modification time in ns) of every file
under the root — a stat per file, never the content, so it stays cheap for datasets of 10^5
images. A file rewritten with other bytes changes its size or time; ``touch`` or a copy without
``-p`` changes the time too and is reported as changed (the safe direction: the user is asked,
nothing is reused silently). Directories that hold an mmanet lock (a run, benchmark or study
directory placed inside the data root) and the run's own directory are not data and are skipped.
Data without a root (synthetic, or files shipped with the package) has no fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

FINGERPRINT_NAME = "data_fingerprint.json"
#: a directory holding this file belongs to an mmanet command (its lock), not to the data
_OUTPUT_MARKER = ".lock"


@dataclass(frozen=True)
class DataFingerprint:
    """The file count, total size and hash of the listing of the files under ``root``."""

    root: str
    files: int
    bytes: int
    sha256: str

    def describe(self) -> str:
        return f"{self.files} files, {self.bytes} bytes"


def _listing(root: Path, exclude: set[Path]) -> Iterable[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file under ``root``, following links, each directory once."""
    seen: set[tuple[int, int]] = set()
    for current, dirs, files in os.walk(root, followlinks=True):
        here = Path(current)
        info = here.stat()
        if (info.st_dev, info.st_ino) in seen or here.resolve() in exclude or _OUTPUT_MARKER in files:
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs.sort()
        for name in sorted(files):
            try:
                stat = (here / name).stat()
            except OSError:  # a dangling link: not readable data
                continue
            yield str((here / name).relative_to(root)), stat.st_size, stat.st_mtime_ns


def fingerprint(root: str | Path | None, exclude: Iterable[str | Path] = ()) -> DataFingerprint | None:
    """The fingerprint of the data at ``root`` (a directory or one file); None when there is no root or
    it does not exist (the data loader reports that)."""
    if root is None:
        return None
    path = Path(root).expanduser()
    if path.is_file():
        stat = path.stat()
        entries: Iterable[tuple[str, int, int]] = [(path.name, stat.st_size, stat.st_mtime_ns)]
    elif path.is_dir():
        entries = _listing(path, {Path(p).resolve() for p in exclude})
    else:
        return None
    digest = hashlib.sha256()
    files = size = 0
    for rel, nbytes, mtime in entries:
        digest.update(f"{rel}\0{nbytes}\0{mtime}\n".encode("utf-8", "surrogateescape"))
        files += 1
        size += nbytes
    return DataFingerprint(str(root), files, size, digest.hexdigest())


def read_fingerprint(run_dir: Path) -> DataFingerprint | None:
    """The fingerprint a run recorded; None for a run from before fingerprints, or a damaged file
    (such a run is compared by its configuration alone)."""
    try:
        raw = json.loads((run_dir / FINGERPRINT_NAME).read_text())
        return DataFingerprint(str(raw["root"]), int(raw["files"]), int(raw["bytes"]), str(raw["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_fingerprint(run_dir: Path, value: DataFingerprint | None) -> None:
    """Record ``value`` in ``run_dir`` (removing a stale record when the data has no root)."""
    target = run_dir / FINGERPRINT_NAME
    if value is None:
        target.unlink(missing_ok=True)
        return
    tmp = target.with_name(f".{FINGERPRINT_NAME}.tmp")
    tmp.write_text(json.dumps(asdict(value), indent=1) + "\n")
    os.replace(tmp, target)


def data_change(run_dir: Path, root: str | Path | None) -> str | None:
    """Why the data under ``root`` is not what the run in ``run_dir`` trained on (None: the same, or
    unknown because the run recorded no fingerprint)."""
    recorded = read_fingerprint(run_dir)
    if recorded is None:
        return None
    now = fingerprint(root, exclude=[run_dir])
    if now is not None and now.sha256 == recorded.sha256:
        return None
    if now is None:
        return f"the data at {root} that it was trained on is gone or unreadable"
    if (now.files, now.bytes) == (recorded.files, recorded.bytes):
        detail = "files rewritten or touched"
    else:
        detail = f"then {recorded.describe()}, now {now.describe()}"
    return f"the data under data.root {root} changed since it was trained ({detail})"
