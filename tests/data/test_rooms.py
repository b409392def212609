"""Synthetic RGB-D rooms dataset: rendered splits, label/depth convention, in-memory and augmented access."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmanet import render as rooms_render
from mmanet.data import rooms
from mmanet.data.base import ArrayMultimodalDataset, DataError, MultimodalDataset, collate_samples
from mmanet.data.class_weights import class_weights, median_frequency_weights
from mmanet.data.registry import DATASETS
from mmanet.data.rgbd_segmentation import IMAGENET_MEAN, IMAGENET_STD, RGBDSegmentationDataset

H, W = 32, 40
TINY = {"num_train": 3, "num_val": 2, "num_test": 2, "height": H, "width": W}


def tiny(**options):
    return rooms.load(**{**TINY, "augment": False, **options})


def expected_target(labels: np.ndarray) -> torch.Tensor:
    """Renderer ids: 0 (void) → 255, k → k − 1."""
    ids = torch.from_numpy(labels.astype(np.int64))
    return torch.where(ids == 0, torch.tensor(255), ids - 1)


def test_registered_and_available():
    entry = DATASETS.get("rooms")
    assert entry.modalities == ("rgb", "depth") and "segmentation" in entry.task
    assert entry.availability(None)[0]


def test_bundle_and_in_memory_splits():
    bundle = tiny()
    assert bundle.name == "rooms" and bundle.task == "segmentation" and bundle.ignore_index == 255
    assert bundle.num_classes == 8 and bundle.class_names == list(rooms_render.CLASS_NAMES[1:])
    assert bundle.class_names[0] == "wall" and bundle.class_names[-1] == "window"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (3, 2, 2)
    assert bundle.input_shapes == {"rgb": (3, H, W), "depth": (1, H, W)}
    for split in ("train", "val", "test"):
        dataset = bundle.split(split)
        assert isinstance(dataset, ArrayMultimodalDataset) and isinstance(dataset, MultimodalDataset)
    inputs, present, target = collate_samples(bundle.val.__getitems__([0, 1]))  # batched access
    assert inputs["rgb"].shape == (2, 3, H, W) and inputs["depth"].shape == (2, 1, H, W)
    assert present.all() and target.shape == (2, H, W) and target.dtype == torch.long


def test_label_and_depth_convention():
    bundle = tiny(seed=4)
    scenes = rooms_render.render_rooms(3, 4, H, W)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for i in range(3):
        inputs, _, target = bundle.train[i]
        assert torch.equal(target, expected_target(scenes["label"][i]))
        rgb = torch.from_numpy(scenes["rgb"][i]).permute(2, 0, 1).float()
        assert torch.allclose(inputs["rgb"], (rgb / 255 - mean) / std, atol=1e-5)
        mm = torch.from_numpy(scenes["depth"][i].astype(np.float32))
        invalid = mm == 0
        assert invalid.any() and torch.equal(inputs["depth"][0][invalid], torch.zeros(int(invalid.sum())))
        assert torch.allclose(inputs["depth"][0][~invalid], (mm[~invalid] - 2857) / 1365, atol=1e-5)
    labels = torch.cat([bundle.train[i][2].flatten() for i in range(3)]).unique().tolist()
    assert 255 in labels and max(v for v in labels if v != 255) <= 7


def test_splits_disjoint_and_stable():
    bundle = tiny()
    val_scenes = rooms_render.render_rooms(2, 0, H, W, start=rooms.SPLIT_STARTS["val"])
    assert torch.equal(bundle.val.targets, torch.stack([expected_target(x) for x in val_scenes["label"]]))
    all_targets = [bundle.split(s).targets[i] for s in ("train", "val", "test") for i in range(len(bundle.split(s)))]
    assert len({t.numpy().tobytes() for t in all_targets}) == 7  # no scene appears twice
    bigger = tiny(num_train=4, num_val=3)
    assert torch.equal(bigger.train.targets[:3], bundle.train.targets)  # a split's scenes do not move
    assert torch.equal(bigger.test.targets, bundle.test.targets)
    assert not torch.equal(tiny(seed=1).train.targets, bundle.train.targets)


def test_augmented_training_split():
    bundle = tiny(augment=True)
    train = bundle.train
    assert isinstance(train, RGBDSegmentationDataset) and train.augment
    assert isinstance(bundle.val, ArrayMultimodalDataset) and isinstance(bundle.test, ArrayMultimodalDataset)
    inputs, present, target = train[0]
    assert inputs["rgb"].shape == (3, H, W) and inputs["depth"].shape == (1, H, W) and target.shape == (H, W)
    assert set(target.unique().tolist()) <= set(range(8)) | {255}
    again = train[0]
    assert torch.equal(again[0]["rgb"], inputs["rgb"]) and torch.equal(again[2], target)
    train.set_epoch(1)
    assert not torch.equal(train[0][0]["rgb"], inputs["rgb"])
    reference = tiny(augment=True).train  # same seed, epoch, index → same draws
    assert torch.equal(reference[0][0]["depth"], inputs["depth"]) and torch.equal(reference[0][2], target)
    loader = DataLoader(train, batch_size=3, num_workers=0)
    assert next(iter(loader))[0]["rgb"].shape == (3, 3, H, W)


def test_class_weights_same_for_both_access_paths():
    plain, augmented = tiny(), tiny(augment=True)
    weights = class_weights(plain)
    expected = median_frequency_weights(list(plain.train.targets), 8, 255)
    assert torch.allclose(weights, expected) and torch.allclose(class_weights(augmented), expected)


@pytest.mark.parametrize("option", ["num_train", "num_val", "num_test", "height", "width"])
def test_bad_options(option):
    with pytest.raises(DataError, match=option if option.startswith("num") else "height/width"):
        tiny(**{option: 0})
