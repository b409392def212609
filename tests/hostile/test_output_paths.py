"""Issue 20, "Loss of data": no command writes over one of its own inputs, over a file it did not
create, or outside its output directory; a changed configuration never deletes finished work
without ``--overwrite``, and ``--overwrite`` never deletes something the same command reads.

Each case runs the issue's command on a copy of the fixture tree (:mod:`hostile_tree`) and checks
the exit code, the message, and that every file that was there before is byte-identical after.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from hostile_tree import TRAIN_YAML, changed_files, invoke, sets, snapshot, working_copy


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A copy of the fixture tree as the working directory (``tmp_path`` is what the tests snapshot)."""
    root = working_copy(tmp_path)
    monkeypatch.chdir(root)
    return root


def refused(result, *needles: str) -> None:
    """Exit code 2, one message (no traceback) that says each of ``needles``."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    said = " ".join(result.output.split())
    for needle in needles:
        assert needle in said, said


def write_benchmark(path: Path, methods: list[dict]) -> Path:
    base = {
        "data": {"name": "npz", "root": "D", "batch_size": 128},
        "model": {"channels": 8, "encoder": {"hidden": 16}, "head": {"hidden": 16}},
        "train": {"max_epochs": 1, "progress_bar": False},
    }
    path.write_text(yaml.safe_dump({"name": "b", "seeds": 1, "base": base, "methods": methods}))
    return path


# ----------------------------------------------------------------------------- the six cases


def test_case1_export_never_writes_over_the_checkpoint_it_exports(tree, tmp_path):
    os.symlink(tree / "R/checkpoints/best.ckpt", tree / "link.onnx")
    before = snapshot(tmp_path)
    result = invoke("export", "R", "--out", "R/checkpoints/best.ckpt")
    refused(result, "--out R/checkpoints/best.ckpt is the checkpoint being exported", "pass --out with another path")
    # not through a link either
    refused(invoke("export", "R", "--out", "link.onnx"), "is the checkpoint being exported (R/checkpoints/best.ckpt)")
    # another file of the run: not an .onnx name, or a name whose card belongs to another export
    refused(invoke("export", "R", "--out", "R/checkpoints/last.ckpt"), "must be an .onnx file name")
    refused(
        invoke("export", "R", "--out", "R/checkpoints/last.onnx"),
        "R/checkpoints/model_card.json already exists and is not the model card of an earlier export of last.onnx",
    )
    assert changed_files(before, snapshot(tmp_path)) == []
    assert invoke("evaluate", "R", "--out", "ev").exit_code == 0  # the run can still be evaluated


def test_case2_export_never_replaces_a_file_it_did_not_write(tree, tmp_path):
    (tree / "E").mkdir()
    (tree / "E" / "model_card.json").write_text('{"mine":1}\n')
    before = snapshot(tmp_path)
    result = invoke("export", "R", "--out", "E/a.onnx")
    refused(result, "E/model_card.json already exists and is not the model card of an earlier export of a.onnx", "Move")
    assert changed_files(before, snapshot(tmp_path)) == [] and sorted(os.listdir(tree / "E")) == ["model_card.json"]
    # its own earlier files are replaced by the same export; another export's card is not
    assert invoke("export", "R", "--out", "F/a.onnx").exit_code == 0
    assert invoke("export", "R", "--out", "F/a.onnx").exit_code == 0
    before = snapshot(tmp_path)
    refused(invoke("export", "R", "--out", "F/b.onnx"), "F/model_card.json", "earlier export of b.onnx")
    (tree / "G").mkdir()
    (tree / "G" / "a.onnx").write_text("my notes\n")
    before = snapshot(tmp_path)
    refused(invoke("export", "R", "--out", "G/a.onnx"), "G/a.onnx already exists and is not an ONNX graph")
    assert changed_files(before, snapshot(tmp_path)) == []


def test_case3_predict_never_writes_over_its_input_or_its_model(tree, tmp_path):
    before = snapshot(tmp_path)
    refused(invoke("predict", "R", "--input", "x.npz", "--out", "x.npz"), "--out x.npz is an --input file")
    refused(
        invoke("predict", "R", "--input", "x.npz", "--out", "R/checkpoints/best.ckpt"),
        "--out R/checkpoints/best.ckpt is the model",
    )
    refused(
        invoke("predict", "R/checkpoints/best.onnx", "--input", "x.npz", "--out", "R/checkpoints/best.onnx"),
        "is the model",
    )
    refused(
        invoke("predict", "R", "--input", "x.npz", "--out", "D/train.npz"),
        "D/train.npz already exists and is not a predictions file written by mmanet predict",
    )
    assert changed_files(before, snapshot(tmp_path)) == []
    # its own output is replaced by a rerun
    assert invoke("predict", "R", "--input", "x.npz", "--out", "p.jsonl").exit_code == 0
    result = invoke("predict", "R", "--input", "x.npz", "--out", "p.jsonl")
    assert result.exit_code == 0 and len((tree / "p.jsonl").read_text().splitlines()) == 200


@pytest.mark.parametrize("label", ["/abs/victim", "../../victim", "..", ".", "a/b", "report.md"])
def test_case4_a_benchmark_label_is_a_plain_name(tree, tmp_path, label):
    shutil.copytree(tree / "R", tmp_path / "victim" / "seed_0")  # what '../../victim' reaches from B/x
    label = str(tmp_path / "victim") if label == "/abs/victim" else label
    bench = write_benchmark(tree / "bench.yaml", [{"label": label, "method": "sf_md"}])
    before = snapshot(tmp_path)
    result = invoke("benchmark", bench, "--out", "B/x")
    refused(result, f"benchmark method label {label!r}", "give a plain name")
    assert changed_files(before, snapshot(tmp_path)) == []
    assert not (tree / "B").exists()


def test_case5_a_changed_benchmark_run_is_refused_and_only_it_is_redone_with_overwrite(tree, tmp_path):
    methods = [
        {"label": "pinned", "method": "sf_md", "set": {"train.lr": 0.003}},  # --set train.lr does not change it
        {"label": "follows", "method": "sf_md"},
    ]
    bench = write_benchmark(tree / "bench.yaml", methods)
    assert invoke("benchmark", bench, "--out", "B").exit_code == 0
    assert invoke("export", "B/follows/seed_0").exit_code == 0
    before = snapshot(tmp_path)
    result = invoke("benchmark", bench, "--out", "B", "--set", "train.lr=0.01")
    refused(result, "B/follows/seed_0 holds a finished run trained with another configuration", "pass --overwrite")
    assert "pinned" not in " ".join(result.output.split())
    assert changed_files(before, snapshot(tmp_path)) == []
    # --overwrite: only the changed run is trained again; the other one is reused as it is
    result = invoke("benchmark", bench, "--out", "B", "--set", "train.lr=0.01", "--overwrite")
    assert result.exit_code == 0, result.output
    changed = changed_files(before, snapshot(tmp_path))
    assert changed and all(
        path.startswith("tree/B/follows/seed_0/") or path.startswith("tree/B/") and "/" not in path[len("tree/B/") :]
        for path in changed
    ), changed
    assert yaml.safe_load((tree / "B/follows/seed_0/config.yaml").read_text())["train"]["lr"] == 0.01


def test_case6_overwrite_never_deletes_the_teacher_it_was_told_to_use(tree, tmp_path):
    before = snapshot(tmp_path)
    teacher = "MM/teacher/checkpoints/best.ckpt"
    args = sets("method=mmanet", f"teacher.checkpoint={teacher}")
    result = invoke("train", TRAIN_YAML, *args, "--out", "MM", "--overwrite")
    refused(result, f"refusing --overwrite: MM contains the teacher checkpoint (teacher.checkpoint) {teacher}")
    # nor the pretrained weights, the config file it reads, or the data root
    result = invoke("train", TRAIN_YAML, *sets("model.pretrained=R/extra.pth"), "--out", "R", "--overwrite")
    refused(result, "R contains the pretrained weights (model.pretrained) R/extra.pth")
    refused(invoke("train", "R/config.yaml", "--out", "R", "--overwrite"), "R contains the config file R/config.yaml")
    result = invoke("train", TRAIN_YAML, *sets("data.root=R/D2"), "--out", "R", "--overwrite")
    refused(result, "R contains the data root R/D2")
    assert changed_files(before, snapshot(tmp_path)) == []


# ----------------------------------------------------------------------------- the rest of the class


def test_a_config_file_inside_its_run_directory_is_not_rewritten_with_another_configuration(tree, tmp_path):
    before = snapshot(tmp_path)
    result = invoke("train", "R/config.yaml", "--set", "train.lr=0.5", "--out", "R")
    refused(result, "R/config.yaml is both the config file this command reads and the config.yaml of --out R")
    assert changed_files(before, snapshot(tmp_path)) == []


def test_train_never_writes_over_files_of_a_directory_that_is_not_a_run(tree, tmp_path):
    (tree / "mine").mkdir()
    (tree / "mine" / "results.json").write_text('{"my": "results"}\n')
    (tree / "theirs").mkdir()
    (tree / "theirs" / "config.yaml").write_text("lr: 3\n")  # someone else's config, no checkpoints
    before = snapshot(tmp_path)
    args = sets("method=sf_md")
    refused(invoke("train", TRAIN_YAML, *args, "--out", "mine"), "already holds results.json")
    refused(invoke("train", TRAIN_YAML, *args, "--out", "theirs"), "holds a config.yaml that is not an mmanet run")
    refused(invoke("train", TRAIN_YAML, *args, "--out", "R/checkpoints"), "is a run's checkpoints folder")
    assert changed_files(before, snapshot(tmp_path)) == []


def test_evaluate_never_writes_its_tables_into_a_run(tree, tmp_path):
    before = snapshot(tmp_path)
    result = invoke("evaluate", "R", "--split", "val", "--out", "R")
    refused(result, "--out R is a run directory (a run's per_combination.csv is its own result table)")
    refused(invoke("evaluate", "R", "--out", "MM/teacher"), "--out MM/teacher is a run directory")
    refused(invoke("evaluate", "R", "--out", "R/checkpoints"), "--out R/checkpoints is a run's checkpoints folder")
    assert changed_files(before, snapshot(tmp_path)) == []


def test_benchmark_report_files_never_replace_files_it_did_not_write(tree, tmp_path):
    bench = write_benchmark(tree / "bench.yaml", [{"label": "SF-MD", "method": "sf_md"}])
    (tree / "notes").mkdir()
    (tree / "notes" / "report.md").write_text("# my report\n")
    before = snapshot(tmp_path)
    refused(invoke("benchmark", bench, "--out", "notes"), "--out notes is not a benchmark directory", "report.md")
    refused(invoke("benchmark", bench, "--out", "R"), "--out R is a run directory")
    refused(invoke("benchmark", bench, "--out", "x.npz"), "--out x.npz is an existing file")
    assert changed_files(before, snapshot(tmp_path)) == []
    assert not (tree / "notes" / "SF-MD").exists()


def test_tune_writes_only_into_a_new_directory_or_its_own_study(tree, tmp_path):
    (tree / "S").mkdir()
    (tree / "S" / "best.yaml").write_text((tree / "R" / "config.yaml").read_text())
    (tree / "T").mkdir()
    (tree / "T" / "trials.csv").write_text("mine\n")
    before = snapshot(tmp_path)
    tune = ["tune", "S/best.yaml", "--trials", "1"]
    refused(invoke(*tune, "--out", "S"), "the study's output S/best.yaml is the config file")
    refused(invoke(*tune, "--out", "T"), "--out T is not a study directory (no study.db)", "trials.csv")
    refused(invoke(*tune, "--out", "R"), "--out R is a run directory")
    refused(invoke(*tune, "--out", "x.npz"), "--out x.npz is an existing file")
    assert changed_files(before, snapshot(tmp_path)) == []


def test_overwrite_still_starts_an_ordinary_run_again(tree):
    stamp = json.loads((tree / "R" / "results.json").read_text())
    result = invoke("train", TRAIN_YAML, *sets("method=sf_md", "train.lr=0.01"), "--out", "R", "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads((tree / "R" / "results.json").read_text()) != stamp
    assert not (tree / "R" / "checkpoints" / "best.onnx").exists()  # the old run (and its export) is gone


# ----------------------------------------------------------------------------- data that changed since


def touch_data(tree: Path) -> None:
    """Rewrite the training data in place (same bytes, a new modification time): what a regenerated dataset
    or an edited file looks like to a run's configuration — nothing in it changes."""
    data = tree / "D" / "train.npz"
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_a_run_is_not_resumed_on_data_that_changed_since_it_trained(tree, tmp_path):
    assert json.loads((tree / "R/data_fingerprint.json").read_text())["files"] >= 3
    touch_data(tree)
    before = snapshot(tmp_path)
    result = invoke("train", TRAIN_YAML, *sets("method=sf_md"), "--out", "R")
    refused(result, "R holds a run, but the data under data.root D changed since it was trained", "--overwrite")
    assert changed_files(before, snapshot(tmp_path)) == []
    result = invoke("train", TRAIN_YAML, *sets("method=sf_md"), "--out", "R", "--overwrite")
    assert result.exit_code == 0, result.output
    result = invoke("train", TRAIN_YAML, *sets("method=sf_md"), "--out", "R")  # the new record: resumes
    assert result.exit_code == 0, result.output


