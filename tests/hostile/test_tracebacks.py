"""Issue 20, "Raw tracebacks": exceptions from libraries are one message naming the file or the key (exit
code 2) — a DataLoader worker's error, Pillow's decompression bomb, onnxruntime, Lightning's hardware keys,
a full disk or a directory made read-only while writing; a bug in mmanet shows its traceback followed by one
line asking for a report (exit code 1), and a bare ``ValueError`` is no longer taken for the user's mistake.

Tune's own cases (a second process, a damaged ``study.db``, Ctrl-C) are in ``tests/test_tuning.py``.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_tree import (
    FACE_YAML,
    TRAIN_YAML,
    copy_of,
    face_sets,
    face_tree,
    invoke,
    refused,
    sets,
    working_copy,
)
from PIL import Image

from mmanet.data.base import DataError
from mmanet.errors import MMANetError, unwrap_worker_message


@pytest.fixture
def tree(tmp_path, monkeypatch):
    root = working_copy(tmp_path)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def faces(tmp_path, monkeypatch):
    root = copy_of(face_tree(), tmp_path)
    monkeypatch.chdir(root)
    return root


# ----------------------------------------------------------------------------- DataLoader workers


class _Broken(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        raise DataError(f"image file not found (train_list.txt line {index + 1}: a/{index}.jpg)\nsecond line")


def test_a_workers_data_error_reaches_the_user_as_its_own_message():
    loader = torch.utils.data.DataLoader(_Broken(), batch_size=2, num_workers=1)
    with pytest.raises(DataError) as err:
        next(iter(loader))
    assert str(err.value) == "image file not found (train_list.txt line 1: a/0.jpg)\nsecond line"
    # chained causes and notes after the exception line: still only the message
    wrapped = (
        "Caught DataError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise KeyError(1)\nKeyError: 1\n\nThe above exception was the direct '
        "cause of the following exception:\n\nTraceback (most recent call last):\n"
        '  File "y.py", line 2, in g\n    raise DataError("bad")\nmmanet.data.base.DataError: bad file x.npz\n'
    )
    assert unwrap_worker_message(wrapped) == "bad file x.npz"
    assert str(MMANetError(wrapped)) == "bad file x.npz"
    assert unwrap_worker_message("Caught nothing: a plain message") == "Caught nothing: a plain message"


def test_a_missing_jpeg_read_by_a_worker_is_one_message_naming_it(faces):
    """The shipped image configs use 4 workers: a missing image used to print 'Caught DataError in DataLoader
    worker process 1. Original Traceback …'."""
    listed = (faces / "C" / "train_list.txt").read_text().splitlines()[2].split()[0]
    (faces / "C" / listed).unlink()
    result = invoke("train", FACE_YAML, *face_sets("data.num_workers=2"), "--out", "W")
    said = refused(result, "image file not found", "train_list.txt line 3", listed)
    assert "DataLoader worker" not in said and "Original Traceback" not in said


# ----------------------------------------------------------------------------- Pillow


