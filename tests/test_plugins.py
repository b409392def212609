"""Issue 24: a fusion defined in the user's own file trains, evaluates, exports and predicts through the
``mmanet`` command with ``--import``; the run records the file; ``mmanet list`` shows it; failures are clear."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mmanet.cli import app
from tests_helpers import write_yaml

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugins" / "gated_mean_fusion.py"


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    from conftest import tiny_raw

    root = tmp_path_factory.mktemp("plugin")
    plugin = root / "my_fusion.py"
    plugin.symlink_to(EXAMPLE)  # (one file per process: a second copy would register gated_mean twice)
    raw = tiny_raw("sf_md", train={"max_epochs": 2, "progress_bar": False})
    raw["model"]["fusion"] = {"type": "gated_mean", "temperature": 0.5}
    config = write_yaml(root / "cfg.yaml", raw)
    result = runner.invoke(app, ["train", str(config), "--out", str(root / "run"), "--import", str(plugin)])
    assert result.exit_code == 0, result.output
    return root, plugin


def test_train_evaluate_export_predict_with_a_user_fusion(plugin_run):
    root, plugin = plugin_run
    saved = yaml.safe_load((root / "run" / "config.yaml").read_text())
    assert saved["imports"] == [str(EXAMPLE)] and saved["model"]["fusion"]["type"] == "gated_mean"
    # the run recorded the file: no --import needed any more
    result = runner.invoke(app, ["evaluate", str(root / "run"), "--split", "val"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(root / "run")])
    assert result.exit_code == 0, result.output
    sample = {m: np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32) for m in ("a", "b")}
    np.savez(root / "sample.npz", **sample)
    for model in (root / "run", root / "run" / "checkpoints" / "best.onnx"):
        result = runner.invoke(app, ["predict", str(model), "--input", str(root / "sample.npz")])
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
        assert len(lines) == 3 and lines[0]["present"] == ["a", "b"]


def test_mmanet_list_shows_the_user_fusion_with_its_options():
    result = runner.invoke(app, ["list", "fusions", "--import", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "gated_mean" in result.output and "temperature=1.0" in result.output
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0 and all(k in result.output for k in ("methods", "encoders", "heads", "datasets"))


def test_a_missing_plugin_is_a_clear_error(plugin_run, tmp_path):
    root, plugin = plugin_run
    moved = tmp_path / "run"
    shutil.copytree(root / "run", moved)
    saved = yaml.safe_load((moved / "config.yaml").read_text())
    gone = str(tmp_path / "gone.py")
    saved["imports"] = [gone]
    result = runner.invoke(app, ["train", str(write_yaml(tmp_path / "c.yaml", saved)), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "gone.py does not exist" in result.output and "Traceback" not in result.output
    # a run whose recorded file is gone: evaluate names it
    from mmanet.deploy.checkpoint import atomic_torch_save, load_checkpoint

    ckpt = load_checkpoint(moved / "checkpoints" / "best.ckpt")
    ckpt["mmanet"]["config"]["imports"] = [gone]
    atomic_torch_save(ckpt, moved / "checkpoints" / "best.ckpt")
    result = runner.invoke(app, ["evaluate", str(moved / "checkpoints" / "best.ckpt"), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "gone.py does not exist" in " ".join(result.output.split())
    result = runner.invoke(app, ["list", "--import", "no_such_module_xyz"])
    assert result.exit_code == 2 and "cannot import the module 'no_such_module_xyz'" in result.output
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    result = runner.invoke(app, ["list", "--import", str(broken)])
    assert result.exit_code == 2 and "importing" in result.output and "RuntimeError: boom" in result.output


def test_config_imports_are_read_from_the_config_files_directory(tmp_path):
    from conftest import tiny_raw
    from mmanet.config import load_run_config

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "fusion.py").symlink_to(EXAMPLE)
    raw = tiny_raw("sf_md")
    raw["imports"] = ["plugins/fusion.py"]
    raw["model"]["fusion"] = "gated_mean"
    cfg = load_run_config(write_yaml(tmp_path / "cfg.yaml", raw))
    assert cfg.imports == [str(EXAMPLE)]  # (resolved: the link leads to the example)


def test_entry_points_of_installed_packages_are_loaded_once(monkeypatch):
    from importlib.metadata import EntryPoint

    import mmanet.plugins as plugins

    seen = []

    def fake(group):
        seen.append(group)
        return [EntryPoint(name="ok", value="json", group=group)]

    monkeypatch.setattr(plugins, "entry_points", fake)
    monkeypatch.setattr(plugins, "_ENTRY_POINTS_LOADED", False)
    plugins.load_plugins([])
    plugins.load_plugins([])
    assert seen == ["mmanet.plugins"]
    monkeypatch.setattr(plugins, "_ENTRY_POINTS_LOADED", False)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [EntryPoint("bad", "no_such_pkg_xyz.mod", group)])
    with pytest.raises(plugins.PluginError, match="plugin 'bad' .* failed to import"):
        plugins.load_plugins([])
