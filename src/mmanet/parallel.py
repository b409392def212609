"""Running a benchmark's runs in parallel on this machine (issue 25): ``mmanet benchmark --workers N``.

The runs of a benchmark are independent, locked and resumable, so they go to N worker processes (spawned:
a clean interpreter each, no state shared with the driver). Each worker loads the data itself, pins its own
thread count (the run's ``train.num_threads``) and trains exactly what the serial benchmark would: the same
configuration, seeds and data, so the tables are bit-identical (a test compares them). MMANet-family runs
that share a teacher get it first: the distinct shared teachers are trained in parallel, then the runs.

A run that fails is reported with its log (``OUT/worker_logs/<label>_seed<k>.log``: the worker's output)
and does not stop the others; the driver raises :class:`RunsFailedError` naming the missing cells after
the others finished (rerunning the command reuses the finished runs and retries the failed ones).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmanet.errors import MMANetError

__all__ = ["WORKER_LOGS", "Job", "LocalExecutor", "ParallelError", "RayExecutor", "RunsFailedError", "run_jobs"]

#: the folder of the workers' logs in a benchmark's output directory
WORKER_LOGS = "worker_logs"


class ParallelError(MMANetError):
    """An executor that cannot start: Ray missing, a cluster out of reach, more GPUs per run than it has."""


class RunsFailedError(MMANetError):
    """Some runs of a parallel benchmark failed (the others finished and are kept)."""


@dataclass(frozen=True)
class Job:
    """One unit of work: train (or reuse) ``run_dir`` with ``config`` (a dumped RunConfig)."""

    name: str
    config: dict[str, Any]
    run_dir: Path
    log: Path
    overwrite: bool = False
    #: "run" (a benchmark run) or "teacher" (a shared teacher: the config is the student's)
    kind: str = "run"
    teachers_dir: Path | None = None
    #: the name of the job this one waits for (a run's shared teacher); None: it can start at once
    after: str | None = None
    #: the driver's working directory (relative data paths are read from it, wherever the worker starts)
    cwd: str | None = None


#: per worker process, the data bundles already loaded (keyed by the data section): a worker that trains several
#: runs of one benchmark loads its data once
_BUNDLES: dict[str, Any] = {}


def _bundle(config):
    import json

    from mmanet.training.factory import load_bundle

    key = json.dumps(config.data.model_dump(mode="json"), sort_keys=True)
    if key not in _BUNDLES:
        _BUNDLES[key] = load_bundle(config)
    return _BUNDLES[key]


def _work(job: Job) -> str | None:
    """In a worker process: the job, its output to ``job.log``; None on success, else the error (one line)."""
    import sys

    if job.cwd is not None:
        os.chdir(job.cwd)
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with job.log.open("a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            import torch

            from mmanet.config import resolve_run_config

            config = resolve_run_config(job.config, source=f"benchmark job {job.name}")
            torch.set_num_threads(config.train.num_threads or 1)
            bundle = _bundle(config)
            if job.kind == "teacher":
                from mmanet.training.shared_teacher import share_teacher

                assert job.teachers_dir is not None
                share_teacher(config, job.teachers_dir, bundle, job.overwrite)
            else:
                from mmanet.benchmark import run_or_reuse

                run_or_reuse(config, job.run_dir, bundle, job.overwrite)
            return None
        except BaseException as err:  # reported by the driver; the other runs go on
            traceback.print_exc(file=sys.stderr)
            return f"{type(err).__name__}: {err}".splitlines()[0]


class LocalExecutor:
    """``workers`` spawned processes on this machine (a clean interpreter each)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> LocalExecutor:
        # spawn: never the driver forked (its thread pools are not fork-safe); a fork server that preloads the
        # training stack measured slower here
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._pool is not None
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, job: Job) -> Any:
        assert self._pool is not None
        return self._pool.submit(_work, job)

    def wait(self, handles: list[Any]) -> list[Any]:
        finished, _ = wait(handles, return_when=FIRST_COMPLETED)
        return list(finished)

    def result(self, handle: Any) -> str | None:
        return handle.result()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A TCP connection to ``host:port`` (or ``ray://host:port``) within ``timeout`` s; Ray itself would retry for
    minutes. ``auto`` (the cluster of this machine, RAY_ADDRESS) is left to Ray."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ParallelError(f"--address {address!r} is not host:port or ray://host:port (or auto)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ParallelError(
            f"cannot reach the Ray cluster at {address}: {err.strerror or err} (is its head node started, "
            "e.g. ray start --head, and the port open?)"
        ) from None


