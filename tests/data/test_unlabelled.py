"""Unlabelled training samples (label -1): the mfeat ``semi`` protocol and npz files (issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmanet.data import DataError, mfeat
from mmanet.data.base import UNLABELLED, count_unlabelled
from mmanet.data.npz import load

needs_data = pytest.mark.skipif(
    mfeat._package_dir() is None or not mfeat.availability()[0], reason="mfeat CSVs not installed"
)


@needs_data
def test_mfeat_semi_keeps_the_low_label_samples_labelled_and_hides_the_rest():
    semi, low, standard = mfeat.load(protocol="semi"), mfeat.load(protocol="low_label"), mfeat.load()
    assert len(semi.train) == len(standard.train) == 1200
    labelled = semi.train.targets != UNLABELLED
    assert int(labelled.sum()) == 200 and count_unlabelled(semi.train) == 1000
    assert torch.bincount(semi.train.targets[labelled], minlength=10).tolist() == [20] * 10
    # the labelled part is exactly low_label's training set (same samples, same labels, same order);
    # its inputs are standardised with the statistics of all 1200 training samples instead of 200
    assert torch.equal(semi.train.targets[labelled], low.train.targets)
    raw_semi, raw_low = semi.train.arrays["mor"][labelled].double(), low.train.arrays["mor"].double()
    corr = torch.corrcoef(torch.stack([raw_semi[:, 0], raw_low[:, 0]]))[0, 1]
    assert corr > 0.999999
    # every hidden label belonged to a standard training sample; val and test are untouched
    assert torch.equal(semi.train.targets[labelled], standard.train.targets[labelled])
    assert bool(semi.train.present.all())  # the unlabelled samples have all modalities
    for split in ("val", "test"):
        assert torch.equal(semi.split(split).targets, standard.split(split).targets)
        torch.testing.assert_close(semi.split(split).arrays["fac"], standard.split(split).arrays["fac"])


def _split(n: int, seed: int, unlabelled: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 3
    vec = rng.normal(label[:, None], 1.0, (n, 4))
    label = label.copy()
    label[:unlabelled] = UNLABELLED
    return {"vec": vec, "aud": rng.normal(size=(n, 3)), "label": label}


def _write(root: Path, splits: dict[str, dict[str, np.ndarray]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, arrays in splits.items():
        np.savez(root / f"{name}.npz", **arrays)
    return root


def test_npz_train_may_hold_unlabelled_samples(tmp_path):
    root = _write(tmp_path, {"train": _split(60, 0, unlabelled=24), "val": _split(15, 1), "test": _split(15, 2)})
    bundle = load(root)
    assert bundle.num_classes == 3 and count_unlabelled(bundle.train) == 24
    assert bool((bundle.val.targets >= 0).all())


def test_npz_validation_is_carved_from_labelled_samples_only(tmp_path):
    root = _write(tmp_path, {"train": _split(90, 0, unlabelled=40), "test": _split(15, 2)})
    bundle = load(root, val_fraction=0.2)
    # 20 % of each class's labelled samples (17, 17, 16 → 3 each after rounding), none unlabelled
    assert len(bundle.val) == 9 and bool((bundle.val.targets >= 0).all())
    assert len(bundle.train) == 81 and count_unlabelled(bundle.train) == 40


@pytest.mark.parametrize("split", ["val", "test"])
def test_npz_unlabelled_samples_outside_train_are_an_error(tmp_path, split):
    splits = {"train": _split(60, 0), "val": _split(15, 1), "test": _split(15, 2)}
    splits[split] = _split(15, 3, unlabelled=2)
    root = _write(tmp_path, splits)
    with pytest.raises(DataError, match=rf"{split}.npz: 2 sample\(s\) are unlabelled \(label -1\); only train.npz"):
        load(root)


def test_npz_all_unlabelled_training_data_is_an_error(tmp_path):
    root = _write(tmp_path, {"train": _split(30, 0, unlabelled=30), "val": _split(15, 1), "test": _split(15, 2)})
    with pytest.raises(DataError, match="every sample is unlabelled"):
        load(root)


def test_other_negative_labels_stay_errors(tmp_path):
    train = _split(30, 0)
    train["label"][3] = -2
    root = _write(tmp_path, {"train": train, "val": _split(15, 1), "test": _split(15, 2)})
    with pytest.raises(DataError, match="label -2"):
        load(root)
