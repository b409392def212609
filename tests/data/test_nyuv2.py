"""NYUv2 loader on tiny copies in both published forms (tests/fixtures_segmentation.py)."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fixtures_segmentation import (
    NYU_DEPTH_BY_CLASS,
    NYU_PALETTE,
    nyuv2_scenes,
    palette_class,
    write_nyuv2_mat,
    write_nyuv2_prepared,
)
from mmanet.data import nyuv2
from mmanet.data.base import DataError, DataUnavailableError, MultimodalDataset
from mmanet.data.class_weights import class_weights, median_frequency_weights
from mmanet.data.registry import DATASETS
from mmanet.data.rgbd_segmentation import IMAGENET_MEAN, IMAGENET_STD
from mmanet.data.transforms import ColorJitter, Compose

SIZE = [24, 32]


@pytest.fixture(scope="module")
def scenes():
    return nyuv2_scenes(count=12)


@pytest.fixture(scope="module")
def prepared(scenes, tmp_path_factory):
    return write_nyuv2_prepared(tmp_path_factory.mktemp("nyu_prepared"), scenes).root


@pytest.fixture(scope="module")
def mat(scenes, tmp_path_factory):
    return write_nyuv2_mat(tmp_path_factory.mktemp("nyu_mat"), scenes).root


@pytest.fixture
def copy(prepared, tmp_path):
    """A private copy of the prepared layout to break."""
    return shutil.copytree(prepared, tmp_path / "nyu")


def plain(root, **options):
    return nyuv2.load(root, **{"image_size": SIZE, "augment": False, **options})


def expected_target(scenes, number: int) -> torch.Tensor:
    """The documented convention: 40-class id k → k − 1, void 0 → 255."""
    label40 = torch.from_numpy(scenes.labels_40[scenes.index(number)].astype(np.int64))
    return torch.where(label40 == 0, torch.tensor(255), label40 - 1)


def numbers_of(dataset) -> list[int]:
    """1-based frame numbers of a dataset's records, in either form."""
    return [int(r.rgb.stem) if hasattr(r, "rgb") else r + 1 for r in dataset.records]


def test_registered_and_available(prepared, mat, tmp_path):
    entry = DATASETS.get("nyuv2")
    assert entry.modalities == ("rgb", "depth") and "segmentation" in entry.task
    assert entry.availability(prepared) == (True, f"NYUv2 prepared layout in {prepared}")
    ok, message = entry.availability(mat)
    assert ok and "mat" in message
    ok, message = entry.availability(tmp_path)
    assert not ok and "train.txt" in message and "nyu_depth_v2_labeled.mat" in message and "labels_40" in message
    ok, message = entry.availability(None)
    assert not ok and "data.root" in message


@pytest.mark.parametrize("form", ["prepared", "mat"])
def test_bundle_shapes_and_convention(form, prepared, mat, scenes):
    bundle = plain(prepared if form == "prepared" else mat)
    assert bundle.name == "nyuv2" and bundle.task == "segmentation" and bundle.spec.names == ("rgb", "depth")
    assert bundle.num_classes == 40 and bundle.ignore_index == 255
    assert bundle.class_names[0] == "wall" and bundle.class_names[-1] == "otherprop" and len(bundle.class_names) == 40
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (7, 1, 4)  # 8 train frames: 1 carved out
    assert bundle.input_shapes == {"rgb": (3, 24, 32), "depth": (1, 24, 32)}
    for split in ("train", "val", "test"):
        dataset = bundle.split(split)
        assert isinstance(dataset, MultimodalDataset)
        inputs, present, target = dataset[0]
        assert inputs["rgb"].shape == (3, 24, 32) and inputs["depth"].shape == (1, 24, 32)
        assert inputs["rgb"].dtype == inputs["depth"].dtype == torch.float32
        assert present.tolist() == [True, True] and target.dtype == torch.long and target.shape == (24, 32)
    assert numbers_of(bundle.test) == scenes.test
    for i, number in enumerate(scenes.test):
        target = bundle.test[i][2]
        assert torch.equal(target, expected_target(scenes, number))
    every = torch.cat(
        [bundle.split(s)[i][2].flatten() for s in ("train", "val", "test") for i in range(4 if s != "val" else 1)]
    )
    assert set(every.unique().tolist()) == {0, 1, 4, 6, 39, 255}  # wall, floor, chair, table, otherprop (40 → 39), void


def test_normalisation_rgb_and_depth(prepared, scenes):
    bundle = plain(prepared, depth="raw")
    number = scenes.test[0]
    inputs, _, _ = bundle.test[0]
    rgb = torch.from_numpy(scenes.rgb[scenes.index(number)]).permute(2, 0, 1).float()
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(inputs["rgb"], (rgb / 255 - mean) / std, atol=1e-5)
    raw = torch.from_numpy(scenes.raw_depth_mm[scenes.index(number)].astype(np.float32))
    depth = inputs["depth"][0]
    invalid = raw == 0
    assert invalid.any() and torch.equal(depth[invalid], torch.zeros(int(invalid.sum())))
    assert torch.allclose(depth[~invalid], (raw[~invalid] - 2841.95) / 1417.26, atol=1e-5)
    inpainted = plain(prepared).test[0][0]["depth"][0]
    assert (inpainted != 0).all() and not torch.equal(inpainted, depth)