class RayExecutor:
    """Each job a Ray task needing one CPU (and ``gpus_per_run`` GPUs) — on the cluster at ``address``, or on a
    local Ray instance with ``workers`` CPUs. The run directories must be on a file system every node sees."""

    name = "ray"

    def __init__(self, workers: int, address: str | None = None, gpus_per_run: float = 0.0) -> None:
        self.workers, self.address, self.gpus_per_run = workers, address, gpus_per_run
        self._remote: Any = None

    def __enter__(self) -> RayExecutor:
        try:
            import ray
        except ImportError:
            raise ParallelError(
                "--executor ray needs Ray: pip install 'mmanet[cluster]' (or pip install ray)"
            ) from None
        if self.address:
            _check_reachable(self.address)
        try:
            if self.address:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
        except Exception as err:  # ConnectionError, RuntimeError, ValueError … depending on what failed
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ParallelError(f"cannot start or reach {where}: {reason}") from None
        gpus = ray.cluster_resources().get("GPU", 0.0)
        if self.gpus_per_run > gpus:
            ray.shutdown()
            raise ParallelError(
                f"--gpus-per-run {self.gpus_per_run:g} is more than the {gpus:g} GPU(s) the Ray cluster has"
            )
        self._remote = ray.remote(num_cpus=1, num_gpus=self.gpus_per_run)(_work)
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        ray.shutdown()

    def submit(self, job: Job) -> Any:
        return self._remote.remote(job)

    def wait(self, handles: list[Any]) -> list[Any]:
        import ray

        finished, _ = ray.wait(handles, num_returns=1)
        return list(finished)

    def result(self, handle: Any) -> str | None:
        import ray

        return ray.get(handle)


def _priority(job: Job) -> int:
    """Which ready job a free worker takes first: shared teachers (others wait for them), then the runs that
    waited for one (the distillation runs, the longest), then the rest — so that the long runs do not end up
    alone at the tail while a worker idles."""
    return 0 if job.kind == "teacher" else 1 if job.after is not None else 2


def run_jobs(
    jobs: Sequence[Job],
    executor: LocalExecutor | RayExecutor,
    say: Callable[[str], None],
    ready: Callable[[Job], Job] | None = None,
) -> dict[str, str]:
    """Run ``jobs`` on ``executor`` (entered), at most its ``workers`` at once; returns ``{job name: error}`` for
    those that failed.

    A job with ``after`` becomes ready once that job finished, after ``ready(job)`` completed it (a run pointed at
    the teacher just trained); when that job failed, it fails too without running. A free worker takes the ready
    job of the highest :func:`_priority` (in the order given among equals)."""
    if not jobs:
        return {}
    failed: dict[str, str] = {}
    waiting = [job for job in jobs if job.after is not None]
    queue = [job for job in jobs if job.after is None]
    start = time.perf_counter()
    pending: dict[Any, Job] = {}
    done = 0

    def fill() -> None:
        while queue and len(pending) < executor.workers:
            job = min(queue, key=_priority)
            queue.remove(job)
            pending[executor.submit(job)] = job

    fill()
    while pending:
        for handle in executor.wait(list(pending)):
            job = pending.pop(handle)
            done += 1
            try:
                error = executor.result(handle)
            except Exception as err:  # the worker process itself died
                error = f"the worker died ({type(err).__name__}: {str(err).strip().splitlines()[-1:]})"
            if error is not None:
                failed[job.name] = f"{error} (log: {job.log})"
            for follower in [w for w in waiting if w.after == job.name]:
                waiting.remove(follower)
                if error is not None:
                    failed[follower.name] = f"its shared teacher failed ({failed[job.name]})"
                    done += 1
                    continue
                try:
                    queue.append(ready(follower) if ready is not None else follower)
                except MMANetError as err:
                    failed[follower.name] = str(err)
                    done += 1
            fill()
            elapsed = time.perf_counter() - start
            eta = elapsed / done * (len(jobs) - done)
            status = "done" if error is None else f"FAILED ({error}; log: {job.log})"
            say(
                f"[{done}/{len(jobs)}] {job.name}: {status} — {len(pending)} running, {len(queue) + len(waiting)} "
                f"waiting, {elapsed:.0f} s elapsed, about {eta:.0f} s to go"
            )
    return failed