def test_a_decompression_bomb_is_a_data_error_in_training_and_in_predict(faces, monkeypatch):
    Image.open(faces / "C" / "Testing" / "0000" / "000000-color.jpg").save(faces / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # every 28×28+ fixture image is now a "bomb"
    result = invoke("train", FACE_YAML, *face_sets(), "--out", "W")
    refused(result, "image too large to decode safely", "train_list.txt line", "decompression bomb")
    result = invoke("predict", "RC", "--input", "rgb=big.png")
    refused(result, "image too large to decode safely", "--input rgb: big.png")


# ----------------------------------------------------------------------------- onnxruntime


def _edit_card(path: Path, edit) -> None:
    import onnx

    from mmanet.deploy.model_card import ONNX_KEY

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    card = json.loads(props[ONNX_KEY])
    edit(card)
    props[ONNX_KEY] = json.dumps(card)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def test_a_model_card_that_disagrees_with_its_graph_is_one_message(tree):
    graph = tree / "R" / "checkpoints" / "best.onnx"

    def shape(card):
        next(e for e in card["modalities"] if e["name"] == "audio")["shape"][-1] += 1

    _edit_card(graph, shape)
    refused(invoke("predict", graph, "--input", "x.npz"), "gives modality 'audio' the per-sample shape", "graph takes")


# ----------------------------------------------------------------------------- Lightning


def test_lightning_refusing_the_hardware_keys_is_a_config_error(tree):
    refused(invoke("train", TRAIN_YAML, *sets("train.devices=0"), "--out", "T"), "train.devices", "(got 0)")
    assert not (tree / "T").exists()  # refused with the configuration, before a run directory exists
    result = invoke("train", TRAIN_YAML, *sets("train.devices=two"), "--out", "T")
    refused(result, "train.devices='two'", "Lightning refuses them")
    if not torch.cuda.is_available():
        refused(invoke("train", TRAIN_YAML, *sets("train.accelerator=gpu"), "--out", "G"), "train.accelerator='gpu'")


# ----------------------------------------------------------------------------- full disks, read-only directories


def _fail_after(monkeypatch, target, name: str, calls: int, error: BaseException) -> None:
    real = getattr(target, name)
    seen = {"n": 0}

    def flaky(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] > calls:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, flaky)


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),  # torch's zip writer
    ],
    ids=["oserror", "zip-writer"],
)
def test_a_full_disk_while_saving_a_checkpoint_names_it_and_keeps_the_old_one(tree, monkeypatch, error):
    import shutil

    import mmanet.deploy.checkpoint as checkpoint

    if isinstance(error, RuntimeError):  # what torch says when the disk fills up inside its zip writer
        monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 30, 1 << 30, 0))
    _fail_after(monkeypatch, checkpoint.torch, "save", 2, error)  # epoch 1: best + last; epoch 2: fails
    result = invoke("train", TRAIN_YAML, *sets("method=sf_md", "train.max_epochs=2"), "--out", "T")
    refused(
        result,
        "cannot write the checkpoint ",
        "/T/checkpoints/best.ckpt: No space left on device",
        "is unchanged",
        "Free some space, then run the command again",
    )
    assert not [p for p in (tree / "T" / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(tree / "T" / "checkpoints" / "last.ckpt")["epoch"] == 0  # epoch 1's


def test_a_checkpoints_folder_made_read_only_mid_run_names_the_file(tree, monkeypatch):
    real = tempfile.mkstemp
    seen = {"n": 0}

    def refuse_second_epoch(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
        if dir is not None and Path(dir).name == "checkpoints":
            seen["n"] += 1
            if seen["n"] > 2:
                raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / ".last.ckpt.x.tmp"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse_second_epoch)
    result = invoke("train", TRAIN_YAML, *sets("method=sf_md", "train.max_epochs=2"), "--out", "T")
    refused(
        result, "cannot write the checkpoint ", "/T/checkpoints/best.ckpt: Permission denied", "T/checkpoints writable"
    )


def test_a_full_disk_during_an_export_names_the_file(tree, monkeypatch):
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    refused(invoke("export", "R", "--out", "E/m.onnx"), "cannot write the weights E/m.safetensors", "No space left")
    assert not (tree / "E" / "m.safetensors").exists() and not (tree / "E" / "model_card.json").exists()


# ----------------------------------------------------------------------------- bugs are not user errors


def test_a_bug_shows_its_traceback_and_asks_for_a_report(tree, monkeypatch):
    import mmanet.training

    def slip(*args, **kwargs):
        raise ValueError("an internal slip")

    monkeypatch.setattr(mmanet.training, "run", slip)
    result = invoke("train", TRAIN_YAML, *sets("method=sf_md"), "--out", "T")
    assert result.exit_code == 1, result.output
    assert "Traceback" in result.output and "ValueError: an internal slip" in result.output
    assert "this is a bug in mmanet" in result.output and "error:" not in result.output
    # the machine's problems are not bugs: one message, exit code 2
    for problem, needle in (
        (OSError(errno.ENOSPC, "No space left on device"), "a file could not be read or written in T"),
        (MemoryError(), "out of memory: lower data.batch_size"),
    ):

        def fail(*args, problem=problem, **kwargs):
            raise problem

        monkeypatch.setattr(mmanet.training, "run", fail)
        refused(invoke("train", TRAIN_YAML, *sets("method=sf_md"), "--out", "T"), needle)


def test_user_errors_of_the_cli_options_are_mmanet_errors(tree):
    refused(invoke("evaluate", "R", "--split", "train"), "--split 'train' is not a split")
    bench = tree / "bench.yaml"
    bench.write_text("name: b\nseeds: 1\nbase: {data: {name: npz, root: D}}\nmethods: [{label: A, method: sf_md}]\n")
    refused(invoke("benchmark", bench, "--only", "Z", "--out", "B"), "--only 'Z' is not a method label")
    refused(invoke("benchmark", bench, "--seeds", "0", "--out", "B"), "--seeds must be at least 1")
    assert not os.path.exists(tree / "B")
    assert np.load(tree / "x.npz")  # (the fixture is intact)


# ----------------------------------------------------------------------------- the rest of the class


def test_a_missing_optional_onnx_package_is_one_message(tree, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the export extra were not installed
    refused(
        invoke("predict", "R/checkpoints/best.onnx", "--input", "x.npz"),
        "needs the package 'onnxruntime'",
        "mmanet[export]",
    )
    monkeypatch.setitem(sys.modules, "onnx", None)
    refused(invoke("export", "R", "--out", "E/m.onnx"), "needs the package 'onnx'", "pip install")


def test_a_reader_that_stops_early_ends_predict_quietly(tree):
    """`mmanet predict R --input x.npz | head -1` used to end in a BrokenPipeError traceback."""
    import subprocess
    import sys

    arrays = dict(np.load(tree / "x.npz"))
    np.savez(tree / "many.npz", **{k: np.concatenate([v] * 5) for k, v in arrays.items()})  # ~250 KB of JSON lines
    command = [sys.executable, "-m", "mmanet.cli", "predict", "R", "--input", "many.npz"]
    process = subprocess.Popen(command, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert json.loads(process.stdout.readline())["index"] == 0
    process.stdout.close()  # the reader is gone
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) in (0, 141) and "Traceback" not in stderr and "error" not in stderr, stderr