def test_mat_form_equals_prepared_form(prepared, mat):
    for depth in ("inpainted", "raw"):
        a, b = plain(prepared, depth=depth, seed=3), plain(mat, depth=depth, seed=3)
        for split in ("train", "val", "test"):
            assert numbers_of(a.split(split)) == numbers_of(b.split(split))
            for i in range(len(a.split(split))):
                (xa, _, ya), (xb, _, yb) = a.split(split)[i], b.split(split)[i]
                assert torch.equal(xa["rgb"], xb["rgb"]) and torch.equal(ya, yb)
                assert torch.allclose(xa["depth"], xb["depth"], atol=1e-5)  # mm → m (float32) → mm
                assert torch.equal(xa["depth"] == 0, xb["depth"] == 0)


def test_v73_small_files_and_source_choice(scenes, prepared, tmp_path):
    root = write_nyuv2_mat(tmp_path / "v73", scenes, splits_format="v7.3", mapping_format="v7.3").root
    bundle = plain(root)
    assert numbers_of(bundle.test) == scenes.test
    assert torch.equal(bundle.test[1][2], expected_target(scenes, scenes.test[1]))
    both = shutil.copytree(prepared, tmp_path / "both")
    write_nyuv2_mat(both, scenes)
    assert isinstance(plain(both).test.reader, nyuv2.PreparedReader)  # auto prefers the prepared layout
    assert isinstance(plain(both, source="mat").test.reader, nyuv2.MatReader)
    with pytest.raises(DataUnavailableError, match="classMapping40.mat"):
        plain(prepared, source="mat")
    with pytest.raises(DataError, match="source"):
        plain(prepared, source="png")


def test_seeded_validation_carve_out(prepared, scenes):
    first, again, other = plain(prepared, seed=0), plain(prepared, seed=0), plain(prepared, seed=1)
    train, val = numbers_of(first.train), numbers_of(first.val)
    assert sorted(train + val) == scenes.train and not set(train) & set(val)
    assert numbers_of(again.val) == val
    carved = {tuple(numbers_of(plain(prepared, seed=s).val)) for s in range(6)}
    assert len(carved) > 1 and tuple(numbers_of(other.val)) in carved
    half = plain(prepared, val_fraction=0.5)
    assert (len(half.train), len(half.val)) == (4, 4)
    assert numbers_of(half.test) == scenes.test  # test is never touched
    for bad in (0, 1.0, -0.1, "0.1", True):
        with pytest.raises(DataError, match="val_fraction"):
            plain(prepared, val_fraction=bad)


def test_max_samples_and_options(prepared):
    small = plain(prepared, max_samples_per_split=2)
    assert (len(small.train), len(small.val), len(small.test)) == (2, 1, 2)
    assert set(numbers_of(small.train)) <= set(numbers_of(plain(prepared).train))
    for options, match in (
        ({"depth": "filled"}, "depth"),
        ({"image_size": [0, 4]}, "image_size"),
        ({"max_samples_per_split": 0}, "max_samples_per_split"),
    ):
        with pytest.raises(DataError, match=match):
            plain(prepared, **options)


def test_resize_keeps_invalid_depth_exact(prepared):
    bundle = nyuv2.load(prepared, image_size=[12, 20], depth="raw", augment=False)
    inputs, _, target = bundle.test[0]
    assert inputs["depth"].shape == (1, 12, 20) and target.shape == (12, 20)
    source = plain(prepared, depth="raw").test[0][0]["depth"]
    assert set(inputs["depth"].unique().tolist()) <= set(source.unique().tolist())  # nearest: no blended values


def decode_depth(depth: torch.Tensor) -> torch.Tensor:
    """Normalised inpainted depth → the fixture's 40-class id (depth is a function of the label)."""
    mm = depth * 1417.26 + 2841.95
    by_depth = {v: k for k, v in NYU_DEPTH_BY_CLASS.items()}
    values = torch.tensor(list(by_depth), dtype=torch.float32)
    nearest = (mm.flatten()[:, None] - values[None]).abs().argmin(1)
    return torch.tensor([by_depth[int(values[i])] for i in nearest]).view(mm.shape)


def to_target(label40: torch.Tensor) -> torch.Tensor:
    return torch.where(label40 == 0, torch.tensor(255), label40 - 1)


