"""Issue 20, "Wrong behaviour": non-finite results are never printed as success, files are checked before
they are trusted, images are never silently clipped, and every refusal names the key or the file.

Each case runs the issue's command on a copy of a fixture tree (:mod:`hostile_tree`) and checks the exit
code, the message and, where it matters, that nothing was left behind or changed.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hostile_tree import (
    FACE_YAML,
    TRAIN_YAML,
    changed_files,
    copy_of,
    face_sets,
    face_tree,
    invoke,
    refused,
    segmentation_tree,
    sets,
    snapshot,
    working_copy,
)
from PIL import Image


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


def _nan_into(state: dict, key: str) -> str:
    name = next(k for k, v in state.items() if k.startswith(key) and v.is_floating_point())
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    return name


# ----------------------------------------------------------------------------- non-finite results


def test_predict_never_prints_nan_probabilities_for_finite_inputs_that_overflow(tree):
    arrays = dict(np.load(tree / "x.npz"))
    for m in ("audio", "thermal"):  # finite float32 values far outside the training range
        arrays[m] = np.full_like(arrays[m], 3e38)
    np.savez(tree / "huge.npz", **arrays)
    for model in ("R", "R/checkpoints/best.onnx", "R/checkpoints/best.safetensors"):
        result = invoke("predict", model, "--input", "huge.npz")
        refused(result, "is NaN or infinite although the inputs are finite", "audio 3e+38", "no prediction is made")
        assert "NaN" not in result.output.replace("is NaN or", "")  # no record was printed


def test_nan_weights_are_refused_when_loading_a_checkpoint_or_safetensors(tree):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    weights = tree / "R" / "checkpoints" / "best.safetensors"
    with safe_open(str(weights), framework="pt") as fh:
        header = fh.metadata()
    state = load_file(str(weights))
    name = _nan_into(state, "encoders.audio")
    save_file(state, str(tree / "nan.safetensors"), metadata=header)
    refused(invoke("predict", "nan.safetensors", "--input", "x.npz"), "holds NaN or infinite weights", name)
    ckpt = torch.load(tree / "R" / "checkpoints" / "best.ckpt", weights_only=True)
    _nan_into(ckpt["state_dict"], "net.encoders.audio")
    torch.save(ckpt, tree / "nan.ckpt")
    refused(invoke("predict", "nan.ckpt", "--input", "x.npz"), "checkpoint nan.ckpt holds NaN or infinite weights")
    refused(invoke("evaluate", "nan.ckpt", "--out", "ev"), "holds NaN or infinite weights")


def test_resuming_from_a_nan_last_checkpoint_says_what_is_wrong(tree):
    """It used to train on, diverge at once, and call the NaN file 'the last good checkpoint'."""
    last = tree / "R" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    _nan_into(ckpt["state_dict"], "net.")
    torch.save(ckpt, last)
    result = invoke("train", TRAIN_YAML, *sets("method=sf_md"), "--out", "R")
    said = refused(result, "cannot resume from", "last.ckpt: it holds NaN or infinite weights", "--overwrite")
    assert "last good checkpoint" not in said


def test_pretrained_weights_are_checked_before_they_are_trusted(tree):
    from mmanet.config import ConfigError
    from mmanet.models.factory import load_pretrained

    resnet = {"conv1.weight": torch.full((8, 3, 7, 7), float("nan"))}
    torch.save(resnet, tree / "nan.pth")
    with pytest.raises(ConfigError, match=r"model.pretrained=.*nan.pth holds NaN or infinite weights"):
        load_pretrained(None, str(tree / "nan.pth"))
    (tree / "evil.pth").write_bytes(pickle.dumps({"conv1.weight": _Evil()}))
    with pytest.raises(ConfigError) as err:
        load_pretrained(None, str(tree / "evil.pth"))
    assert "weights_only" not in str(err.value) and "no code in it was run" in str(err.value)


class _Evil:
    def __reduce__(self):
        return (print, ("this ran",))


# ----------------------------------------------------------------------------- files checked before they are trusted


@pytest.mark.parametrize("kind", ["text", "pickle", "empty"])
def test_a_file_that_is_not_an_npz_never_gets_the_allow_pickle_advice(tree, kind):
    content = {"text": b"label,accel\n1,2\n", "pickle": pickle.dumps({"accel": [1, 2]}), "empty": b""}[kind]
    (tree / "bad.npz").write_bytes(content)
    said = refused(invoke("predict", "R", "--input", "bad.npz"), "bad.npz is not a readable .npz archive")
    assert "allow_pickle" not in said and "never unpickles" in said
    (tree / "D" / "val.npz").write_bytes(content)
    said = refused(invoke("train", TRAIN_YAML, *sets("method=sf_md"), "--out", "T"), "val.npz is not a readable")
    assert "allow_pickle" not in said
    np.savez(tree / "objects.npz", accel=np.array([{"a": 1}], dtype=object))
    said = refused(invoke("predict", "R", "--input", "objects.npz"), "array 'accel'", "never unpickles data")
    assert "allow_pickle" not in said


def _header(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        return json.loads(fh.metadata()["mmanet"]), load_file(str(path))


def _rewrite(path: Path, header: dict, state: dict) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"mmanet": json.dumps(header)})


def test_a_safetensors_header_that_disagrees_with_itself_is_refused(tree):
    header, state = _header(tree / "R" / "checkpoints" / "best.safetensors")
    without = json.loads(json.dumps(header))
    del without["info"]["normalization"]["audio"]  # used to skip the audio normalisation silently
    _rewrite(tree / "a.safetensors", without, state)
    refused(invoke("predict", "a.safetensors", "--input", "x.npz"), "normalisation covers modalities", "audio")
    short = json.loads(json.dumps(header))
    short["info"]["class_names"] = short["info"]["class_names"][:-1]  # used to rename the classes "0", "1", …
    _rewrite(tree / "b.safetensors", short, state)
    refused(invoke("predict", "b.safetensors", "--input", "x.npz"), "its class list has", "but the model predicts")
    more = json.loads(json.dumps(header))
    more["info"]["num_classes"] += 1
    more["info"]["class_names"].append("extra")
    _rewrite(tree / "c.safetensors", more, state)
    refused(invoke("predict", "c.safetensors", "--input", "x.npz"), "do not fit the stored model configuration")


def test_a_model_card_whose_classes_or_normalisation_disagree_with_the_graph_is_refused(tree):
    from test_tracebacks import _edit_card

    graph = tree / "R" / "checkpoints" / "best.onnx"
    shutil.copy(graph, tree / "classes.onnx")
    _edit_card(tree / "classes.onnx", lambda card: card["classes"].append("extra"))
    said = refused(invoke("predict", "classes.onnx", "--input", "x.npz"), "lists", "classes", "the graph predicts")
    assert "zip()" not in said
    shutil.copy(graph, tree / "norm.onnx")
    _edit_card(tree / "norm.onnx", lambda card: card["modalities"][0].update(normalization=None))
    refused(invoke("predict", "norm.onnx", "--input", "x.npz"), "has no normalisation for ['accel']")


# ----------------------------------------------------------------------------- images


def _png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit PNG (grey or RGB), written by hand: Pillow cannot write 48-bit RGB."""
    h, w, c = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def test_a_16_bit_or_float_image_for_an_rgb_modality_is_refused_not_clipped(faces):
    deep = np.random.default_rng(0).integers(0, 65535, (32, 32, 3)).astype(np.uint16)
    _png16(faces / "rgb48.png", deep)
    _png16(faces / "grey16.png", deep[:, :, :1])
    Image.fromarray(np.ones((32, 32), np.float32) * 300.0).save(faces / "float.tiff")
    for image, mode in (("rgb48.png", "'RGB', more than 8 bits"), ("grey16.png", "I;16"), ("float.tiff", "'F'")):
        said = refused(invoke("predict", "RC", "--input", f"rgb={image}"), "for an RGB modality", mode, image)
        assert "clip" in said
    Image.fromarray(deep[:, :, 0].astype(np.uint8)).convert("RGB").save(faces / "ok.png")
    assert invoke("predict", "RC", "--input", "rgb=ok.png").exit_code == 0


