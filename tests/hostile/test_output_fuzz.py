"""Fuzz over the output-path options (issue 20): ``--out`` equal to an input, to a checkpoint, to a file of
another run, to ``..`` paths and absolute paths, and benchmark labels that are paths.

Each example runs one command on a fresh copy of the fixture tree (:mod:`hostile_tree`), with a
user's folder next to it (``../outside``), snapshots every file (path → sha256) before and after,
and asserts:

* no file that was there before changed or disappeared — except what the command may replace by
  its own rule: an export's own earlier files, and a run directory given to ``train --overwrite``;
* every file it created lies in its output directory (the ``--out`` directory, or the folder of an
  ``--out`` file);
* it either succeeded or refused with exit code 2 and one message, never a traceback.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml
from hostile_tree import TRAIN_YAML, cwd, invoke, sets, snapshot, working_copy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: --out candidates, relative to the tree: inputs, checkpoints, files and folders of other runs, outside paths
TARGETS = (
    "x.npz",
    "D",
    "D/train.npz",
    "D/dataset.yaml",
    "R",
    "R/config.yaml",
    "R/results.json",
    "R/per_combination.csv",
    "R/checkpoints",
    "R/checkpoints/best.ckpt",
    "R/checkpoints/last.ckpt",
    "R/checkpoints/best.onnx",
    "R/checkpoints/model_card.json",
    "MM",
    "MM/teacher",
    "MM/teacher/checkpoints/best.ckpt",
    "../outside",
    "../outside/notes.txt",
    "../../tree/R",
    "new/model.onnx",
    "new_dir",
)
COMMANDS = ("export", "predict", "evaluate", "train", "train_teacher", "benchmark", "tune")
#: benchmark labels; "<run>" becomes the absolute path of the run R
LABELS = ("SF-MD", "<run>", "../../victim", "..", ".", "a/b", "shared_teachers")
#: commands whose --out is a file (the output directory is its folder)
FILE_OUTPUTS = ("export", "predict")


def command_line(command: str, target: str, overwrite: bool, label: str, tree: Path) -> list[str]:
    if command == "export":
        return ["export", "R", "--out", target]
    if command == "predict":
        return ["predict", "R", "--input", "x.npz", "--out", target]
    if command == "evaluate":
        return ["evaluate", "R", "--out", target]
    if command == "tune":
        return ["tune", "R/config.yaml", "--trials", "1", "--out", target]
    flag = ["--overwrite"] if overwrite else []
    if command == "train":
        return ["train", str(TRAIN_YAML), *sets("method=sf_md"), "--out", target, *flag]
    if command == "train_teacher":
        teacher = sets("method=mmanet", "teacher.checkpoint=MM/teacher/checkpoints/best.ckpt")
        return ["train", str(TRAIN_YAML), *teacher, "--out", target, *flag]
    label = str(tree / "R") if label == "<run>" else label
    base = yaml.safe_load((tree / "R" / "config.yaml").read_text())
    bench = {"name": "fuzz", "seeds": 1, "base": base, "methods": [{"label": label, "method": "sf_md"}]}
    (tree / "bench.yaml").write_text(yaml.safe_dump(bench))
    return ["benchmark", "bench.yaml", "--out", target, *flag]


def may_replace(command: str, target: Path, overwrite: bool, root: Path) -> list[Path]:
    """What the command may replace by its own rule (see the module docstring)."""
    checkpoints = root / "tree" / "R" / "checkpoints"
    if command == "export" and target == checkpoints / "best.onnx":
        return [checkpoints / "best.onnx", checkpoints / "best.safetensors", checkpoints / "model_card.json"]
    if command in ("train", "train_teacher") and overwrite and (target / "config.yaml").is_file():
        return [target]
    return []


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    command=st.sampled_from(COMMANDS),
    target=st.sampled_from(TARGETS),
    absolute=st.booleans(),
    overwrite=st.booleans(),
    label=st.sampled_from(LABELS),
)
def test_no_command_changes_a_file_it_did_not_create(command, target, absolute, overwrite, label):
    root = Path(tempfile.mkdtemp(prefix="mmanet_fuzz_"))
    try:
        tree = working_copy(root)
        (root / "outside").mkdir()
        (root / "outside" / "notes.txt").write_text("a user's notes\n")
        shutil.copytree(tree / "R", root / "victim" / "seed_0")  # what '../../victim' reaches from a benchmark
        args = command_line(command, str(tree / target) if absolute else target, overwrite, label, tree)
        out = (tree / target).resolve()
        allowed = may_replace(command, out, overwrite, root)
        before = snapshot(root)
        with cwd(tree):
            result = invoke(*args)
        after = snapshot(root)
        replaced = [p for p, digest in before.items() if after.get(p) != digest]
        changed = [p for p in replaced if not any(_under(root / p, a) for a in allowed)]
        assert changed == [], (args, result.output)
        home = out.parent if command in FILE_OUTPUTS else out
        strays = [p for p in after if p not in before and not _under(root / p, home) and p != "tree/bench.yaml"]
        assert strays == [], (args, strays)
        assert result.exit_code in (0, 2), (args, result.output)
        assert "Traceback" not in result.output, (args, result.output)
        if result.exit_code == 2:
            assert result.output.count("error:") == 1, (args, result.output)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _under(path: Path, directory: Path) -> bool:
    path, directory = path.resolve(), directory.resolve()
    return path == directory or directory in path.parents