def test_augmentation_identical_across_rgb_depth_label(prepared):
    bundle = nyuv2.load(prepared, image_size=SIZE, augment=True)
    assert bundle.train.augment and not bundle.val.augment and not bundle.test.augment
    no_jitter = nyuv2.load(prepared, image_size=SIZE, augment=True).train
    no_jitter.transform = Compose([op for op in no_jitter.transform.ops if not isinstance(op, ColorJitter)])
    changed = 0
    for epoch in range(2):
        bundle.train.set_epoch(epoch)
        no_jitter.set_epoch(epoch)
        for i in range(len(bundle.train)):
            inputs, _, target = bundle.train[i]
            plain_inputs, _, plain_target = no_jitter[i]
            assert inputs["rgb"].shape == (3, 24, 32) and target.shape == (24, 32)
            # jitter is drawn after the geometry: depth and label are identical without it, rgb is not
            assert torch.equal(target, plain_target) and torch.equal(inputs["depth"], plain_inputs["depth"])
            assert not torch.equal(inputs["rgb"], plain_inputs["rgb"])
            # depth (nearest) encodes the label exactly; rgb (bilinear) agrees but at object borders
            assert torch.equal(to_target(decode_depth(inputs["depth"][0])), target)
            mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
            rgb = (plain_inputs["rgb"] * std + mean) * 255
            decoded = to_target(torch.from_numpy(palette_class(rgb, NYU_PALETTE)))
            assert (decoded == target).float().mean() > 0.85
            changed += not torch.equal(target, plain(prepared).train[i][2])
    assert changed > len(bundle.train)  # most draws move the frame


def test_augmentation_deterministic_by_seed_epoch_index(mat):
    def draw(seed: int, epoch: int, index: int):
        dataset = nyuv2.load(mat, seed=seed, image_size=SIZE, val_fraction=0.5).train
        dataset.set_epoch(epoch)
        return dataset[index]

    first = draw(0, 0, 1)
    assert all(torch.equal(a, b) for a, b in zip(first[0].values(), draw(0, 0, 1)[0].values(), strict=True))
    for other in (draw(0, 1, 1), draw(1, 0, 1)):
        assert not torch.equal(first[0]["rgb"], other[0]["rgb"])
    # workers see set_epoch (shared memory) and read the .mat through their own h5py handles
    dataset = nyuv2.load(mat, image_size=SIZE).train
    loader = DataLoader(dataset, batch_size=len(dataset), num_workers=2, persistent_workers=True)
    for epoch in (0, 3):
        dataset.set_epoch(epoch)
        batch = next(iter(loader))
        local = torch.stack([dataset[i][2] for i in range(len(dataset))])
        assert torch.equal(batch[2], local)


def test_class_weights(prepared, scenes):
    bundle = plain(prepared)
    weights = class_weights(bundle)
    labels = [expected_target(scenes, n) for n in numbers_of(bundle.train)]
    assert torch.allclose(weights, median_frequency_weights(labels, 40, 255))
    present = torch.zeros(40, dtype=torch.bool)
    present[torch.cat(labels).unique()[:-1]] = True  # all but 255
    assert weights.shape == (40,) and torch.equal(weights > 0, present) and present.sum() >= 4


def test_missing_list_and_files(copy):
    (copy / "test.txt").unlink()
    with pytest.raises(DataUnavailableError, match="test.txt"):
        nyuv2.load(copy, source="prepared")
    (copy / "test.txt").write_text("0003\n")
    (copy / "test" / "depth_raw" / "0003.png").unlink()
    nyuv2.load(copy)  # inpainted depth is all there
    with pytest.raises(DataError, match=r"depth.*0003\.png"):
        nyuv2.load(copy, depth="raw")


def test_malformed_list_line(copy):
    (copy / "train.txt").write_text("0001\n0002 extra\n")
    with pytest.raises(DataError, match="train.txt line 2"):
        nyuv2.load(copy)


def test_corrupt_png_and_bad_label(copy):
    bundle = plain(copy)
    path = bundle.test.records[0].rgb
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=r"test\.txt line 1.*0003\.png"):
        bundle.test[0]
    label = bundle.test.records[1].label
    Image.fromarray(np.full((24, 32), 41, dtype=np.uint8)).save(label)
    with pytest.raises(DataError, match=r"unexpected label id\(s\) \[41\].*labels_40"):
        bundle.test[1]


def test_mat_errors(scenes, tmp_path):
    root = write_nyuv2_mat(tmp_path / "m", scenes).root
    scipy.io.savemat(root / "splits.mat", {"trainNdxs": np.array([[1.0], [99.0]]), "testNdxs": np.array([[3.0]])})
    with pytest.raises(DataError, match="trainNdxs"):
        nyuv2.load(root)
    scipy.io.savemat(root / "splits.mat", {"train": np.array([[1.0]])})
    with pytest.raises(DataError, match=r"splits\.mat has no variable"):
        nyuv2.load(root)
    (root / "nyu_depth_v2_labeled.mat").write_bytes(b"not an hdf5 file")
    with pytest.raises(DataError, match="nyu_depth_v2_labeled.mat"):
        nyuv2.load(root)
    root = write_nyuv2_mat(tmp_path / "m2", scenes).root
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "a") as f:
        del f["rawDepths"]
    plain(root)  # inpainted depth is there
    with pytest.raises(DataError, match="rawDepths"):
        plain(root, depth="raw")