def test_the_nyuv2_loader_refuses_a_16_bit_rgb_image(tmp_path):
    import sys

    from mmanet.data.base import DataError
    from mmanet.data.nyuv2 import load

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fixtures_segmentation import write_nyuv2_prepared

    write_nyuv2_prepared(tmp_path / "N")
    first = sorted((tmp_path / "N" / "train" / "rgb").iterdir())[0]
    h, w = np.asarray(Image.open(first)).shape[:2]
    _png16(first, np.full((h, w, 3), 40000, np.uint16))
    bundle = load(tmp_path / "N", image_size=[h, w], augment=False)
    with pytest.raises(DataError, match=rf"16-bit or float image .*for an RGB modality.*{first.name}"):
        [bundle.train[i] for i in range(len(bundle.train))]


def test_image_size_is_an_int_or_h_w_and_a_bad_one_is_refused_for_what_it_is(faces):
    result = invoke("train", FACE_YAML, *face_sets("data.options.image_size=[32, 24]"), "--out", "T")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((faces / "T" / "config.yaml").read_text())
    assert config["data"]["options"]["image_size"] == [32, 24]
    said = refused(
        invoke("train", FACE_YAML, *face_sets("data.options.image_size=[-4, 32]"), "--out", "U"),
        "data.options.image_size must be a positive integer or [H, W]",
        "positive numbers of pixels, got -4",
    )
    assert "must be an integer" not in said


