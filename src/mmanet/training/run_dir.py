"""The run-directory guard: what ``--out`` may hold, what ``--overwrite`` may delete, one run at a time.

* A run directory is one that holds an mmanet ``config.yaml`` (or checkpoints). ``--overwrite``
  deletes only an empty directory or a run directory, and never one that contains something the
  run reads (:func:`config_reads`: the data root, ``teacher.checkpoint``, ``model.pretrained``;
  callers add their own, e.g. the config file or a benchmark method's ``config:``).
* A directory that is not a run directory is used only when it holds none of the names a run
  writes (:data:`RUN_OUTPUTS`): a run never writes over a file it did not create.
* A directory whose saved configuration differs from this run's is refused (without
  ``--overwrite``) — unless that earlier attempt never wrote a checkpoint (it failed before
  training started): then it is simply started again.
* A trained run whose data changed under ``data.root`` since it trained (:mod:`mmanet.data.fingerprint`:
  the files' listing, sizes and times) is refused in the same way: a resume or a benchmark's reuse never
  mixes data; ``--overwrite`` trains it again.
* An exclusive lock (``.lock``, with the holder's pid in ``.lock.pid``) is held for the whole run;
  a second run on the same directory gets an error naming the first run's pid.
* A directory the run created is removed again when the run fails before it wrote anything but its
  configuration (preflight, the data loader): a corrected command starts from nothing.
* Under DDP only rank 0 does any of this (:func:`process_rank`); the other ranks train beside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from mmanet.config import RunConfig, dump_config
from mmanet.config_checks import load_yaml
from mmanet.data.fingerprint import FINGERPRINT_NAME, data_change, fingerprint, write_fingerprint
from mmanet.errors import MMANetError
from mmanet.outputs import OutputPathError, Reads, check_keeps_reads, same_path, writable_directory

LOCK_NAME = ".lock"
PID_NAME = ".lock.pid"
#: what a run writes at the top of its directory (runner's layout)
RUN_OUTPUTS = (
    "config.yaml",
    FINGERPRINT_NAME,
    "checkpoints",
    "logs",
    "tb",
    "teacher",
    "sf",
    "per_combination.csv",
    "per_combination.md",
    "per_combination_val.csv",
    "per_combination_val.md",
    "results.json",
)
#: keys every configuration mmanet saves has (what tells its config.yaml from someone else's)
_RUN_CONFIG_KEYS = {"method", "stage", "data", "model", "train"}


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
    """``path`` holds a run: a ``config.yaml`` mmanet wrote, or (its config damaged) checkpoints."""
    saved = path / "config.yaml"
    return saved.is_file() and (_saved_config(saved) is not None or has_checkpoints(path))


def has_checkpoints(path: Path) -> bool:
    return any(path.glob("checkpoints/*.ckpt")) or any(path.glob("**/checkpoints/*.ckpt"))


def run_part(path: Path) -> str | None:
    """What part of an mmanet run ``path`` is — a place no other command writes into (None: none)."""
    if not path.is_dir():
        return None
    if is_run_directory(path):
        return "a run directory"
    if any(path.glob("checkpoints/*.ckpt")):
        return "a training stage of a run (it holds checkpoints/)"
    if any(path.glob("*.ckpt")):
        return "a run's checkpoints folder"
    return None


def _saved_config(saved: Path) -> dict | None:
    """The configuration in ``saved`` when it is one mmanet wrote (None: unreadable or someone else's)."""
    try:
        previous = load_yaml(saved)
    except (OSError, yaml.YAMLError, ValueError):  # (UnicodeDecodeError and YAMLTooLarge are ValueErrors)
        return None
    return previous if isinstance(previous, dict) and previous.keys() >= _RUN_CONFIG_KEYS else None


def config_reads(config: RunConfig) -> list[tuple[str, str | None]]:
    """The paths a run with ``config`` reads (what ``--overwrite`` must never delete)."""
    return [
        ("the data root", config.data.root),
        ("the teacher checkpoint (teacher.checkpoint)", config.teacher.checkpoint),
        ("the pretrained weights (model.pretrained)", config.model.pretrained),
    ]


def check_deletable(path: Path, config: RunConfig, reads: Reads = ()) -> None:
    """What ``--overwrite`` checks before it deletes ``path``: a run directory (or empty), holding nothing
    the run reads (:func:`config_reads` and ``reads``)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise RunDirectoryError(f"--out {path} is an existing file, not a directory; choose a directory")
    try:
        check_keeps_reads(path, [*config_reads(config), *reads])
    except OutputPathError as err:
        raise RunDirectoryError(str(err)) from None
    entries = [p for p in path.iterdir() if p.name not in (LOCK_NAME, PID_NAME)]
    if entries and not is_run_directory(path):
        raise RunDirectoryError(
            f"refusing --overwrite: {path} is not an mmanet run directory (no config.yaml written by mmanet) and "
            "is not empty; --overwrite only deletes earlier runs"
        )


def recorded_teacher_hash(path: Path) -> str | None:
    """The content hash of the teacher the run in ``path`` was trained against, as its checkpoint records it."""
    from mmanet.deploy.checkpoint import CheckpointError, load_checkpoint

    for name in ("last.ckpt", "best.ckpt"):
        ckpt = path / "checkpoints" / name
        if ckpt.is_file():
            try:
                teacher = load_checkpoint(ckpt).get("mmanet", {}).get("teacher") or {}
            except (CheckpointError, AttributeError):
                continue
            if isinstance(teacher, dict) and isinstance(teacher.get("sha256"), str):
                return teacher["sha256"]
    return None


def _teacher_hash(teacher: dict) -> str | None:
    """The content hash of the teacher a configuration names (``teacher.sha256``, else its checkpoint's)."""
    from mmanet.deploy.checkpoint import CheckpointError, model_hash_of_checkpoint

    if teacher.get("sha256"):
        return str(teacher["sha256"])
    checkpoint = teacher.get("checkpoint")
    if checkpoint and Path(checkpoint).is_file():
        try:
            return model_hash_of_checkpoint(checkpoint)
        except CheckpointError:
            return None
    return None


#: settings of how a run executes, not of what it computes: not part of a run's identity (a run trained with 2
#: threads or a progress bar is resumed and reused with 1 thread and none)
EXECUTION_KEYS = (("train", "num_threads"), ("train", "progress_bar"))


def _identity(config: Any) -> Any:
    """``config`` (a dumped RunConfig) without the :data:`EXECUTION_KEYS`."""
    if not isinstance(config, dict):
        return config
    out = dict(config)
    for section, key in EXECUTION_KEYS:
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k != key}
    return out


def config_differences(saved: object, config: RunConfig, limit: int = 6) -> str:
    """The dotted keys whose values differ between a saved configuration and ``config`` (for messages):
    ``"train.lr (0.001 → 0.01), mad.alpha (2.0 → 4.0)"``."""
    found: list[str] = []

    def walk(a: object, b: object, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix[:-1]} ({a!r} → {b!r})")

    walk(_identity(saved), _identity(config.model_dump(mode="json")), "")
    shown = ", ".join(found[:limit])
    return shown + (f" and {len(found) - limit} more" if len(found) > limit else "")


def same_configuration(path: Path, saved: object, config: RunConfig) -> bool:
    """The configuration ``saved`` in the run directory ``path`` is ``config``'s, up to the execution settings
    (:data:`EXECUTION_KEYS`). A teacher checkpoint is compared by content (``teacher.sha256``, or the hash the
    run's checkpoint recorded), not by its path: a benchmark or study moved to another place, or named by another
    relative path, still holds the same runs."""
    current = _identity(config.model_dump(mode="json"))
    saved = _identity(saved)
    if saved == current:
        return True
    if not isinstance(saved, dict) or not isinstance(saved.get("teacher"), dict):
        return False

    def without_teacher_file(d: dict) -> dict:
        return {**d, "teacher": {k: v for k, v in d["teacher"].items() if k not in ("checkpoint", "sha256")}}

    if without_teacher_file(saved) != without_teacher_file(current) or not current["teacher"].get("checkpoint"):
        return False
    theirs = saved["teacher"].get("sha256") or recorded_teacher_hash(path)
    return theirs is not None and theirs == _teacher_hash(current["teacher"])


def data_changed(path: Path, config: RunConfig) -> str | None:
    """Why the data under ``config.data.root`` is not what the run in ``path`` trained on (None: the same, or no
    record): :func:`mmanet.data.fingerprint.data_change`."""
    return data_change(path, config.data.root)


def changed_run(path: Path, config: RunConfig) -> bool:
    """``path`` holds a trained run (checkpoints) whose saved configuration is not ``config`` (or is damaged), or
    whose data changed since it trained: resuming it is refused, and only ``--overwrite`` starts it again
    (teachers compared by content: :func:`same_configuration`; data by :func:`data_changed`)."""
    saved = path / "config.yaml"
    if not saved.is_file() or not has_checkpoints(path):
        return False
    try:
        previous = load_yaml(saved)
    except (OSError, yaml.YAMLError, ValueError):  # (UnicodeDecodeError and YAMLTooLarge are ValueErrors)
        return True
    return not same_configuration(path, previous, config) or data_changed(path, config) is not None


def check_config_file(path: Path, config: RunConfig, config_file: str | Path) -> None:
    """A run rewrites ``path/config.yaml``: refuse when that is the config file the command reads and the
    new content would differ (a run never writes over one of its own inputs)."""
    saved = path / "config.yaml"
    if not (saved.is_file() and same_path(saved, config_file)):
        return
    if saved.read_text(errors="replace") != yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False):
        raise RunDirectoryError(
            f"{config_file} is both the config file this command reads and the config.yaml of --out {path}, "
            "and this run's configuration differs from it (--set?); copy the file out of the run directory "
            "first, or choose another --out"
        )


