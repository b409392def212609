"""Issue 25: ``mmanet benchmark --workers N`` runs the grid in parallel processes and reports exactly what the
serial benchmark reports; a failed run does not stop the others; bad --workers is refused before anything runs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mmanet.cli import app
from tests_helpers import write_yaml

runner = CliRunner()


def bench_file(tmp_path, extra_methods=()):
    from conftest import tiny_raw

    base = tiny_raw("sf_md", train={"max_epochs": 2, "progress_bar": False}, teacher={"max_epochs": 1})
    base["mar"] = {"warmup_epochs": 1}
    base.pop("method")
    methods = [{"label": "SF-MD", "method": "sf_md"}, {"label": "MMANet", "method": "mmanet"}, *extra_methods]
    return write_yaml(tmp_path / "bench.yaml", {"name": "p", "seeds": 2, "base": base, "methods": methods})


@pytest.fixture(scope="module")
def serial_and_parallel(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    bench = bench_file(root)
    serial = runner.invoke(app, ["benchmark", str(bench), "--out", str(root / "serial")])
    assert serial.exit_code == 0, serial.output
    parallel = runner.invoke(app, ["benchmark", str(bench), "--out", str(root / "parallel"), "--workers", "2"])
    assert parallel.exit_code == 0, parallel.output
    return root, parallel.output


def test_the_parallel_report_is_the_serial_one(serial_and_parallel):
    root, output = serial_and_parallel
    for name in ("table.csv", "results_long.csv", "ablation.csv"):
        if (root / "serial" / name).exists():
            assert (root / "parallel" / name).read_text() == (root / "serial" / name).read_text(), name
    assert json.loads((root / "parallel" / "summary.json").read_text()) == json.loads(
        (root / "serial" / "summary.json").read_text()
    )
    # the two seeds' teachers were trained once each, in parallel, before the runs
    assert "[6/6]" in output and output.count(": done") == 6  # 2 teachers and 4 runs
    assert len(list((root / "parallel" / "shared_teachers").iterdir())) == 2
    assert (root / "parallel" / "worker_logs" / "MMANet_seed1.log").read_text().count("── deployment network") == 1


def test_a_failed_run_leaves_the_others_and_is_named(tmp_path):
    bench = bench_file(
        tmp_path, [{"label": "Broken", "method": "sf_md", "set": {"train.lr": 10.0, "train.optimizer": "sgd"}}]
    )
    result = runner.invoke(app, ["benchmark", str(bench), "--out", str(tmp_path / "out"), "--workers", "2"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "2 run(s) failed" in text and "Broken seed 0" in text, result.output
    assert "Broken_seed0.log" in text
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Missing runs" in report and "Broken seed 1" in report
    assert (tmp_path / "out" / "SF-MD" / "seed_1" / "results.json").exists()


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_bad_workers_are_refused_before_anything_runs(tmp_path, workers):
    out = tmp_path / "out"
    result = runner.invoke(app, ["benchmark", str(bench_file(tmp_path)), "--out", str(out), "--workers", workers])
    assert result.exit_code == 2 and "--workers must be at least 1" in result.output and not out.exists()


def test_ray_on_a_local_instance_gives_the_serial_report(serial_and_parallel):
    pytest.importorskip("ray")
    root, _ = serial_and_parallel
    out = root / "ray"
    bench = root / "bench.yaml"
    result = runner.invoke(app, ["benchmark", str(bench), "--out", str(out), "--executor", "ray", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert (out / "table.csv").read_text() == (root / "serial" / "table.csv").read_text()
    assert json.loads((out / "summary.json").read_text()) == json.loads((root / "serial" / "summary.json").read_text())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--executor", "ray", "--address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
        (["--executor", "ray", "--address", "nonsense"], "is not host:port"),
        (["--executor", "ray", "--gpus-per-run", "64"], "more than the 0 GPU(s) the Ray cluster has"),
        (["--executor", "slurm"], "is not an executor"),
        (["--address", "head:6379"], "give it with --executor ray"),
        (["--gpus-per-run", "1"], "with --executor ray"),
    ],
)
def test_bad_cluster_options_are_refused_before_any_run(tmp_path, options, message):
    if "--executor" in options and options[options.index("--executor") + 1] == "ray":
        pytest.importorskip("ray")
    out = tmp_path / "out"
    result = runner.invoke(app, ["benchmark", str(bench_file(tmp_path)), "--out", str(out), *options])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not out.exists()


def test_the_scheduler_runs_teachers_first_then_their_runs_never_more_than_the_workers(tmp_path):
    """run_jobs with a fake executor: the order a free worker takes ready jobs, the limit, a failed teacher."""
    from mmanet.parallel import Job, run_jobs

    class Fake:
        workers = 2

        def __init__(self):
            self.started, self.running, self.most = [], [], 0

        def submit(self, job):
            self.started.append(job.name)
            self.running.append(job.name)
            self.most = max(self.most, len(self.running))
            return job.name

        def wait(self, handles):
            first = self.running[0]  # the oldest finishes first
            self.running.remove(first)
            return [first]

        def result(self, handle):
            return "boom" if handle == "t1" else None

    def job(name, kind="run", after=None):
        return Job(name, {}, tmp_path / name, tmp_path / f"{name}.log", kind=kind, after=after)

    jobs = [
        job("a"),
        job("b"),
        job("t0", "teacher"),
        job("t1", "teacher"),
        job("m0", after="t0"),
        job("m1", after="t1"),
    ]
    fake = Fake()
    failed = run_jobs(jobs, fake, lambda message: None)
    assert fake.started == ["t0", "t1", "m0", "a", "b"] and fake.most == 2
    assert set(failed) == {"t1", "m1"} and "its shared teacher failed" in failed["m1"]
