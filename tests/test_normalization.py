"""Issue 12 case 13: the input normalisation travels with the model (checkpoint, evaluation, ONNX on raw inputs)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mmanet.config import resolve_run_config
from mmanet.data import load_dataset, mfeat
from mmanet.deploy import load_model
from mmanet.modality import ModalitySpec, all_combinations
from mmanet.normalization import InputNormalizer, Normalization
from mmanet.task import TaskInfo
from mmanet.training import evaluate_checkpoint, run
from mmanet.training.factory import load_bundle
from tests_helpers import make_raw_npz_dataset, npz_run_config


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("norm")
    data = make_raw_npz_dataset(root / "data")
    config = resolve_run_config(npz_run_config(data))
    run(config, root / "run")
    return root, config


def test_normalization_round_trips_through_task_info_and_checks_its_values():
    spec = ModalitySpec(("v", "img"))
    norms = {"v": Normalization.from_arrays([1.0, 2.0], [0.5, 4.0]), "img": Normalization.from_arrays([[[3.0]]], 2.0)}
    info = TaskInfo(spec, 3, {"v": (2,), "img": (1, 4, 4)}, class_names=("a", "b", "c"), normalization=norms)
    back = TaskInfo.from_dict(info.to_dict())
    assert back == info and back.normalization["img"].shape == (1, 1, 1)
    assert TaskInfo.from_dict({**info.to_dict(), "normalization": None, "class_names": []}).names_of_classes == [
        "0",
        "1",
        "2",
    ]
    for bad in ([1.0], [0.0]), ([np.nan], [1.0]), ([1.0, 2.0], [1.0, 1.0, 1.0]):
        with pytest.raises(ValueError):
            Normalization.from_arrays(*bad)


def test_every_checkpoint_stores_the_training_statistics(npz_run):
    root, config = npz_run
    _, metadata = load_model(root / "run")
    stored = metadata.info.normalization
    assert set(stored) == {"vec", "seq", "img"} and stored == load_bundle(config).normalization
    mean, std = stored["vec"].arrays()
    assert mean.shape == (5,) and mean.min() > 30 and std.min() > 1  # raw scale, not standardised
    assert stored["img"].shape == (1, 1, 1)  # per channel


def test_evaluating_on_other_data_uses_the_stored_statistics_not_refitted_ones(npz_run, tmp_path):
    root, _ = npz_run
    reference = evaluate_checkpoint(root / "run", "test")
    other = tmp_path / "other"
    shutil.copytree(root / "data", other)
    with np.load(other / "train.npz") as f:  # a different training split: other statistics if they were refitted
        train = {k: f[k] for k in f.files}
    train["vec"] = train["vec"] * 10.0 + 100.0
    train["img"] = train["img"] * 0.1
    np.savez(other / "train.npz", **train)
    moved = evaluate_checkpoint(root / "run", "test", data_root=str(other))
    assert moved.rows == reference.rows  # same test.npz, same statistics → the same numbers


def test_the_model_fed_raw_inputs_gives_the_evaluated_logits(npz_run):
    """What ``evaluate`` feeds the network (standardised by the loader) equals raw inputs + the stored normaliser."""
    root, config = npz_run
    model, metadata = load_model(root / "run")
    net = model.standardised_net
    bundle = load_bundle(config)
    normalizer = InputNormalizer(metadata.info.spec, metadata.info.normalization)
    with np.load(root / "data" / "test.npz") as f:
        raw = {m: torch.from_numpy(f[m]).float() for m in ("vec", "seq", "img")}
        raw["lengths_seq"] = torch.from_numpy(f["lengths_seq"])
    test = bundle.test
    standardised = {**test.arrays, "lengths_seq": test.lengths["seq"]}
    for combo in all_combinations(bundle.spec):
        present = test.present & combo.mask()
        keep = present.any(dim=1)
        with torch.no_grad():
            expected = net(rows(standardised, keep), present[keep])
            got = net(normalizer(rows(raw, keep), present[keep]), present[keep])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        # issue 24: the model load_model returns takes the raw values itself (NaN where absent or padded)
        torch.testing.assert_close(model(rows(raw, keep), present[keep]), expected, rtol=0, atol=1e-5)


def rows(arrays: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[keep] for k, v in arrays.items()}


def test_mfeat_reuses_stored_statistics_exactly():
    fitted = mfeat.load(seed=0)
    again = load_dataset("mfeat", seed=0, normalization=fitted.normalization)
    assert again.normalization == fitted.normalization
    assert torch.equal(again.test.arrays["fou"], fitted.test.arrays["fou"])
    other_split = mfeat.load(seed=1, normalization=fitted.normalization)
    assert other_split.normalization == fitted.normalization != mfeat.load(seed=1).normalization


# ----------------------------------------------------------- segmentation: raw inputs (depth: 0 = no reading stays 0)


def test_keep_zero_normalisation_round_trips_and_matches_the_dataset_pipeline():
    norm = Normalization.from_arrays(2857.0, 1365.0, keep_zero=True)
    assert Normalization.from_dict(norm.to_dict()) == norm and norm.to_dict()["keep_zero"] is True
    assert "keep_zero" not in Normalization.from_arrays(1.0, 2.0).to_dict()  # older dicts stay as they were
    raw = np.array([0.0, 2857.0, 4222.0], dtype=np.float32)
    np.testing.assert_allclose(norm.apply(raw), [0.0, 0.0, 1.0], atol=1e-6)
    spec = ModalitySpec(("rgb", "depth"))
    bundle = load_dataset("rooms", num_train=2, num_val=1, num_test=2, height=16, width=24, augment=False)
    assert set(bundle.normalization) == {"rgb", "depth"} and bundle.normalization["depth"].keep_zero
    normalizer = InputNormalizer(spec, bundle.normalization)
    depth_raw = torch.tensor([[[[0.0, 2857.0 + 1365.0]]]])
    rgb_raw = torch.full((1, 3, 1, 2), 255.0)
    out = normalizer({"rgb": rgb_raw, "depth": depth_raw}, torch.ones(1, 2, dtype=torch.bool))
    torch.testing.assert_close(out["depth"], torch.tensor([[[[0.0, 1.0]]]]))
    expected_rgb = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(out["rgb"][0, :, 0, 0], expected_rgb)
