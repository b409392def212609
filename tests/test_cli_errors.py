"""Issue 12 cases 9, 11 and 12 end to end: every bad path or file is a clear message with exit code 2.

Read-only places are simulated (the tests may run as root, who can write anywhere): creating a
file in them raises ``PermissionError`` as the operating system would.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmanet.cli import app
from tests_helpers import write_yaml

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import tiny_raw

    root = tmp_path_factory.mktemp("cli_errors")
    cfg = write_yaml(root / "cfg.yaml", tiny_raw("sf_md", train={"max_epochs": 1, "progress_bar": False}))
    assert invoke("train", cfg, "--out", root / "run").exit_code == 0
    return root, cfg


@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """A directory in which no file can be created."""
    place = tmp_path / "read_only"
    place.mkdir()
    original = tempfile.TemporaryFile

    def refuse(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
        if dir is not None and Path(dir).resolve().is_relative_to(place.resolve()):
            raise PermissionError(13, "Permission denied")
        return original(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    return place


def test_train_out_on_a_read_only_path_or_a_file(trained, read_only):
    root, cfg = trained
    result = invoke("train", cfg, "--out", read_only / "new")
    assert result.exit_code == 2 and "Permission denied" in result.output and "--out" in result.output
    (root / "file.txt").write_text("x")
    result = invoke("train", cfg, "--out", root / "file.txt")
    assert result.exit_code == 2 and "is an existing file, not a directory" in result.output


def test_evaluate_on_a_read_only_run_says_where_else_to_write(trained, read_only, tmp_path):
    root, _ = trained
    shutil.copytree(root / "run", read_only / "run")
    result = invoke("evaluate", read_only / "run")
    assert result.exit_code == 2
    assert f"cannot write to {read_only / 'run' / 'eval_test'} (Permission denied); pass --out" in result.output
    result = invoke("evaluate", read_only / "run", "--out", tmp_path / "elsewhere")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "per_combination.csv").is_file()


def test_export_out_errors_and_opset(trained, read_only, tmp_path):
    root, _ = trained
    result = invoke("export", root / "run", "--out", read_only / "m.onnx")
    assert result.exit_code == 2 and "is not writable; pass --out" in result.output
    result = invoke("export", root / "run", "--out", tmp_path)
    assert result.exit_code == 2 and f"--out {tmp_path} is a directory; pass a file name" in result.output
    result = invoke("export", root / "run", "--out", tmp_path / "m.onnx", "--opset", "3")
    assert result.exit_code == 2 and "--opset 3 is not an ONNX opset this exporter supports" in result.output
    assert not list(tmp_path.glob("m.*"))  # nothing half-written


def test_broken_values_and_config_files(trained, tmp_path):
    root, cfg = trained
    result = invoke("train", cfg, "--set", "train.lr={[:", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "is not valid YAML" in result.output and "Traceback" not in result.output
    result = invoke("train", cfg, "--set", "train.max_epochs=true", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "must be an integer, not a boolean" in result.output
    result = invoke("train", tmp_path)
    assert result.exit_code == 2 and "is a directory" in result.output and "does not exist" not in result.output
    (tmp_path / "empty.yaml").write_text("")
    result = invoke("train", tmp_path / "empty.yaml")
    assert result.exit_code == 2 and "is empty" in result.output


def test_a_garbled_saved_config_is_named(trained, tmp_path):
    root, cfg = trained
    shutil.copytree(root / "run", tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text("train: {lr: [unclosed\n")
    result = invoke("train", cfg, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "config.yaml is not valid YAML (damaged?)" in result.output and "--overwrite" in result.output


def test_an_npz_with_an_impossible_header_is_named(tmp_path):
    import io
    import zipfile

    data = tmp_path / "data"
    data.mkdir()
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**40, 4)})
    for split in ("train", "test"):
        with zipfile.ZipFile(data / f"{split}.npz", "w") as archive:
            archive.writestr("x.npy", header.getvalue() + b"\0" * 32)
    cfg = write_yaml(tmp_path / "cfg.yaml", {"method": "sf_md", "data": {"name": "npz", "root": str(data)}})
    result = invoke("train", cfg, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "is damaged: its header claims shape (1099511627776, 4)" in result.output


def test_commands_on_directories_without_a_model_say_what_they_are(trained, tmp_path):
    root, _ = trained
    sf = tmp_path / "sf_run"
    shutil.copytree(root / "run" / "checkpoints", sf / "sf" / "a+b" / "checkpoints")
    (sf / "config.yaml").write_text("method: sf\n")
    for command in ("export", "predict"):
        result = invoke(command, sf, "--input", "x.npz") if command == "predict" else invoke(command, sf)
        assert result.exit_code == 2 and "is a customized (SF) run" in result.output, result.output
        assert f"{sf / 'sf' / 'a+b'}" in result.output
    for command in ("evaluate", "export"):
        result = invoke(command, tmp_path / "sf_run" / "sf")
        assert result.exit_code == 2 and "is not an mmanet run directory" in result.output
        assert "best.ckpt does not exist" not in result.output
