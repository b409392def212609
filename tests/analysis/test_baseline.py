"""The empty combination's metric: the training majority class, by hand, for an error rate, ACER and mIoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmanet.analysis.baseline import label_counts, majority_confusion
from mmanet.reducers import metrics_from_confusion


class Labels:
    def __init__(self, targets):
        self.targets = torch.tensor(targets)


def test_error_of_the_majority_class():
    train = label_counts(Labels([0, 1, 1, 2, 1, -1, -1]), 3)  # −1: unlabelled, not counted
    assert train.tolist() == [1, 3, 1]
    test = label_counts(Labels([0, 0, 1, 2, 2, 2]), 3)
    metrics = metrics_from_confusion(majority_confusion(train, test), "error")
    assert metrics["error"] == pytest.approx(100 * 5 / 6)  # only the one test sample of class 1 is right


def test_acer_of_one_class_everywhere_is_50():
    confusion = majority_confusion(np.array([10, 3]), np.array([4, 6]))
    assert metrics_from_confusion(confusion, "acer", bona_fide_class=1)["acer"] == pytest.approx(50.0)


def test_miou_of_the_majority_pixel_class():
    class Maps:
        def label_maps(self):
            return iter([np.array([[0, 0], [1, 255]]), np.array([[0, 2], [2, 2]])])

    counts = label_counts(Maps(), 3)
    assert counts.tolist() == [3, 1, 3]  # 255 (void) not counted
    confusion = majority_confusion(np.array([5, 1, 2]), counts)  # class 0 everywhere
    # IoU_0 = 3 / 7; classes 1 and 2 have IoU 0
    assert metrics_from_confusion(confusion, "miou")["miou"] == pytest.approx(100 * (3 / 7) / 3)
