"""Cityscapes loader on a tiny copy in the official layout (tests/fixtures_segmentation.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from fixtures_segmentation import CITY_PALETTE, palette_class, write_cityscapes
from mmanet.data import cityscapes
from mmanet.data.base import DataError, DataUnavailableError
from mmanet.data.class_weights import class_weights, median_frequency_weights
from mmanet.data.registry import DATASETS
from mmanet.data.rgbd_segmentation import IMAGENET_MEAN, IMAGENET_STD
from mmanet.data.transforms import ColorJitter, Compose, PairedSample

SIZE = [24, 32]
#: the published labelId → trainId table, written out independently of the loader
PUBLISHED = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
             27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return write_cityscapes(tmp_path_factory.mktemp("cityscapes"), frames_per_city=3)


@pytest.fixture
def copy(city, tmp_path):
    return shutil.copytree(city.root, tmp_path / "cityscapes")


def plain(root, **options):
    return cityscapes.load(root, **{"image_size": SIZE, "augment": False, **options})


def train_ids(label_ids: np.ndarray) -> torch.Tensor:
    out = np.full(label_ids.shape, 255, dtype=np.int64)
    for label_id, train_id in PUBLISHED.items():
        out[label_ids == label_id] = train_id
    return torch.from_numpy(out)


def stems(dataset) -> list[str]:
    return [r.rgb.name.removesuffix("_leftImg8bit.png") for r in dataset.records]


def test_registered_and_available(city, tmp_path):
    entry = DATASETS.get("cityscapes")
    assert entry.modalities == ("rgb", "depth") and "segmentation" in entry.task
    assert entry.availability(city.root) == (True, f"Cityscapes in {city.root}")
    (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
    ok, message = entry.availability(tmp_path)
    assert not ok and "disparity/train" in message and "gtFine/val" in message and "leftImg8bit/train'" not in message
    assert not entry.availability(None)[0]
    assert (
        cityscapes.TRAIN_IDS == PUBLISHED and cityscapes.CLASS_NAMES[0] == "road" and len(cityscapes.CLASS_NAMES) == 19
    )


def test_splits_default_carve_and_official(city):
    bundle = plain(city.root)
    assert bundle.name == "cityscapes" and bundle.num_classes == 19 and bundle.ignore_index == 255
    official_train = [f.stem for f in city.frames["train"]]
    official_val = [f.stem for f in city.frames["val"]]
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (5, 1, 3)
    assert sorted(stems(bundle.train) + stems(bundle.val)) == sorted(official_train)
    assert stems(bundle.test) == official_val  # test = official val, untouched by the carve-out
    assert stems(plain(city.root).val) == stems(bundle.val)  # seeded
    assert len({tuple(stems(plain(city.root, seed=s).val)) for s in range(6)}) > 1
    official = plain(city.root, validation="official")
    assert stems(official.train) == official_train and stems(official.val) == stems(official.test) == official_val
    with pytest.raises(DataError, match="validation"):
        plain(city.root, validation="test")


def test_shapes_labels_and_depth(city):
    bundle = plain(city.root, validation="official")
    for i, frame in enumerate(city.frames["val"]):
        inputs, present, target = bundle.test[i]
        assert inputs["rgb"].shape == (3, 24, 32) and inputs["depth"].shape == (1, 24, 32)
        assert present.tolist() == [True, True] and target.dtype == torch.long
        assert torch.equal(target, train_ids(frame.label_ids))
        p = torch.from_numpy(frame.disparity.astype(np.float64))
        invalid = p <= 1  # p = 0 invalid; p = 1 is zero disparity (infinitely far), also invalid
        metres = frame.baseline * frame.fx / ((p[~invalid] - 1) / 256)
        depth = inputs["depth"][0]
        assert (p == 1).any() and (p == 0).any()
        assert torch.equal(depth[invalid], torch.zeros(int(invalid.sum())))
        assert torch.allclose(depth[~invalid].double(), (metres - 31.72) / 38.70, atol=1e-5)
        rgb = torch.from_numpy(frame.rgb).permute(2, 0, 1).float()
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        assert torch.allclose(inputs["rgb"], (rgb / 255 - mean) / std, atol=1e-5)
    labels = torch.cat([bundle.test[i][2].flatten() for i in range(len(bundle.test))]).unique().tolist()
    assert 255 in labels and {0, 10} <= set(labels)  # road, sky and void (0, 1 ego vehicle, 4 static)


def test_disparity_to_depth():
    p = torch.tensor([[0.0, 1.0, 257.0, 513.0]])
    assert cityscapes.disparity_to_depth(p, 0.2, 1000.0).tolist() == [[0.0, 0.0, 200.0, 100.0]]


def test_default_size_and_resize(city):
    assert cityscapes.load(city.root).input_shapes == {"rgb": (3, 512, 1024), "depth": (1, 512, 1024)}
    small = cityscapes.load(city.root, image_size=[12, 16], augment=False)
    inputs, _, target = small.test[0]
    assert inputs["depth"].shape == (1, 12, 16) and target.shape == (12, 16)
    full = plain(city.root).test[0][0]["depth"]
    assert set(inputs["depth"].unique().tolist()) <= set(full.unique().tolist())  # depth resampled nearest
    augmented = cityscapes.load(city.root, image_size=[12, 16]).train
    frame = augmented.reader.frame(augmented.records[0])
    sample = PairedSample({"rgb": frame.rgb, "depth": frame.depth}, frame.label)
    for seed in range(5):  # the random scale is relative to image_size, not to the stored 24×32
        scaled = augmented.transform.ops[0](sample, torch.Generator().manual_seed(seed))
        h, w = scaled.spatial_size()
        assert 12 <= h <= 17 and 16 <= w <= 23 and h / 12 == pytest.approx(w / 16, abs=0.05)
    assert augmented[0][0]["rgb"].shape == (3, 12, 16)


def test_augmentation_geometry_shared_and_deterministic(city):
    dataset = cityscapes.load(city.root, image_size=SIZE).train
    no_jitter = cityscapes.load(city.root, image_size=SIZE).train
    no_jitter.transform = Compose([op for op in no_jitter.transform.ops if not isinstance(op, ColorJitter)])
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    palette = {key: colour for key, colour in CITY_PALETTE.items() if key not in (1, 4)}  # void ids share black
    for i in range(len(dataset)):
        inputs, _, target = dataset[i]
        ref_inputs, _, ref_target = no_jitter[i]
        assert torch.equal(target, ref_target) and torch.equal(inputs["depth"], ref_inputs["depth"])
        decoded = train_ids(palette_class((ref_inputs["rgb"] * std + mean) * 255, palette))
        assert (decoded == target).float().mean() > 0.85
        again = dataset[i]
        assert torch.equal(again[0]["rgb"], inputs["rgb"]) and torch.equal(again[2], target)
    dataset.set_epoch(1)
    assert any(not torch.equal(dataset[i][2], no_jitter[i][2]) for i in range(len(dataset)))


def test_class_weights(city):
    bundle = plain(city.root)
    expected = median_frequency_weights(
        [train_ids(f.label_ids) for f in city.frames["train"] if f.stem in stems(bundle.train)], 19, 255
    )
    assert torch.allclose(class_weights(bundle), expected)


def test_missing_files_named(copy):
    shutil.rmtree(copy / "leftImg8bit" / "val")
    with pytest.raises(DataUnavailableError, match="leftImg8bit/val"):
        cityscapes.load(copy)
    frame = sorted((copy / "disparity" / "train" / "bochum").iterdir())[0]
    frame.unlink()
    with pytest.raises(DataError, match=rf"disparity.*1 of 6 file\(s\) missing.*{frame.name}"):
        cityscapes.load(copy)


def test_bad_camera_and_corrupt_png(copy):
    bundle = plain(copy, validation="official")
    record = bundle.test.records[0]
    record.camera.write_text(json.dumps({"extrinsic": {}, "intrinsic": {"fx": 2262.5}}))
    with pytest.raises(DataError, match=r"baseline.*camera\.json"):
        bundle.test[0]
    record = bundle.test.records[1]
    record.disparity.write_bytes(record.disparity.read_bytes()[:50])
    with pytest.raises(DataError, match=r"cannot decode image \(val/frankfurt/frankfurt_000001_000029.*disparity"):
        bundle.test[1]
