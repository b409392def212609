"""Issue 24, the command's messages: the wrong kind of config, stage headings and resume, reuse, status lines,
predict's output directory, and what TensorBoard gets."""

from __future__ import annotations

import csv

import yaml
from typer.testing import CliRunner

from mmanet.cli import app
from tests_helpers import write_yaml

runner = CliRunner()


def test_a_benchmark_file_given_to_train_and_the_reverse():
    result = runner.invoke(app, ["train", "configs/mfeat/benchmark.yaml"])
    assert result.exit_code == 2
    assert "is a benchmark configuration (it lists methods:)" in result.output and "mmanet benchmark" in result.output
    assert result.output.count("unknown key") == 0
    result = runner.invoke(app, ["benchmark", "configs/mfeat/sf_md.yaml"])
    assert result.exit_code == 2 and "is a run configuration" in result.output and "mmanet train" in result.output


def test_stage_headings_hparams_and_per_combination_logs(tmp_path):
    from conftest import tiny_raw

    raw = tiny_raw("mmanet", train={"max_epochs": 2, "progress_bar": False}, teacher={"max_epochs": 1})
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(write_yaml(tmp_path / "c.yaml", raw)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"── teacher (complete samples) → {out / 'teacher'}" in result.output
    assert f"── deployment network (mmanet) → {out}" in result.output
    hparams = yaml.safe_load((out / "tb" / "version_0" / "hparams.yaml").read_text())
    assert hparams["train.max_epochs"] == 2 and hparams["method"] == "mmanet"
    with (out / "logs" / "version_0" / "metrics.csv").open() as fh:
        header = next(csv.reader(fh))
    assert {"val_combination/a", "val_combination/a+b+c"} <= set(header)


def test_a_resumed_stage_says_from_which_epoch(tiny_config, tmp_path):
    from mmanet.training import run
    from mmanet.training.fit import stage_heading

    cfg = tiny_config("sf_md", train__max_epochs=2)
    run(cfg, tmp_path / "run")
    line = stage_heading(cfg, None, tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt", 5)
    assert line.endswith("(2 of 5 epochs done)") and "resuming from" in line


def test_a_rerun_benchmark_says_the_runs_were_reused(tmp_path):
    from conftest import tiny_raw

    base = tiny_raw("sf_md", train={"max_epochs": 1, "progress_bar": False})
    base.pop("method")
    bench = write_yaml(tmp_path / "b.yaml", {"name": "b", "seeds": 1, "base": base, "methods": [{"method": "sf_md"}]})
    first = runner.invoke(app, ["benchmark", str(bench), "--out", str(tmp_path / "out")])
    assert first.exit_code == 0 and "reused" not in first.output
    again = runner.invoke(app, ["benchmark", str(bench), "--out", str(tmp_path / "out")])
    assert again.exit_code == 0 and "(reused: finished earlier with this configuration)" in " ".join(
        again.output.split()
    )


def test_status_lines_and_predict_creates_its_output_directory(tmp_path):
    import numpy as np

    from conftest import tiny_raw

    raw = tiny_raw("sf_md", train={"max_epochs": 1, "progress_bar": False})
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", str(write_yaml(tmp_path / "c.yaml", raw)), "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["evaluate", str(out)])
    assert (
        result.exit_code == 0
        and "evaluating" in result.output
        and "every combination of the test split" in result.output
    )
    np.savez(tmp_path / "x.npz", a=np.zeros((2, 8), np.float32))
    target = tmp_path / "new" / "deeper" / "p.jsonl"
    result = runner.invoke(app, ["predict", str(out), "--input", str(tmp_path / "x.npz"), "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert "predicting with" in result.output and len(target.read_text().splitlines()) == 2
