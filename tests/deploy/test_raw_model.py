"""Issue 24: ``load_model`` returns a model that takes RAW inputs — on mfeat it has the accuracy ``evaluate``
reports and equals the exported ONNX graph; the network as trained (standardised inputs) stays reachable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmanet.config import resolve_run_config
from mmanet.data import mfeat
from mmanet.deploy import load_model
from mmanet.deploy.export import export_model
from mmanet.deploy.inputs import InputError
from mmanet.modality import all_combinations
from mmanet.training import run
from mmanet.training.factory import load_bundle

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def mfeat_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    raw = {
        "method": "sf_md",
        "data": {"name": "mfeat", "options": {"protocol": "standard"}},
        "train": {"max_epochs": 10, "progress_bar": False, "num_threads": 1},
    }
    config = resolve_run_config(raw)
    result = run(config, root / "run")
    exported = export_model(root / "run", root / "export" / "model.onnx")
    return root, config, result, exported


def raw_test_data(config, model):
    """The mfeat test split as the data files hold it (``mfeat.raw_split``), and the loader's standardised one."""
    raw, labels = mfeat.raw_split("test", config.data.split_seed)
    test = load_bundle(config).test
    assert np.array_equal(labels, test.targets.numpy())
    return raw, test


def test_raw_mfeat_test_data_gives_the_evaluated_accuracy_and_the_onnx_logits(mfeat_model):
    root, config, result, exported = mfeat_model
    model, metadata = load_model(root / "run")
    raw, test = raw_test_data(config, model)
    full = metadata.info.spec.full.name
    logits = model(raw)  # every modality given: all present
    accuracy = 100.0 * int((logits.argmax(dim=1) == test.targets).sum()) / len(test.targets)
    assert accuracy == pytest.approx(100.0 - result.table.value(full), abs=1e-6)
    # the trap this closes: the standardised network fed raw values is far off
    with torch.no_grad():
        wrong = model.standardised_net({m: torch.from_numpy(v).float() for m, v in raw.items()}, test.present)
    assert 100.0 * int((wrong.argmax(dim=1) == test.targets).sum()) / len(test.targets) < accuracy - 5
    session = ort.InferenceSession(str(exported.onnx), providers=["CPUExecutionProvider"])
    for combo in all_combinations(metadata.info.spec)[::9]:
        present = np.broadcast_to(combo.mask().numpy(), (len(test.targets), len(combo.mask()))).copy()
        feeds = {m: v.astype(np.float32) for m, v in raw.items()}
        onnx_logits = session.run(["logits"], {**feeds, "present": present})[0]
        ours = model(raw, present).numpy()
        np.testing.assert_allclose(ours, onnx_logits, rtol=0, atol=1e-4)
        # a modality given but marked absent is the same as not giving it
        given = {m: v for m, v in raw.items() if combo.contains(m)}
        np.testing.assert_allclose(model(given).numpy(), ours, rtol=0, atol=1e-6)


def test_rows_without_a_modality_are_refused_and_nan_in_the_graph(mfeat_model):
    root, config, _, exported = mfeat_model
    model, metadata = load_model(root / "run")
    raw, _ = raw_test_data(config, model)
    present = np.ones((3, 6), dtype=bool)
    present[1] = False
    few = {m: v[:3] for m, v in raw.items()}
    with pytest.raises(InputError, match="sample 1 has no modality present"):
        model(few, present)
    with pytest.raises(InputError, match="unknown modality 'rgb'"):
        model({"rgb": np.zeros(3)})
    with pytest.raises(InputError, match=r"present must be bool of shape \(N, 6\)"):
        model(few, np.ones((3, 2), dtype=bool))
    session = ort.InferenceSession(str(exported.onnx), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {**{m: v.astype(np.float32) for m, v in few.items()}, "present": present})[0]
    assert np.isnan(logits[1]).all() and np.isfinite(logits[[0, 2]]).all()
    import json

    card = json.loads(exported.card.read_text())
    assert "NaN" in card["usage"]["empty_row"] and card["usage"]["outputs"].startswith("logits")