def check_evaluation_dir(out_dir: Path, option: str = "--out") -> None:
    """An evaluation's ``per_combination.{csv,md}`` go to a directory of their own: never into a run directory
    (whose tables are the run's results), a checkpoints folder or an SF run."""
    part = run_part(out_dir)
    if part is not None:
        raise RunDirectoryError(
            f"{option} {out_dir} is {part} (a run's per_combination.csv is its own result table); pass {option} "
            f"with a directory of its own, e.g. {out_dir / 'eval'}"
        )


class DirectoryLock:
    """An exclusive lock on a directory for one mmanet process (``.lock``, its pid in ``.lock.pid``): a second
    process gets a :class:`RunDirectoryError` naming the first one's pid, before it touches anything there."""

    def __init__(self, path: str | Path, holder: str = "mmanet run", option: str = "--out") -> None:
        self.path = Path(path)
        self.holder = holder
        self.option = option
        self._lock: FileLock | None = None

    def acquire(self) -> DirectoryLock:
        lock = FileLock(str(self.path / LOCK_NAME))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            pid_file = self.path / PID_NAME
            holder = pid_file.read_text().strip() if pid_file.is_file() else "unknown"
            raise RunDirectoryError(
                f"{self.path} is in use by another {self.holder} (pid {holder}); wait for it or choose another "
                f"{self.option}"
            ) from None
        try:
            (self.path / PID_NAME).write_text(str(os.getpid()))
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        return self

    def release(self) -> None:
        if self._lock is not None:
            (self.path / PID_NAME).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class RunDirectory:
    """Context manager: validate ``out_dir`` for ``config``, take the lock, clear it if asked."""

    def __init__(self, out_dir: str | Path, config: RunConfig, overwrite: bool = False, reads: Reads = ()) -> None:
        self.path = Path(out_dir)
        self.config = config
        self.overwrite = overwrite
        #: what the command reads besides :func:`config_reads` (never deleted by ``overwrite``)
        self.reads = reads
        self._lock = DirectoryLock(self.path)
        #: this run made the directory (so a failure before training may remove it again)
        self._created = False

    def __enter__(self) -> RunDirectory:
        path = self.path
        if process_rank() != 0:  # DDP: rank 0 guards, locks and writes; the other ranks only train
            return self
        self._created = not path.exists()
        if path.exists() and not path.is_dir():
            raise RunDirectoryError(f"--out {path} is an existing file, not a directory; choose a directory")
        if self.overwrite:
            check_deletable(path, self.config, self.reads)
        elif path.is_dir():
            self._check_foreign_files()
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
            write_fingerprint(path, fingerprint(self.config.data.root, exclude=[path]))
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type, *exc) -> None:
        discard = exc_type is not None and self._discard_unstarted()
        self._release()
        if discard:  # nothing but its own bookkeeping: the directory goes as it came
            (self.path / LOCK_NAME).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # someone else's file appeared meanwhile: leave it
                self.path.rmdir()

    def _discard_unstarted(self) -> bool:
        """After an error: when this run created the directory and wrote nothing into it but its configuration and
        data record (preflight or the data loader failed before training started), remove those two files."""
        if not self._created or not self.path.is_dir():
            return False
        own = {"config.yaml", FINGERPRINT_NAME, LOCK_NAME, PID_NAME}
        if any(entry.name not in own for entry in self.path.iterdir()):
            return False  # logs or checkpoints: what the user needs to see what happened stays
        for name in ("config.yaml", FINGERPRINT_NAME):
            (self.path / name).unlink(missing_ok=True)
        return True

    # ------------------------------------------------------------------ checks
    def _check_foreign_files(self) -> None:
        """A directory that is not a run: refused when the run would write over one of its files."""
        saved = self.path / "config.yaml"
        if saved.is_file():
            if not is_run_directory(self.path) and saved.read_text(errors="replace").strip():
                raise RunDirectoryError(
                    f"--out {self.path} holds a config.yaml that is not an mmanet run configuration, "
                    "which a run would replace; choose a new or empty directory"
                )
            return
        part = run_part(self.path)
        if part is not None:
            raise RunDirectoryError(
                f"--out {self.path} is {part}, not a run directory of its own; choose a new or empty directory"
            )
        taken = [name for name in RUN_OUTPUTS if (self.path / name).exists() or (self.path / name).is_symlink()]
        if taken:
            raise RunDirectoryError(
                f"--out {self.path} is not an mmanet run directory (no config.yaml) but already holds "
                f"{', '.join(taken)}, which a run would write over; choose a new or empty directory"
            )

    def _check_same_run(self) -> None:
        saved = self.path / "config.yaml"
        if not saved.is_file():
            return
        try:
            previous = load_yaml(saved)
        except (yaml.YAMLError, ValueError) as err:  # (UnicodeDecodeError and YAMLTooLarge are ValueErrors)
            previous = err
        if not has_checkpoints(self.path):
            return  # never trained (and written by mmanet: _check_foreign_files): its config is simply replaced
        if not isinstance(previous, dict):
            reason = "is not valid YAML" if isinstance(previous, Exception) else "does not hold a configuration"
            raise RunDirectoryError(
                f"{saved} {reason} (damaged?), so this run cannot be resumed safely; restore the file, or pass "
                "--overwrite to start the run again (or choose another --out)"
            )
        if not same_configuration(self.path, previous, self.config):
            differences = config_differences(previous, self.config)
            raise RunDirectoryError(
                f"{self.path} holds a run with a different configuration (saved → now: {differences}); choose "
                "another --out or pass --overwrite to start it again"
            )
        change = data_changed(self.path, self.config)
        if change is not None:
            raise RunDirectoryError(
                f"{self.path} holds a run, but {change}; resuming would mix data. Pass --overwrite to train it "
                "again on the data as it is now, or choose another --out"
            )

    # ------------------------------------------------------------------ lock
    def _acquire(self) -> None:
        self._lock.acquire()

    def _release(self) -> None:
        self._lock.release()

    def _clear(self) -> None:
        for entry in self.path.iterdir():
            if entry.name in (LOCK_NAME, PID_NAME):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
