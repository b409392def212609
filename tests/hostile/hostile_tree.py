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


def refused(result, *needles: str) -> str:
    """Exit code 2, one message (no traceback) that says each of ``needles``; returns the message."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    said = " ".join(result.output.split())
    for needle in needles:
        assert needle in said, said
    return said


# ----------------------------------------------------------------------------- image fixtures (built on first use)

#: a CASIA-SURF copy (``C``) and a 1-epoch SF-MD run on it at 32×32 (``RC``), tiny network
FACE = ("data.root=C", "model.width=16", "data.batch_size=8", "train.max_epochs=1", "data.num_workers=0",
        "train.progress_bar=false", "data.options.image_size=32", "train.warmup_epochs=0")  # fmt: skip
FACE_YAML = REPO / "configs" / "casia_surf" / "sf_md.yaml"


def face_sets(*pairs: str) -> list[str]:
    return [arg for pair in (*FACE, *pairs) for arg in ("--set", pair)]


def face_tree() -> Path:
    """A tree with ``C`` (CASIA-SURF layout) and ``RC`` (an SF-MD run on it); copy it before changing it."""
    if "face" not in _built:
        sys.path.insert(0, str(REPO / "tests"))
        from fixtures_face import write_casia_surf

        root = Path(tempfile.mkdtemp(prefix="mmanet_hostile_face_")) / "tree"
        atexit.register(shutil.rmtree, root.parent, ignore_errors=True)
        root.mkdir()
        write_casia_surf(root / "C")
        with cwd(root):
            result = invoke("train", FACE_YAML, *face_sets(), "--out", "RC")
            assert result.exit_code == 0, result.output
        _built["face"] = root
    return _built["face"]


def segmentation_tree() -> Path:
    """A tree with ``S`` (an npz segmentation dataset: rgb (3, 8, 8), 3 classes) and ``RS`` (a 1-epoch run)."""
    if "segmentation" not in _built:
        import numpy as np
        import yaml

        root = Path(tempfile.mkdtemp(prefix="mmanet_hostile_seg_")) / "tree"
        atexit.register(shutil.rmtree, root.parent, ignore_errors=True)
        (root / "S").mkdir(parents=True)
        rng = np.random.default_rng(0)
        for split, n in (("train", 24), ("val", 8), ("test", 8)):
            label = rng.integers(0, 3, (n, 8, 8))
            rgb = (label[:, None] * 60.0 + rng.normal(0, 5, (n, 3, 8, 8))).astype(np.float32)
            np.savez(root / "S" / f"{split}.npz", rgb=rgb, label=label)
        config = {
            "method": "sf_md",
            "data": {"name": "npz", "root": "S", "batch_size": 8},
            "model": {"channels": 8, "encoder": {"type": "cnn", "hidden": 8, "pool": False}, "head": "segmentation"},
            "train": {"max_epochs": 1, "progress_bar": False},
        }
        (root / "seg.yaml").write_text(yaml.safe_dump(config))
        with cwd(root):
            result = invoke("train", "seg.yaml", "--out", "RS")
            assert result.exit_code == 0, result.output
        _built["segmentation"] = root
    return _built["segmentation"]


def copy_of(tree: Path, into: Path) -> Path:
    """A copy of a fixture tree at ``into/tree``."""
    target = into / "tree"
    shutil.copytree(tree, target, symlinks=True)
    return target
