"""The run-directory guard: what ``--out`` may hold, what ``--overwrite`` may delete, one run at a time.

* A run directory is one that holds an mmanet ``config.yaml``. ``--overwrite`` deletes only an
  empty directory or a run directory, and never one that contains the data root.
* A directory whose saved configuration differs from this run's is refused (without
  ``--overwrite``) — unless that earlier attempt never wrote a checkpoint (it failed before
  training started): then it is simply started again.
* An exclusive lock (``.lock``, with the holder's pid in ``.lock.pid``) is held for the whole run;
  a second run on the same directory gets an error naming the first run's pid.
* Under DDP only rank 0 does any of this (:func:`process_rank`); the other ranks train beside it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml
from filelock import FileLock, Timeout

from mmanet.config import RunConfig, dump_config
from mmanet.errors import MMANetError
from mmanet.outputs import OutputPathError, writable_directory

LOCK_NAME = ".lock"
PID_NAME = ".lock.pid"


def process_rank() -> int:
    """This process's global rank from the launcher's environment (0 when not distributed).

    Lightning's DDP launcher starts ranks > 0 as subprocesses with ``LOCAL_RANK``/``NODE_RANK``;
    torchrun and SLURM set ``RANK``/``SLURM_PROCID``. Rank 0 owns the run directory.
    """
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    local = int(os.environ.get("LOCAL_RANK", 0))
    node = int(os.environ.get("NODE_RANK", 0))
    return node * int(os.environ.get("LOCAL_WORLD_SIZE", 1)) + local if node else local


class RunDirectoryError(MMANetError):
    """The output directory cannot be used for this run (and why)."""


def is_run_directory(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def has_checkpoints(path: Path) -> bool:
    return any(path.glob("checkpoints/*.ckpt")) or any(path.glob("**/checkpoints/*.ckpt"))


def _contains(directory: Path, other: str | Path | None) -> bool:
    if other is None:
        return False
    d, o = directory.resolve(), Path(other).expanduser().resolve()
    return o == d or d in o.parents


class RunDirectory:
    """Context manager: validate ``out_dir`` for ``config``, take the lock, clear it if asked."""

    def __init__(self, out_dir: str | Path, config: RunConfig, overwrite: bool = False) -> None:
        self.path = Path(out_dir)
        self.config = config
        self.overwrite = overwrite
        self._lock: FileLock | None = None

    def __enter__(self) -> RunDirectory:
        path = self.path
        if process_rank() != 0:  # DDP: rank 0 guards, locks and writes; the other ranks only train
            return self
        if path.exists() and not path.is_dir():
            raise RunDirectoryError(f"--out {path} is an existing file, not a directory; choose a directory")
        if self.overwrite and path.exists():
            self._check_deletable()
        try:
            writable_directory(path, "--out")
        except OutputPathError as err:
            raise RunDirectoryError(f"cannot use {path} as the run directory: {err}") from None
        self._acquire()
        try:
            if self.overwrite:
                self._clear()
            else:
                self._check_same_run()
            dump_config(self.config, path / "config.yaml")
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    # ------------------------------------------------------------------ checks
    def _check_deletable(self) -> None:
        path = self.path
        if _contains(path, self.config.data.root):
            raise RunDirectoryError(
                f"refusing --overwrite: {path} contains the data root {self.config.data.root}; choose another --out"
            )
        entries = [p for p in path.iterdir() if p.name not in (LOCK_NAME, PID_NAME)]
        if entries and not is_run_directory(path):
            raise RunDirectoryError(
                f"refusing --overwrite: {path} is not an mmanet run directory (no config.yaml) and is not empty; "
                "--overwrite only deletes earlier runs"
            )

    def _check_same_run(self) -> None:
        saved = self.path / "config.yaml"
        if not saved.is_file():
            return
        try:
            previous = yaml.safe_load(saved.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            previous = err
        if not has_checkpoints(self.path):
            return  # never trained: its config is simply replaced
        if not isinstance(previous, dict):
            reason = "is not valid YAML" if isinstance(previous, Exception) else "does not hold a configuration"
            raise RunDirectoryError(
                f"{saved} {reason} (damaged?), so this run cannot be resumed safely; restore the file, or pass "
                "--overwrite to start the run again (or choose another --out)"
            )
        if previous != self.config.model_dump(mode="json"):
            raise RunDirectoryError(
                f"{self.path} holds a run with a different configuration; choose another --out "
                "or pass --overwrite to start it again"
            )

    # ------------------------------------------------------------------ lock
    def _acquire(self) -> None:
        lock = FileLock(str(self.path / LOCK_NAME))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            pid_file = self.path / PID_NAME
            holder = pid_file.read_text().strip() if pid_file.is_file() else "unknown"
            raise RunDirectoryError(
                f"{self.path} is in use by another mmanet run (pid {holder}); wait for it or choose another --out"
            ) from None
        (self.path / PID_NAME).write_text(str(os.getpid()))
        self._lock = lock

    def _release(self) -> None:
        if self._lock is not None:
            (self.path / PID_NAME).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def _clear(self) -> None:
        for entry in self.path.iterdir():
            if entry.name in (LOCK_NAME, PID_NAME):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
