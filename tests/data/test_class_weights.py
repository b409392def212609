"""Median-frequency class weights against a hand-computed example, and their bundle-level cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmanet.data.base import ArrayMultimodalDataset, DataBundle, DataError
from mmanet.data.class_weights import class_weights, median_frequency_weights
from mmanet.modality import ModalitySpec

#: image A holds class 0 (2 px), class 1 (1 px) and one void pixel; image B is all class 1
IMAGE_A = [[0, 0], [1, 255]]
IMAGE_B = [[1, 1], [1, 1]]


def test_hand_computed_example():
    # class 0: 2 px in images containing it (A: 4 px) → 0.5; class 1: 5 px over A + B (8 px) → 0.625
    # median(0.5, 0.625) = 0.5625 → w0 = 1.125, w1 = 0.9; class 2 never occurs → 0
    weights = median_frequency_weights([torch.tensor(IMAGE_A), np.array(IMAGE_B)], num_classes=3, ignore_index=255)
    assert weights.dtype == torch.float32
    assert torch.allclose(weights, torch.tensor([1.125, 0.9, 0.0]))


def test_void_counts_towards_the_image_not_a_class():
    with_void = median_frequency_weights([IMAGE_A], 2, ignore_index=255)
    # class 0: 2/4, class 1: 1/4 → median 0.375 → 0.75, 1.5
    assert torch.allclose(with_void, torch.tensor([0.75, 1.5]))
    no_ignore = median_frequency_weights([[[0, 1], [1, 1]]], 2, ignore_index=None)
    assert torch.allclose(no_ignore, torch.tensor([2.0, 2 / 3]))  # 1/4 and 3/4, median 0.5


def test_errors():
    with pytest.raises(DataError, match=r"outside 0\.\.2.*\[7\]"):
        median_frequency_weights([[[0, 7]]], 3, ignore_index=255)
    with pytest.raises(DataError, match="no labelled pixel"):
        median_frequency_weights([[[255, 255]]], 3, ignore_index=255)


def bundle(task: str = "segmentation") -> DataBundle:
    spec = ModalitySpec(("a",))
    targets = torch.tensor([IMAGE_A, IMAGE_B]) if task == "segmentation" else torch.tensor([0, 1])
    data = ArrayMultimodalDataset(spec, {"a": torch.zeros(2, 1, 2, 2)}, targets)
    return DataBundle("tiny", spec, task, 3, data, data, data, ignore_index=255 if task == "segmentation" else None)


def test_class_weights_of_a_bundle_is_cached():
    b = bundle()
    first = class_weights(b)
    assert torch.allclose(first, torch.tensor([1.125, 0.9, 0.0]))
    first.zero_()  # the caller's copy; the cache keeps its own
    b.train.targets.fill_(1)  # not re-read: computed once per training dataset
    assert torch.allclose(class_weights(b), torch.tensor([1.125, 0.9, 0.0]))
    assert torch.allclose(class_weights(bundle()), torch.tensor([1.125, 0.9, 0.0]))
    with pytest.raises(DataError, match="segmentation"):
        class_weights(bundle("classification"))
