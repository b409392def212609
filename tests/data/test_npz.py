"""The bring-your-own-data ``npz`` dataset: round trips, genuinely missing entries, every error, end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from mmanet.data import DATASETS, DataError, DataUnavailableError, load_dataset
from mmanet.data.npz import OPTIONS, load, read_meta

N = {"train": 60, "val": 20, "test": 20}
T, F_SEQ, F_VEC = 10, 3, 6


def make_split(n: int, seed: int, num_classes: int = 3) -> dict[str, np.ndarray]:
    """Three modalities (vector, variable-length sequence, 1×8×8 image); ~1/4 of vec and img missing."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % num_classes
    rng.shuffle(label)
    lengths = rng.integers(1, T + 1, n)
    seq = rng.normal(label[:, None, None], 1.0, (n, T, F_SEQ))
    seq[np.arange(T)[None, :] >= lengths[:, None]] = np.nan  # padding content must not matter
    present_vec = rng.random(n) > 0.25
    present_img = rng.random(n) > 0.25
    present_img[~present_vec] = True  # every sample keeps one modality besides seq anyway
    vec = rng.normal(label[:, None], 1.0, (n, F_VEC)) * np.arange(1, F_VEC + 1) + 5.0
    vec[~present_vec] = np.nan  # genuinely missing entries may hold anything
    img = rng.normal(0.5 * label[:, None, None, None], 2.0, (n, 1, 8, 8))
    img[~present_img] = 1e6
    return {
        "vec": vec,
        "seq": seq,
        "lengths_seq": lengths,
        "present_vec": present_vec,
        "img": img.astype(np.float32),
        "present_img": present_img,
        "label": label,
    }


def write(root: Path, splits: dict[str, dict[str, np.ndarray]], meta: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, arrays in splits.items():
        np.savez(root / f"{name}.npz", **arrays)
    if meta is not None:
        (root / "dataset.yaml").write_text(meta)
    return root


def default_splits(with_val: bool = True, **kwargs) -> dict[str, dict[str, np.ndarray]]:
    names = ("train", "val", "test") if with_val else ("train", "test")
    return {s: make_split(N[s], seed=i, **kwargs) for i, s in enumerate(names)}


def only(arrays: dict[str, np.ndarray], *keep: str) -> dict[str, np.ndarray]:
    return {k: v for k, v in arrays.items() if k == "label" or k in keep or k.split("_", 1)[-1] in keep}


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("modality", "shape"),
    [("vec", (F_VEC,)), ("seq", (T, F_SEQ)), ("img", (1, 8, 8))],
)
def test_round_trip_each_per_sample_shape(tmp_path, modality, shape):
    splits = {s: only(a, modality) for s, a in default_splits().items()}
    for arrays in splits.values():
        present = arrays.pop(f"present_{modality}", None)  # a single modality is always present
        if present is not None:
            arrays[modality][~present] = 3.0
    write(tmp_path, splits)
    bundle = load(tmp_path, standardize=False)
    assert bundle.name == "npz" and bundle.task == "classification"
    assert bundle.spec.names == (modality,)
    assert bundle.input_shapes == {modality: shape}
    assert bundle.num_classes == 3 and bundle.class_names == ["0", "1", "2"]
    for split in ("train", "val", "test"):
        ds, arrays = bundle.split(split), splits[split]
        assert len(ds) == N[split]
        expected = arrays[modality].astype(np.float32)
        if modality == "seq":
            lengths = arrays["lengths_seq"]
            expected = np.where(np.arange(T)[None, :, None] < lengths[:, None, None], expected, 0)
            assert torch.equal(ds.lengths["seq"], torch.from_numpy(lengths))
        np.testing.assert_array_equal(ds.arrays[modality].numpy(), expected)
        np.testing.assert_array_equal(ds.targets.numpy(), arrays["label"])
        assert bool(ds.present.all())
        inputs, present, target = ds[0]
        assert inputs[modality].shape == shape and present.shape == (1,) and target.dim() == 0
        assert ("lengths_seq" in inputs) == (modality == "seq")


