"""Benchmarks share one teacher per (teacher configuration, seed): trained once, and the deployment runs
are bit-identical to runs that train their own teacher."""

from __future__ import annotations

import csv

from conftest import tiny_raw
from mmanet.benchmark import run_benchmark
from mmanet.benchmark_config import BenchmarkConfig
from mmanet.training.shared_teacher import BENCHMARK_TEACHERS, teacher_key


def _bench(share: bool) -> BenchmarkConfig:
    base = tiny_raw("sf_md", train={"max_epochs": 3, "lr": 0.01, "progress_bar": False})
    base.pop("method")
    return BenchmarkConfig.model_validate(
        {
            "name": "tiny",
            "seeds": 1,
            "base": base,
            "methods": [
                {"label": "+MAD", "method": "mad"},
                {"label": "MMANet", "method": "mmanet", "set": {"mar.beta": 0.5}},  # other student settings
            ],
            "share_teachers": share,
        }
    )


def _table(path) -> list[list[str]]:
    with path.open() as fh:
        return list(csv.reader(fh))


def test_one_teacher_per_seed_and_the_same_results_as_own_teachers(tmp_path):
    shared, own = tmp_path / "shared", tmp_path / "own"
    run_benchmark(_bench(True), shared)
    run_benchmark(_bench(False), own)
    teachers = sorted((shared / BENCHMARK_TEACHERS).iterdir())
    assert len(teachers) == 1 and (teachers[0] / "checkpoints" / "best.ckpt").is_file()
    assert not (shared / "+MAD" / "seed_0" / "teacher").exists()  # no teacher of its own
    assert (own / "+MAD" / "seed_0" / "teacher").is_dir() and (own / "MMANet" / "seed_0" / "teacher").is_dir()
    for label in ("+MAD", "MMANet"):
        assert _table(shared / label / "seed_0" / "per_combination.csv") == _table(
            own / label / "seed_0" / "per_combination.csv"
        ), label


def test_the_teacher_key_ignores_the_student_settings():
    from mmanet.config import resolve_run_config

    a = resolve_run_config(tiny_raw("mmanet", mad__alpha=3.0, mar__beta=0.1))
    b = resolve_run_config(tiny_raw("sp", kd__gamma=2.0))
    c = resolve_run_config(tiny_raw("mmanet", train__lr=0.02))
    assert teacher_key(a) == teacher_key(b) != teacher_key(c)