def test_an_image_too_small_for_the_network_names_data_options_image_size_before_training(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fixtures_segmentation import write_nyuv2_prepared

    monkeypatch.chdir(tmp_path)
    write_nyuv2_prepared(tmp_path / "N")
    small = ("data.root=N", "model.width=8", "model.encoder.depth=18", "train.max_epochs=1", "data.batch_size=4",
             "data.num_workers=0", "train.progress_bar=false", "data.options.image_size=1")  # fmt: skip
    args = [a for pair in small for a in ("--set", pair)]
    yaml_file = Path(__file__).resolve().parents[2] / "configs" / "nyuv2" / "esanet_md.yaml"
    result = invoke("train", yaml_file, *args, "--out", "T")
    refused(result, "data.options.image_size: for images of 1×1 pixels the network predicts", "use larger images")
    assert not list((tmp_path / "T").glob("**/*.ckpt"))  # before training


# ----------------------------------------------------------------------------- messages name the key or the file


def test_a_negative_seed_is_refused_naming_seed_without_leaving_a_run_directory(tree):
    refused(invoke("train", TRAIN_YAML, *sets("seed=-5"), "--out", "T"), "seed: Input should be greater than or")
    refused(invoke("train", TRAIN_YAML, *sets("data.split_seed=-1"), "--out", "T"), "data.split_seed")
    assert not (tree / "T").exists()


def test_values_outside_float32_are_named_by_file_array_and_sample(tree):
    arrays = dict(np.load(tree / "D" / "train.npz"))
    arrays["audio"] = arrays["audio"].astype(np.float64)
    arrays["audio"][7, 0] = 1e300
    np.savez(tree / "D" / "train.npz", **arrays)
    refused(
        invoke("train", TRAIN_YAML, *sets("method=sf_md"), "--out", "T"),
        "array 'audio' in D/train.npz: sample 7 holds 1e+300",
        "outside float32's range",
    )
    inputs = dict(np.load(tree / "x.npz"))
    inputs["audio"] = inputs["audio"].astype(np.float64)
    inputs["audio"][3] = -1e39
    np.savez(tree / "far.npz", **inputs)
    said = refused(invoke("predict", "R", "--input", "far.npz"), "'audio' sample 3 holds -1e+39", "float32's range")
    assert "NaN or infinite" not in said
    inputs["present_audio"] = np.arange(len(inputs["audio"])) != 3  # a missing entry's values are ignored
    np.savez(tree / "far.npz", **inputs)
    assert invoke("predict", "R", "--input", "far.npz").exit_code == 0


def test_evaluate_on_a_benchmark_directory_suggests_a_run(tree):
    for label in ("HeMIS", "SF-MD"):
        shutil.copytree(tree / "R", tree / "B" / label / "seed_0")
    said = refused(invoke("evaluate", "B"), "B is a benchmark directory holding 2 runs", "e.g. B/HeMIS/seed_0")
    assert "e.g. B/HeMIS " not in said
    assert invoke("evaluate", "B/HeMIS/seed_0", "--out", "ev").exit_code == 0


def test_evaluate_out_never_replaces_a_picture_or_table_it_did_not_write(tmp_path, monkeypatch):
    root = copy_of(segmentation_tree(), tmp_path)
    monkeypatch.chdir(root)
    (root / "mine").mkdir()
    (root / "mine" / "predictions.png").write_bytes(b"my holiday picture")
    before = snapshot(tmp_path)
    refused(invoke("evaluate", "RS", "--out", "mine"), "mine/predictions.png already exists and is not a picture")
    assert changed_files(before, snapshot(tmp_path)) == [] and sorted(p.name for p in (root / "mine").iterdir()) == [
        "predictions.png"
    ]
    (root / "mine" / "predictions.png").unlink()
    (root / "mine" / "per_combination.md").write_text("my notes\n")
    refused(invoke("evaluate", "RS", "--out", "mine"), "mine/per_combination.md already exists")
    # its own earlier outputs are replaced by a rerun
    assert invoke("evaluate", "RS", "--out", "ev").exit_code == 0
    assert sorted(p.name for p in (root / "ev").iterdir()) == [
        "per_combination.csv",
        "per_combination.md",
        "predictions.png",
    ]
    assert invoke("evaluate", "RS", "--out", "ev").exit_code == 0


def test_a_moved_benchmark_keeps_its_runs_that_use_a_shared_teacher(tree):
    """Shared teachers are compared by content hash, not path: moving (or renaming) the benchmark directory
    used to make every run with a shared teacher look 'changed'."""
    base = {
        "data": {"name": "npz", "root": "D", "batch_size": 128},
        "model": {"channels": 8, "encoder": {"hidden": 16}, "head": {"hidden": 16}},
        "train": {"max_epochs": 1, "progress_bar": False},
        "teacher": {"max_epochs": 1},
        "mar": {"warmup_epochs": 1},
    }
    methods = [{"label": "MMANet", "method": "mmanet"}, {"label": "MAD", "method": "mad"}]
    (tree / "bench.yaml").write_text(yaml.safe_dump({"name": "b", "seeds": 1, "base": base, "methods": methods}))
    assert invoke("benchmark", "bench.yaml", "--out", "B").exit_code == 0
    saved = yaml.safe_load((tree / "B" / "MMANet" / "seed_0" / "config.yaml").read_text())
    assert saved["teacher"]["sha256"] and saved["teacher"]["checkpoint"].startswith("B/shared_teachers/")
    saved["teacher"]["sha256"] = None  # as mmanet wrote it before: the run's checkpoint records the hash
    (tree / "B" / "MMANet" / "seed_0" / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    shutil.move(tree / "B", tree / "moved")
    before = snapshot(tree / "moved")
    result = invoke("benchmark", "bench.yaml", "--out", "moved")
    assert result.exit_code == 0, result.output
    runs = [k for k in changed_files(before, snapshot(tree / "moved")) if "seed_0/" in k or "shared_teachers" in k]
    assert runs == []  # reused as they are: nothing trained again
    result = invoke("benchmark", "bench.yaml", "--out", str(tree / "moved"))  # the same place, named absolutely
    assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------- the rest of the classes


def _alias_bomb(levels: int = 8) -> str:
    """YAML whose aliases expand to 10^levels values (a few hundred bytes)."""
    lines = ["    l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for k in range(1, levels):
        lines.append(f"    l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


def test_configuration_files_are_read_at_a_bounded_cost(tree):
    """Ten nested aliases used to hang `mmanet train` while the configuration was merged and checked."""
    import time

    (tree / "bomb.yaml").write_text("method: sf_md\ndata:\n  name: npz\n  root: D\n  options:\n" + _alias_bomb())
    start = time.perf_counter()
    refused(invoke("train", "bomb.yaml", "--out", "T"), "config file bomb.yaml cannot be read", "aliases")
    assert time.perf_counter() - start < 30 and not (tree / "T").exists()
    (tree / "D" / "dataset.yaml").write_text("class_names:\n" + _alias_bomb().replace("    l", "  - l"))
    (tree / "D" / "dataset.yaml").write_text("modalities: &m [accel, thermal, audio]\nbomb:\n" + _alias_bomb())
    refused(invoke("train", TRAIN_YAML, *sets("method=sf_md"), "--out", "T"), "dataset.yaml", "aliases")
    (tree / "big.yaml").write_text("method: sf_md\n" + "# padding\n" * 500_000)
    refused(invoke("train", "big.yaml", "--out", "T"), "big.yaml cannot be read", "more than the")


def test_keys_that_count_the_data_modalities_are_checked_against_the_data(tree):
    refused(
        invoke(
            "train", TRAIN_YAML, *sets("method=sf_md", "dropout.mode=bernoulli", "dropout.p=[0.5, 0.5]"), "--out", "T"
        ),
        "dropout.p lists 2 keep probabilities but the data has 3 modalities",
    )
    refused(invoke("train", TRAIN_YAML, *sets("dropout.mode=bernoulli", "dropout.p=1.5"), "--out", "T"), "(0, 1]")
    refused(invoke("train", TRAIN_YAML, *sets("dropout.p=0.5"), "--out", "T"), "dropout.mode: bernoulli only")
    refused(
        invoke("train", TRAIN_YAML, *sets("dropout.never_drop=[gps]"), "--out", "T"), "dropout.never_drop names 'gps'"
    )
    refused(invoke("train", TRAIN_YAML, *sets("method=mmanet", "mar.num_strong=3"), "--out", "T"), "mar.num_strong = 3")
