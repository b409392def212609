"""Issue 12 cases 13 and 15: the exported files are self-contained (raw inputs, safetensors, model card)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from mmanet.config import resolve_run_config
from mmanet.deploy import load_model
from mmanet.deploy.checkpoint import model_hash_of_checkpoint
from mmanet.deploy.export import export_model
from mmanet.deploy.model_card import ONNX_KEY, config_hash
from mmanet.deploy.onnx import read_metadata
from mmanet.modality import all_combinations
from mmanet.training import run
from mmanet.training.factory import load_bundle
from tests_helpers import make_raw_npz_dataset, npz_run_config

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    config = resolve_run_config(npz_run_config(make_raw_npz_dataset(root / "data")))
    run(config, root / "run")
    return root, config, export_model(root / "run", root / "out" / "model.onnx")


def test_the_onnx_model_takes_raw_inputs_and_gives_the_evaluated_logits(exported):
    root, config, result = exported
    net = load_model(root / "run").standardised_net
    test = load_bundle(config).test  # what evaluate feeds the network: standardised by the loader
    session = ort.InferenceSession(str(result.onnx), providers=["CPUExecutionProvider"])
    with np.load(root / "data" / "test.npz") as f:  # raw: NaN in missing entries and in sequence padding
        raw = {k: f[k] for k in ("vec", "seq", "img", "lengths_seq")}
    raw = {k: v.astype(np.int64 if k.startswith("lengths") else np.float32) for k, v in raw.items()}
    standardised = {**test.arrays, "lengths_seq": test.lengths["seq"]}
    for combo in all_combinations(test.spec):
        present = test.present & combo.mask()
        keep = present.any(dim=1)
        with torch.no_grad():
            expected = net({k: v[keep] for k, v in standardised.items()}, present[keep]).numpy()
        feeds = {k: v[keep.numpy()] for k, v in raw.items()}
        got = session.run(["logits"], {**feeds, "present": present[keep].numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
        assert (got.argmax(1) == expected.argmax(1)).all()


def test_the_model_card_describes_inputs_classes_results_and_training(exported):
    root, config, result = exported
    card = json.loads(result.card.read_text())
    assert result.card == root / "out" / "model_card.json"
    assert [m["name"] for m in card["modalities"]] == ["vec", "seq", "img"]
    by_name = {m["name"]: m for m in card["modalities"]}
    assert by_name["seq"]["shape"] == [6, 2] and by_name["seq"]["lengths_input"] == "lengths_seq"
    assert by_name["img"]["kind"] == "image" and np.asarray(by_name["img"]["normalization"]["mean"]).shape == (1, 1, 1)
    _, metadata = load_model(root / "run")
    assert by_name["vec"]["normalization"] == metadata.info.normalization["vec"].to_dict()
    assert card["classes"] == ["0", "1", "2"] and card["task"] == "classification" and card["inputs_are_raw"]
    assert card["inputs"] == ["vec", "seq", "img", "lengths_seq", "present"]
    with (root / "run" / "per_combination_val.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["combination"] != "Average"]
    val = {r["combination"]: float(r["error"]) for r in rows}
    assert card["results"]["val"]["per_combination"] == pytest.approx(val)
    # issue 23: each combination's calibration, as the run's validation table has it
    card_calibration = card["results"]["val"]["calibration"]
    assert set(card_calibration) == set(val)
    for r in rows:
        expected = {"ece": float(r["ece"]), "confidence": float(r["confidence"])}
        assert card_calibration[r["combination"]] == pytest.approx(expected)
    assert set(card["results"]["test"]["per_combination"]) == set(val)
    training = card["training"]
    assert training["config"] == config.model_dump(mode="json") and training["config_sha256"] == config_hash(config)
    assert training["model_sha256"] == model_hash_of_checkpoint(root / "run" / "checkpoints" / "best.ckpt")
    assert training["teacher"] is None
    assert json.loads(read_metadata(result.onnx)[ONNX_KEY]) == card  # the .onnx alone carries the card


def test_the_safetensors_weights_rebuild_the_same_model_without_pickle(exported):
    root, _, result = exported
    assert result.safetensors == root / "out" / "model.safetensors"
    assert not result.safetensors.read_bytes().startswith(b"PK")  # not a zip of pickles
    a, meta_a = load_model(root / "run")
    b, meta_b = load_model(result.safetensors)
    assert meta_b.info == meta_a.info and meta_b.config == meta_a.config
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])


def test_an_mmanet_card_records_its_teacher_hash(tiny_config, tmp_path):
    cfg = tiny_config("mmanet", train__max_epochs=1, teacher__max_epochs=1)
    run(cfg, tmp_path / "run")
    result = export_model(tmp_path / "run")
    assert result.onnx == tmp_path / "run" / "checkpoints" / "best.onnx"
    teacher = json.loads(result.card.read_text())["training"]["teacher"]
    recorded = json.loads((tmp_path / "run" / "results.json").read_text())["teacher"]
    assert teacher["sha256"] == recorded["sha256"] == model_hash_of_checkpoint(recorded["path"])
