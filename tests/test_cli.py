"""The `mmanet` command through typer's test runner: outputs, files and clear errors."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from typer.testing import CliRunner

from mmanet.cli import app
from tests_helpers import write_yaml

runner = CliRunner()


def test_train_then_evaluate(tmp_path, tiny_config):
    from conftest import tiny_raw

    cfg = write_yaml(tmp_path / "cfg.yaml", tiny_raw("sf_md", train={"max_epochs": 1, "progress_bar": False}))
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(cfg), "--out", str(out), "--set", "train.lr=0.005"])
    assert result.exit_code == 0, result.output
    assert "Average" in result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["lr"] == 0.005
    with (out / "per_combination.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:4] == ["a", "b", "c", "combination"] and rows[-1][3] == "Average"
    result = runner.invoke(app, ["evaluate", str(out / "checkpoints" / "best.ckpt"), "--split", "val"])
    assert result.exit_code == 0, result.output
    assert (out / "eval_val" / "per_combination.md").exists()
    # issue 23: with an availability, the model's expected error (Σ_c P(c)·error(c) of its table) and deployment files
    result = runner.invoke(app, ["evaluate", str(out), "--split", "val", "--availability", "a=0.5,c=0.8"])
    assert result.exit_code == 0, result.output
    with (out / "eval_val" / "per_combination.csv").open() as fh:
        error = {r["combination"]: float(r["error"]) for r in csv.DictReader(fh)}
    p = {"a": 0.5, "b": 1.0, "c": 0.8}  # b always there: only combinations with b have a probability
    by_hand = sum(
        (p["a"] if "a" in name else 1 - p["a"]) * (p["c"] if "c" in name else 1 - p["c"]) * error[name]
        for name in ("b", "a+b", "b+c", "a+b+c")
    )
    deployment = json.loads((out / "eval_val" / "deployment.json").read_text())
    assert deployment["methods"]["model"]["expected"]["mean"] == pytest.approx(by_hand, abs=0.01)
    assert (out / "eval_val" / "deployment.md").read_text().startswith("# Which model to deploy")
    result = runner.invoke(app, ["evaluate", str(out), "--availability", "a=2"])
    assert result.exit_code == 2 and "probability in (0, 1]" in result.output


def test_config_typo_is_a_clear_error(tmp_path):
    cfg = write_yaml(tmp_path / "cfg.yaml", {"method": "sf_md", "trian": {"lr": 1}})
    result = runner.invoke(app, ["train", str(cfg)])
    assert result.exit_code == 2
    assert "unknown key 'trian'" in result.output and "did you mean 'train'" in result.output


def test_bad_override_value_names_the_key(tmp_path):
    cfg = write_yaml(tmp_path / "cfg.yaml", {"method": "sf_md"})
    result = runner.invoke(app, ["train", str(cfg), "--set", "train.max_epochs=-3"])
    assert result.exit_code == 2 and "train.max_epochs" in result.output


def test_unknown_method_and_dataset(tmp_path):
    result = runner.invoke(app, ["train", str(write_yaml(tmp_path / "a.yaml", {"method": "nope"}))])
    assert result.exit_code == 2 and "unknown method 'nope'" in result.output and "sf_md" in result.output
    bad = write_yaml(tmp_path / "b.yaml", {"method": "sf_md", "data": {"name": "imagenet"}})
    result = runner.invoke(app, ["train", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "unknown dataset 'imagenet'" in result.output and "mfeat" in result.output


def test_missing_config_and_corrupt_checkpoint(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00garbage")
    result = runner.invoke(app, ["evaluate", str(bad)])
    assert result.exit_code == 2 and "corrupt" in result.output


def test_datasets_lists_availability():
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0
    for name in ("mfeat", "npz", "toy"):
        assert name in result.output


def test_benchmark_command(tmp_path):
    from conftest import tiny_raw

    base = tiny_raw("sf_md", train={"max_epochs": 1, "progress_bar": False})
    base.pop("method")
    bench = {
        "name": "tiny",
        "seeds": 1,
        "base": base,
        "methods": [{"label": "SF-MD", "method": "sf_md"}, {"label": "HeMIS", "method": "hemis"}],
    }
    cfg = write_yaml(tmp_path / "bench.yaml", bench)
    result = runner.invoke(app, ["benchmark", str(cfg), "--out", str(tmp_path / "b"), "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "report.md").exists() and (tmp_path / "b" / "table.csv").exists()
    result = runner.invoke(app, ["benchmark", str(cfg), "--only", "nope"])
    assert result.exit_code == 2 and "not a method label" in result.output


def test_export_command(tmp_path):
    from conftest import tiny_raw

    cfg = write_yaml(tmp_path / "cfg.yaml", tiny_raw("sf_md", train={"max_epochs": 1, "progress_bar": False}))
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", str(cfg), "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "model.onnx")])
    assert result.exit_code == 0, result.output
    assert "parity over 7 combinations" in result.output
    assert (tmp_path / "model.onnx").stat().st_size > 0


def test_evaluate_customized_models_under_an_availability(tmp_path):
    """An SF run directory (one model per combination): the availability may only need the combinations it has."""
    from conftest import tiny_raw

    raw = tiny_raw("sf", train={"max_epochs": 1, "progress_bar": False}, customized={"combinations": ["a+b+c", "a+b"]})
    out = tmp_path / "sf"
    result = runner.invoke(app, ["train", str(write_yaml(tmp_path / "sf.yaml", raw)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(out), "--split", "val", "--availability", "c=0.25"])
    assert result.exit_code == 0, result.output
    with (out / "eval_val" / "per_combination.csv").open() as fh:
        error = {r["combination"]: float(r["error"]) for r in csv.DictReader(fh)}
    deployment = json.loads((out / "eval_val" / "deployment.json").read_text())
    assert deployment["methods"]["model"]["expected"]["mean"] == pytest.approx(
        0.25 * error["a+b+c"] + 0.75 * error["a+b"], abs=0.01
    )
    assert "shapley" not in deployment["methods"]["model"] and "every combination" in deployment["shapley_note"]
    result = runner.invoke(
        app, ["evaluate", str(out), "--split", "val", "--availability", "a=0.5", "--out", str(tmp_path / "e")]
    )
    assert result.exit_code == 2 and "has no row for 'b+c'" in " ".join(result.output.split())
    assert not (tmp_path / "e" / "per_combination.csv").exists()
