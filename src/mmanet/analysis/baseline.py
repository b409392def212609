"""The metric of the empty combination (issue 23): a model that sees no modality predicts the training majority.

``v(∅)`` of the Shapley game (:mod:`mmanet.analysis.shapley`): every test sample (classification) or every
labelled test pixel (segmentation) is given the class most frequent in the training labels (samples or
pixels; unlabelled training samples and void pixels do not count), and the headline metric and its
companions are computed from that confusion matrix by the same reducers as every table
(:func:`~mmanet.reducers.metrics_from_confusion`): an error rate of ``100 − share of the majority class``,
an ACER of 50, the mIoU of one class's IoU over the classes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from mmanet.data.base import DataBundle, DataError
from mmanet.reducers import metrics_from_confusion

__all__ = ["empty_combination_metrics", "label_counts", "majority_confusion"]


def _labels(dataset) -> Iterable[Tensor | np.ndarray]:
    """The dataset's labels without reading its inputs where it can (label files, an in-memory array)."""
    label_maps = getattr(dataset, "label_maps", None)
    if callable(label_maps):
        return label_maps()
    targets = getattr(dataset, "targets", None)
    if isinstance(targets, Tensor):
        return [targets]
    return (dataset[i][2] for i in range(len(dataset)))


def label_counts(dataset, num_classes: int) -> np.ndarray:
    """``int64[num_classes]``: how many samples (or pixels) of each class; labels outside 0..K−1 (void,
    unlabelled) are not counted."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for label in _labels(dataset):
        values = np.asarray(label.cpu() if isinstance(label, Tensor) else label).astype(np.int64).ravel()
        values = values[(values >= 0) & (values < num_classes)]
        counts += np.bincount(values, minlength=num_classes)
    return counts


def majority_confusion(train_counts: np.ndarray, test_counts: np.ndarray) -> Tensor:
    """The ``(K, K)`` confusion of predicting the training majority class for every test label."""
    if train_counts.sum() == 0:
        raise DataError("no labelled training sample: the training majority class is undefined")
    k = len(test_counts)
    confusion = torch.zeros((k, k), dtype=torch.long)
    confusion[:, int(np.argmax(train_counts))] = torch.from_numpy(test_counts.astype(np.int64))
    return confusion


def empty_combination_metrics(bundle: DataBundle, split: str, metric: str) -> dict[str, float]:
    """The metrics (%) on ``split`` of always predicting the training majority class."""
    train = label_counts(bundle.train, bundle.num_classes)
    test = label_counts(bundle.split(split), bundle.num_classes)
    return metrics_from_confusion(majority_confusion(train, test), metric, bundle.bona_fide_class)