def test_a_run_directory_inside_the_data_root_is_not_part_of_the_data(tree):
    for _ in range(2):  # the second run finds its own run, not changed data
        result = invoke("train", TRAIN_YAML, *sets("method=sf_md"), "--out", "D/runs/r")
        assert result.exit_code == 0, result.output


def test_a_benchmark_never_reuses_runs_or_a_shared_teacher_trained_on_data_that_changed(tree, tmp_path):
    bench = write_benchmark(
        tree / "bench.yaml",
        [{"label": "sf", "method": "sf_md"}, {"label": "mm", "method": "mmanet", "set": {"mar.warmup_epochs": 1}}],
    )
    assert invoke("benchmark", bench, "--out", "B").exit_code == 0
    teachers = list((tree / "B/shared_teachers").glob("seed_0_*"))
    assert len(teachers) == 1
    touch_data(tree)
    before = snapshot(tmp_path)
    result = invoke("benchmark", bench, "--out", "B")
    refused(result, "hold 3 finished runs", "or on data that changed since", "pass --overwrite")
    assert changed_files(before, snapshot(tmp_path)) == []
    result = invoke("benchmark", bench, "--out", "B", "--overwrite")
    assert result.exit_code == 0, result.output
    changed = changed_files(before, snapshot(tmp_path))
    for run in ("B/sf/seed_0/", "B/mm/seed_0/", f"B/shared_teachers/{teachers[0].name}/"):
        # each cleared (its old TensorBoard log is gone) and trained again on the data as it is now
        assert any(path.startswith(f"tree/{run}tb/") for path in changed), (run, changed)
        assert f"tree/{run}data_fingerprint.json" in changed, (run, changed)
    assert invoke("benchmark", bench, "--out", "B").exit_code == 0  # and reused from now on
