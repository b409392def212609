"""Versions on everything mmanet writes (issue 24): --version, python -m mmanet, the stamp in checkpoints,
exports, model cards and results.json (validated against its JSON Schema), and newer schemas refused."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import jsonschema
import pytest
from typer.testing import CliRunner

from mmanet import __version__
from mmanet.cli import app
from mmanet.deploy.checkpoint import atomic_torch_save, load_checkpoint, read_checkpoint
from mmanet.training import run
from mmanet.versioning import SCHEMA_VERSION, SchemaError, check_schema


def results_schema() -> dict:
    return json.loads(resources.files("mmanet").joinpath("schemas/results.schema.json").read_text())


def test_version_flag_and_python_dash_m():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"mmanet {__version__} (file schema {SCHEMA_VERSION})"
    done = subprocess.run([sys.executable, "-m", "mmanet", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == result.output.strip()


def test_the_version_is_the_packages():
    from importlib.metadata import version

    assert version("mmanet") == __version__


@pytest.mark.parametrize("method", ["sf_md", "mmanet"])
def test_results_json_validates_against_its_schema(tiny_config, tmp_path, method):
    run(tiny_config(method, train__max_epochs=2, teacher__max_epochs=1, mar__warmup_epochs=1), tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    jsonschema.validate(summary, results_schema())
    assert summary["mmanet_version"] == __version__ and summary["schema_version"] == SCHEMA_VERSION
    assert set(summary["val"]["worst"][0]) == {"combination", "value"}
    bad = {**summary, "val": {**summary["val"], "worst": [["a", 1.0]]}}  # the schema-1 pairs are not schema 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, results_schema())
    meta = read_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt").metadata
    assert meta["mmanet_version"] == __version__ and meta["schema_version"] == SCHEMA_VERSION


def test_a_newer_schema_is_refused_and_an_unversioned_file_reads_as_schema_1(tiny_config, tmp_path):
    run(tiny_config("sf_md", train__max_epochs=1), tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / "best.ckpt"
    ckpt = load_checkpoint(path)
    ckpt["mmanet"]["schema_version"] = SCHEMA_VERSION + 1
    ckpt["mmanet"]["mmanet_version"] = "9.0.0"
    atomic_torch_save(ckpt, tmp_path / "newer.ckpt")
    with pytest.raises(SchemaError, match=r"written by mmanet 9\.0\.0 in schema 3; this mmanet .* upgrade"):
        read_checkpoint(tmp_path / "newer.ckpt")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "newer.ckpt")])
    assert result.exit_code == 2 and "upgrade mmanet" in result.output
    for key in ("schema_version", "mmanet_version"):
        del ckpt["mmanet"][key]
    atomic_torch_save(ckpt, tmp_path / "old.ckpt")
    assert read_checkpoint(tmp_path / "old.ckpt").config.name == read_checkpoint(path).config.name
    assert check_schema({}, "x") == 1
    with pytest.raises(SchemaError, match="invalid schema_version"):
        check_schema({"schema_version": "2"}, "x")


def test_exports_carry_the_versions(tiny_config, tmp_path):
    pytest.importorskip("onnxruntime")
    from mmanet.deploy.export import export_model
    from mmanet.deploy.weights import read_header

    run(tiny_config("sf_md", train__max_epochs=1), tmp_path / "run")
    result = export_model(tmp_path / "run")
    card = json.loads(result.card.read_text())
    assert card["mmanet_version"] == __version__ and card["schema_version"] == SCHEMA_VERSION
    header = read_header(result.safetensors)
    assert header["schema_version"] == SCHEMA_VERSION
