"""Issue 20's fixtures as a file tree, built once per session, and a snapshot of every file in a tree.

The tree (``pristine()``) holds what the issue's cases start from, under one root:

* ``D`` — ``python examples/make_npz_dataset.py D``;
* ``R`` — a 1-epoch ``sf_md`` run on ``examples/npz/train.yaml`` (tiny network), exported
  (``R/checkpoints/best.{onnx,safetensors}``, ``R/checkpoints/model_card.json``);
* ``MM`` — the same with ``method=mmanet`` (``MM/teacher/`` holds its teacher);
* ``x.npz`` — a copy of ``D/test.npz`` to predict on.

Tests work on a copy (:func:`working_copy`), so one command that breaks the rule cannot spoil the
others' fixtures. Built lazily with a module-level cache: importing this module from two test
files shares one build (a second ``conftest.py`` would shadow the root one).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from typer.testing import CliRunner

from mmanet.cli import app

REPO = Path(__file__).resolve().parents[2]
TRAIN_YAML = REPO / "examples" / "npz" / "train.yaml"
#: keeps every run about a second: tiny network, 1 epoch, no progress bar
SMALL = (
    "data.root=D",
    "train.max_epochs=1",
    "train.progress_bar=false",
    "data.batch_size=128",
    "model.channels=8",
    "model.encoder.hidden=16",
    "model.head.hidden=16",
    "teacher.max_epochs=1",
    "mar.warmup_epochs=1",
)

runner = CliRunner()
_built: dict[str, Path] = {}


def sets(*pairs: str) -> list[str]:
    """``--set`` options for ``SMALL`` and ``pairs``."""
    return [arg for pair in (*SMALL, *pairs) for arg in ("--set", pair)]


def invoke(*args: str | Path):
    """``mmanet ARGS`` in this process (relative paths from the working directory)."""
    return runner.invoke(app, [str(a) for a in args])


@contextmanager
def cwd(path: Path) -> Iterator[Path]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(previous)


def _build(root: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "examples" / "make_npz_dataset.py"), "D"], cwd=root, check=True)
    shutil.copy(root / "D" / "test.npz", root / "x.npz")
    with cwd(root):
        for method, out in (("sf_md", "R"), ("mmanet", "MM")):
            result = invoke("train", TRAIN_YAML, *sets(f"method={method}"), "--out", out)
            assert result.exit_code == 0, result.output
        result = invoke("export", "R")
        assert result.exit_code == 0, result.output


def pristine() -> Path:
    """The session's fixture tree (built on first use; never changed by a test)."""
    if "root" not in _built:
        root = Path(tempfile.mkdtemp(prefix="mmanet_hostile_")) / "tree"
        atexit.register(shutil.rmtree, root.parent, ignore_errors=True)
        root.mkdir()
        _build(root)
        _built["root"] = root
    return _built["root"]


def working_copy(into: Path) -> Path:
    """A fresh copy of the fixture tree at ``into/tree`` (its parent is part of what tests snapshot)."""
    target = into / "tree"
    shutil.copytree(pristine(), target, symlinks=True)
    return target


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path → sha256; a link → where it points)."""
    files = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            files[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            files[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def changed_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Pre-existing files that are gone or differ (new files are not listed)."""
    return sorted(k for k, digest in before.items() if after.get(k) != digest)