def test_three_modalities_with_genuinely_missing_entries(tmp_path):
    splits = default_splits()
    write(tmp_path, splits)
    bundle = load(tmp_path, standardize=False)
    assert bundle.spec.names == ("vec", "seq", "img")  # the order of the arrays in train.npz
    for split in ("train", "val", "test"):
        ds, arrays = bundle.split(split), splits[split]
        np.testing.assert_array_equal(ds.present[:, 0].numpy(), arrays["present_vec"])
        assert bool(ds.present[:, 1].all())
        np.testing.assert_array_equal(ds.present[:, 2].numpy(), arrays["present_img"])
        # missing entries (NaN / 1e6 in the file) are zero-filled; present ones are kept as they are
        missing_vec = ~arrays["present_vec"]
        assert torch.all(ds.arrays["vec"][torch.from_numpy(missing_vec)] == 0)
        np.testing.assert_allclose(ds.arrays["vec"][~missing_vec].numpy(), arrays["vec"][~missing_vec], rtol=1e-6)
        assert torch.all(ds.arrays["img"][torch.from_numpy(~arrays["present_img"])] == 0)
        assert torch.isfinite(ds.arrays["seq"]).all()  # NaN padding zero-filled


def test_standardisation_uses_present_training_entries_only(tmp_path):
    splits = default_splits()
    write(tmp_path, splits)
    bundle = load(tmp_path)
    train = bundle.train
    vec = train.arrays["vec"][train.present[:, 0]].double()
    np.testing.assert_allclose(vec.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(vec.std(0, unbiased=False).numpy(), 1, atol=1e-4)
    valid = torch.arange(T)[None, :] < train.lengths["seq"][:, None]
    steps = train.arrays["seq"][valid].double()  # (valid steps, F)
    np.testing.assert_allclose(steps.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(steps.std(0, unbiased=False).numpy(), 1, atol=1e-4)
    assert torch.all(train.arrays["seq"][~valid] == 0)  # padding stays zero after standardising
    img = train.arrays["img"][train.present[:, 2]].double()  # per channel
    assert abs(float(img.mean())) < 1e-5 and abs(float(img.std(unbiased=False)) - 1) < 1e-4
    for ds in (bundle.train, bundle.val, bundle.test):
        assert torch.all(ds.arrays["vec"][~ds.present[:, 0]] == 0)
        assert torch.all(ds.arrays["img"][~ds.present[:, 2]] == 0)
    # the statistics come from train only: the test split is transformed with them
    raw = splits["test"]["vec"][splits["test"]["present_vec"]]
    present_train = splits["train"]["vec"][splits["train"]["present_vec"]]
    expected = (raw - present_train.mean(0)) / present_train.std(0)
    np.testing.assert_allclose(bundle.test.arrays["vec"][bundle.test.present[:, 0]].numpy(), expected, rtol=1e-4)


def test_dataset_yaml_sets_order_classes_and_acer_convention(tmp_path):
    meta = "modalities: [img, vec, seq]\nclass_names: [attack_a, attack_b, bona_fide, spare]\nbona_fide_class: 2\n"
    write(tmp_path, default_splits(), meta)
    bundle = load_dataset("npz", root=str(tmp_path))
    assert bundle.spec.names == ("img", "vec", "seq")
    assert bundle.num_classes == 4  # from class_names, even though class 3 never occurs
    assert bundle.class_names == ["attack_a", "attack_b", "bona_fide", "spare"]
    assert bundle.bona_fide_class == 2 and bundle.ignore_index is None
    assert bundle.train.present[:, 1].equal(torch.from_numpy(default_splits()["train"]["present_vec"]))


def test_modalities_option_keeps_a_subset_in_the_given_order(tmp_path):
    write(tmp_path, default_splits())
    bundle = load(tmp_path, modalities=["img", "seq"])
    assert bundle.spec.names == ("img", "seq")
    assert set(bundle.train.arrays) == {"img", "seq"} and set(bundle.train.lengths) == {"seq"}


def test_without_val_a_seeded_stratified_split_of_train(tmp_path):
    splits = default_splits(with_val=False)
    write(tmp_path, splits)
    a, b, c = load(tmp_path, seed=0), load(tmp_path, seed=0), load(tmp_path, seed=1, val_fraction=0.5)
    assert len(a.train) + len(a.val) == N["train"] and len(a.val) == 12  # 20 % of 60
    assert torch.equal(a.val.targets, b.val.targets) and torch.equal(a.val.arrays["vec"], b.val.arrays["vec"])
    assert torch.bincount(a.val.targets).tolist() == [4, 4, 4]  # stratified: 20 per class in train.npz
    assert len(c.val) == 30 and not torch.equal(c.val.arrays["img"][:12], a.val.arrays["img"])
    assert len(a.test) == N["test"]


def test_segmentation_labels_with_void(tmp_path):
    rng = np.random.default_rng(0)
    splits = {}
    for s, n in (("train", 8), ("test", 4)):
        label = rng.integers(0, 5, (n, 8, 8))
        label[:, 0, :] = 255
        splits[s] = {"rgb": rng.normal(size=(n, 3, 8, 8)), "depth": rng.normal(size=(n, 1, 8, 8)), "label": label}
    write(tmp_path, splits, "task: segmentation\nignore_index: 255\n")
    bundle = load(tmp_path, val_fraction=0.25)
    assert bundle.task == "segmentation" and bundle.ignore_index == 255 and bundle.num_classes == 5
    assert bundle.train.targets.shape == (6, 8, 8) and len(bundle.val) == 2
    # the task is inferred from the label shape when dataset.yaml does not say it
    (tmp_path / "dataset.yaml").write_text("ignore_index: 255\n")
    assert load(tmp_path).task == "segmentation"


def test_registry_entry_and_availability(tmp_path):
    entry = DATASETS.get("npz")
    assert "train.npz" in entry.description and "present_" in entry.description
    ok, message = entry.availability(None)
    assert not ok and "set data.root to a directory with train.npz/test.npz" in message
    assert entry.availability(tmp_path)[0] is False
    write(tmp_path, default_splits(with_val=False))
    ok, message = entry.availability(str(tmp_path))
    assert ok and "val split from train.npz" in message


def test_read_meta_accepts_an_empty_file(tmp_path):
    (tmp_path / "dataset.yaml").write_text("")
    assert read_meta(tmp_path / "dataset.yaml").modalities is None


# ---------------------------------------------------------------------------- errors


def _set(split: str, key: str, value):
    def edit(splits):
        splits[split][key] = value

    return edit


def _drop(split: str, key: str):
    def edit(splits):
        del splits[split][key]

    return edit


def _nan_in_present(splits):
    splits["val"]["vec"][np.flatnonzero(splits["val"]["present_vec"])[0], 2] = np.inf


def _nan_in_valid_step(splits):
    splits["train"]["seq"][3, 0, 1] = np.nan


def _no_present_modality(splits):
    test = splits["test"]
    test["present_seq"] = np.ones(N["test"], dtype=bool)
    test["present_vec"][5] = test["present_img"][5] = test["present_seq"][5] = False


ERROR_CASES = {
    "different N": (_set("train", "img", np.zeros((59, 1, 8, 8))), ["train.npz", "'img'", "59", "60"]),
    "modality missing from one split": (_drop("test", "seq"), ["'seq'", "test.npz", "missing"]),
    "label out of range (negative)": (_set("val", "label", np.arange(20) % 3 - 1), ["val.npz", "'label'", "-1"]),
    "label non-integer": (_set("train", "label", (np.arange(60) % 3) + 0.5), ["train.npz", "'label'", "integer"]),
    "label strings": (_set("train", "label", np.array(["a"] * 60)), ["train.npz", "'label'", "integer"]),
    "label missing": (_drop("test", "label"), ["test.npz", "'label'"]),
    "NaN/inf in a present entry": (_nan_in_present, ["val.npz", "'vec'", "NaN or infinite", "present_vec"]),
    "NaN in a valid time step": (_nan_in_valid_step, ["train.npz", "'seq'", "sample 3"]),
    "a sample with no present modality": (_no_present_modality, ["test.npz", "no present modality", "sample 5"]),
    "shapes differ between splits": (_set("test", "img", np.zeros((20, 1, 8, 9))), ["'img'", "test.npz", "train.npz"]),
    "lengths out of range": (_set("train", "lengths_seq", np.full(60, T + 1)), ["train.npz", "'lengths_seq'", "1..10"]),
    "lengths on a vector": (_set("train", "lengths_vec", np.ones(60, int)), ["train.npz", "'lengths_vec'", "sequence"]),
    "lengths not integer": (_set("val", "lengths_seq", np.ones(20)), ["val.npz", "'lengths_seq'", "integer"]),
    "present not bool": (_set("val", "present_vec", np.full(20, 0.5)), ["val.npz", "'present_vec'", "bool"]),
    "present for an unknown modality": (_set("val", "present_x", np.ones(20, bool)), ["val.npz", "'present_x'"]),
    "extra modality in one split": (_set("test", "gyro", np.zeros((20, 4))), ["test.npz", "'gyro'"]),
    "rank-4 per-sample shape": (_set("train", "img", np.zeros((60, 1, 1, 8, 8))), ["train.npz", "'img'", "(C, H, W)"]),
    "scalar per sample": (_set("train", "vec", np.zeros(60)), ["train.npz", "'vec'", "x[:, None]"]),
    "complex values": (_set("train", "vec", np.zeros((60, 6), complex)), ["train.npz", "'vec'", "numeric"]),
    "modality never present in train": (
        _set("train", "present_vec", np.zeros(60, bool)),
        ["'vec'", "every training sample"],
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_validation_errors_name_the_file_and_array(tmp_path, case):
    edit, fragments = ERROR_CASES[case]
    splits = default_splits()
    edit(splits)
    write(tmp_path, splits)
    with pytest.raises(DataError) as info:
        load(tmp_path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize(
    ("meta", "fragments"),
    [
        ("modalities: [vec, seq, img]\nclases: [a]\n", ["dataset.yaml", "'clases'", "class_names"]),
        ("num_classes: 2\n", ["train.npz", "label 2", "0..1"]),
        ("class_names: [a, b]\n", ["label 2", "0..1"]),
        ("num_classes: 3\nclass_names: [a, b]\n", ["class_names", "num_classes"]),
        ("task: detection\n", ["'task'", "classification"]),
        ("task: segmentation\n", ["'label'", "(N, H, W)"]),
        ("bona_fide_class: 3\n", ["bona_fide_class 3", "0..2"]),
        ("bona_fide_class: one\n", ["'bona_fide_class'", "integer"]),
        ("ignore_index: 255\n", ["ignore_index", "segmentation"]),
        ("modalities: [vec, seq]\n", ["train.npz", "'img'", "not a modality"]),
        ("modalities: [vec, seq, img, gyro]\n", ["'gyro'", "missing from", "train.npz"]),
        ("modalities: vec\n", ["'modalities'", "list"]),
        ("- a\n- b\n", ["dataset.yaml", "mapping"]),
        ("modalities: [vec\n", ["dataset.yaml"]),
    ],
)
def test_dataset_yaml_errors(tmp_path, meta, fragments):
    write(tmp_path, default_splits(), meta)
    with pytest.raises(DataError) as info:
        load(tmp_path)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def test_corrupt_and_non_npz_files(tmp_path):
    write(tmp_path, default_splits())
    data = (tmp_path / "val.npz").read_bytes()
    (tmp_path / "val.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="val.npz"):
        load(tmp_path)
    (tmp_path / "val.npz").write_text("not an archive")
    with pytest.raises(DataError, match="val.npz is not a readable .npz archive"):
        load(tmp_path)
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "val.npz").write_bytes((tmp_path / "single.npy").read_bytes())
    with pytest.raises(DataError, match="val.npz holds a single array"):
        load(tmp_path)
    splits = default_splits()
    splits["val"]["vec"] = np.array([object()] * 20, dtype=object)
    write(tmp_path, splits)
    with pytest.raises(DataError, match="'vec' in .*val.npz cannot be read"):
        load(tmp_path)


def test_options_and_directory_errors(tmp_path):
    with pytest.raises(DataUnavailableError, match="set data.root"):
        load(None)
    with pytest.raises(DataUnavailableError, match="not a directory"):
        load(tmp_path / "nowhere")
    write(tmp_path, {"train": make_split(60, 0)})
    with pytest.raises(DataUnavailableError, match="has no test.npz"):
        load(tmp_path)
    write(tmp_path, default_splits(with_val=False))
    with pytest.raises(DataError, match=r"unknown npz option\(s\) \['protocol'\]") as info:
        load(tmp_path, protocol="low_label")
    assert str(list(OPTIONS)) in str(info.value)
    with pytest.raises(DataError, match="val_fraction"):
        load(tmp_path, val_fraction=1.5)
    with pytest.raises(DataError, match="standardize"):
        load(tmp_path, standardize="yes")
    with pytest.raises(DataError, match="unknown modality 'gyro'"):
        load(tmp_path, modalities=["gyro"])
    (tmp_path / "dataset.yml").write_text("task: classification\n")
    with pytest.raises(DataError, match="name it dataset.yaml"):
        load(tmp_path)


# ---------------------------------------------------------------------------- end to end


def test_train_evaluate_end_to_end_and_missing_content_never_matters(tmp_path):
    from mmanet.config import resolve_run_config
    from mmanet.deploy import net_from_checkpoint
    from mmanet.training import run
    from mmanet.training.factory import load_bundle

    data = tmp_path / "data"
    splits = {"train": make_split(120, 0), "test": make_split(40, 1)}
    write(data, splits)
    config = resolve_run_config(
        {
            "method": "sf_md",
            "data": {"name": "npz", "root": str(data), "batch_size": 32},
            "model": {"channels": 8, "encoder": {"hidden": 16}, "head": {"hidden": 16}, "encoders": {"seq": "tcn"}},
            "train": {"max_epochs": 2, "progress_bar": False},
        }
    )
    result = run(config, tmp_path / "run")
    with (tmp_path / "run" / "per_combination.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and rows[-1]["combination"] == "Average"
    assert {r["combination"] for r in rows[:-1]} == {
        "vec",
        "seq",
        "img",
        "vec+seq",
        "vec+img",
        "seq+img",
        "vec+seq+img",
    }
    assert len(result.table.rows) == 7

    net, _, _, _ = net_from_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert type(net.encoders["seq"]).__name__ == "TemporalConvEncoder"
    assert (
        type(net.encoders["vec"]).__name__ == "MLPEncoder" and type(net.encoders["img"]).__name__ == "SmallCNNEncoder"
    )

    def predict(bundle, noise: float | None = None) -> torch.Tensor:
        inputs = dict(bundle.test.arrays)
        inputs["lengths_seq"] = bundle.test.lengths["seq"]
        present = bundle.test.present
        if noise is not None:  # bypass the loader's zero-fill: garbage straight into the network
            g = torch.Generator().manual_seed(0)
            for i, m in enumerate(("vec", "img")):
                garbage = noise * torch.randn(inputs[m].shape, generator=g)
                keep = present[:, i].reshape((-1,) + (1,) * (inputs[m].dim() - 1))
                inputs[m] = torch.where(keep, inputs[m], garbage)
        with torch.no_grad():
            return net(inputs, present)

    bundle = load_bundle(config)
    reference = predict(bundle)
    assert not bool(bundle.test.present.all())
    assert torch.allclose(predict(bundle, noise=1e3), reference, atol=1e-5)
    # the file's content of missing entries does not matter either (here: different garbage than before)
    edited = splits["test"]
    edited["vec"][~edited["present_vec"]] = -7.0
    edited["img"][~edited["present_img"]] = np.nan
    write(data, {"test": edited})
    assert torch.allclose(predict(load_bundle(config)), reference, atol=1e-6)


# ---------------------------------------------------------------------------- issue 12 (cases 8 and 11)


def test_a_label_outside_the_training_labels_is_an_error_naming_split_label_and_count(tmp_path):
    splits = default_splits()  # labels 0..2 everywhere
    splits["test"]["label"][[3, 8, 11]] = 7  # a typo would silently make an 8-class model
    write(tmp_path, splits)
    with pytest.raises(DataError) as err:
        load(tmp_path)
    message = str(err.value)
    assert "test.npz (the test split): label 7 is not a training label" in message
    assert "3 test sample(s) have labels [7]" in message and "are 0..2 (3 classes)" in message
    assert "num_classes" in message
    # declaring the classes makes it legal (some classes may be absent from training)
    write(tmp_path, splits, meta="num_classes: 8\n")
    assert load(tmp_path).num_classes == 8


def test_an_npz_header_claiming_an_impossible_shape_is_a_clear_error(tmp_path):
    import io
    import zipfile

    write(tmp_path, default_splits())
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 6)})
    with zipfile.ZipFile(tmp_path / "val.npz", "w") as archive:
        archive.writestr("vec.npy", header.getvalue() + b"\0" * 64)
    with pytest.raises(DataError, match=r"'vec' in .*val.npz is damaged: its header claims shape \(1000000000000, 6\)"):
        load(tmp_path)
