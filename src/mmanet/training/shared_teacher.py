"""One teacher per (teacher configuration, seed), trained once and shared by every MMANet-family run.

A benchmark's +SP, +MAD, +SR and MMANet rows of one seed, and a tuning study's trials of one seed,
would each train the very same teacher (the teacher stage depends on the data, the model, the
training settings and the seed — not on the student's MAD, MAR or KD settings). :func:`share_teacher`
trains it once under ``teachers_dir/seed_<seed>_<key>`` (``key``: a hash of the teacher stage's
configuration) and points the run at its checkpoint; a later run finds it there. The deployment
run is the one it would have been with its own teacher (same weights: same configuration and seed).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mmanet.config import RunConfig
from mmanet.data import DataBundle

#: the folder of a benchmark's output directory that holds its shared teachers (not a method label)
BENCHMARK_TEACHERS = "shared_teachers"

#: sections of a run configuration that the teacher stage does not read
STUDENT_ONLY = ("mad", "mar", "kd", "cmad", "name")


def teacher_key(config: RunConfig) -> str:
    """A short hash of the teacher stage's configuration (what makes two teachers the same)."""
    from mmanet.training.fit import teacher_stage_config

    teacher_cfg = teacher_stage_config(config)
    relevant = {k: v for k, v in teacher_cfg.model_dump(mode="json").items() if k not in STUDENT_ONLY}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def shared_teacher_dir(config: RunConfig, teachers_dir: Path) -> Path:
    """Where the shared teacher of ``config``'s teacher configuration and seed lives."""
    return Path(teachers_dir) / f"seed_{config.seed}_{teacher_key(config)}"


def _pointed_at(config: RunConfig, best: Path) -> RunConfig:
    """``config`` with ``teacher.checkpoint`` = ``best`` and ``teacher.sha256`` = its content hash: runs compare
    their teacher by content, so a benchmark or study moved elsewhere keeps its runs (the path changes)."""
    from mmanet.deploy.checkpoint import model_hash_of_checkpoint

    update = {"checkpoint": str(best), "sha256": model_hash_of_checkpoint(best)}
    return config.model_copy(update={"teacher": config.teacher.model_copy(update=update)})


def stale_shared_teacher(config: RunConfig, teachers_dir: Path) -> Path | None:
    """The directory of ``config``'s shared teacher when it finished training on data that has changed since
    (None: no such teacher, or its data is unchanged)."""
    from mmanet.training.run_dir import data_changed

    if config.stage != "mmanet" or config.teacher.checkpoint:
        return None
    teacher_dir = shared_teacher_dir(config, teachers_dir)
    if not (teacher_dir / "results.json").is_file():
        return None
    return teacher_dir if data_changed(teacher_dir, config) is not None else None


def trained_shared_teacher(config: RunConfig, teachers_dir: Path) -> RunConfig | None:
    """``config`` pointed at its shared teacher when that has finished training on the data as it is now
    (None otherwise)."""
    teacher_dir = shared_teacher_dir(config, teachers_dir)
    best = teacher_dir / "checkpoints" / "best.ckpt"
    if config.stage != "mmanet" or not (teacher_dir / "results.json").is_file() or not best.is_file():
        return None
    if stale_shared_teacher(config, teachers_dir) is not None:
        return None
    return _pointed_at(config, best)


def share_teacher(config: RunConfig, teachers_dir: Path, bundle: DataBundle, overwrite: bool = False) -> RunConfig:
    """``config`` pointed at the shared teacher of its teacher configuration and seed (trained here if
    it is not there yet), by path and content hash; configurations without a teacher stage, or with
    their own ``teacher.checkpoint``, are returned as they are. A teacher trained on data that has
    changed since is trained again only with ``overwrite`` (else the run directory refuses it)."""
    from mmanet.training.fit import teacher_stage_config
    from mmanet.training.runner import run

    if config.stage != "mmanet" or config.teacher.checkpoint:
        return config
    teacher_dir = shared_teacher_dir(config, teachers_dir)
    stale = stale_shared_teacher(config, teachers_dir) is not None
    if stale or not (teacher_dir / "results.json").is_file():  # new, or interrupted: a run directory resumes
        run(teacher_stage_config(config), teacher_dir, overwrite=stale and overwrite, bundle=bundle)
    return _pointed_at(config, teacher_dir / "checkpoints" / "best.ckpt")
