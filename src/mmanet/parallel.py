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
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmanet.errors import MMANetError

__all__ = ["WORKER_LOGS", "Job", "RunsFailedError", "run_jobs"]

#: the folder of the workers' logs in a benchmark's output directory
WORKER_LOGS = "worker_logs"


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


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    say: Callable[[str], None],
    ready: Callable[[Job], Job] | None = None,
) -> dict[str, str]:
    """Run ``jobs`` on ``workers`` processes; returns ``{job name: error}`` for those that failed.

    A job with ``after`` starts once that job finished, after ``ready(job)`` completed it (a run pointed at
    the teacher just trained); when that job failed, it fails too without running."""
    if not jobs:
        return {}
    failed: dict[str, str] = {}
    waiting = [job for job in jobs if job.after is not None]
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # (forkserver with a preloaded stack measured slower here)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: dict[Future, Job] = {pool.submit(_work, job): job for job in jobs if job.after is None}
        done = 0
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                done += 1
                try:
                    error = future.result()
                except Exception as err:  # the worker process itself died
                    error = f"the worker died ({type(err).__name__}: {err})"
                if error is not None:
                    failed[job.name] = f"{error} (log: {job.log})"
                for follower in [w for w in waiting if w.after == job.name]:
                    waiting.remove(follower)
                    if error is not None:
                        failed[follower.name] = f"its shared teacher failed ({failed[job.name]})"
                        done += 1
                        continue
                    try:
                        follower = ready(follower) if ready is not None else follower
                    except MMANetError as err:
                        failed[follower.name] = str(err)
                        done += 1
                        continue
                    pending[pool.submit(_work, follower)] = follower
                elapsed = time.perf_counter() - start
                eta = elapsed / done * (len(jobs) - done)
                status = "done" if error is None else f"FAILED ({error}; log: {job.log})"
                say(
                    f"[{done}/{len(jobs)}] {job.name}: {status} — {len(pending)} running or queued, "
                    f"{elapsed:.0f} s elapsed, about {eta:.0f} s to go"
                )
    return failed
