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
STUDENT_ONLY = ("mad", "mar", "kd", "name")


def teacher_key(config: RunConfig) -> str:
    """A short hash of the teacher stage's configuration (what makes two teachers the same)."""
    from mmanet.training.fit import teacher_stage_config

    teacher_cfg = teacher_stage_config(config)
    relevant = {k: v for k, v in teacher_cfg.model_dump(mode="json").items() if k not in STUDENT_ONLY}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def share_teacher(config: RunConfig, teachers_dir: Path, bundle: DataBundle) -> RunConfig:
    """``config`` pointed at the shared teacher of its teacher configuration and seed (trained here if
    it is not there yet); configurations without a teacher stage, or with their own
    ``teacher.checkpoint``, are returned as they are."""
    from mmanet.training.fit import teacher_stage_config
    from mmanet.training.runner import run

    if config.stage != "mmanet" or config.teacher.checkpoint:
        return config
    teacher_dir = Path(teachers_dir) / f"seed_{config.seed}_{teacher_key(config)}"
    best = teacher_dir / "checkpoints" / "best.ckpt"
    if not (teacher_dir / "results.json").is_file():  # new, or interrupted: a run directory resumes
        run(teacher_stage_config(config), teacher_dir, bundle=bundle)
    return config.model_copy(update={"teacher": config.teacher.model_copy(update={"checkpoint": str(best)})})
