"""Median-frequency class weights for segmentation losses (Eigen & Fergus; the NYUv2/ESANet convention).

``freq_c = (pixels of class c) / (pixels of the images that contain c)``, counting every pixel
of such an image (void included), and ``w_c = median(freq) / freq_c`` with the median taken
over the classes that occur. A class that never occurs in the training labels gets weight 0
(it has no pixels to weight). Pass the result as ``weight=`` of a cross-entropy that ignores
the bundle's ``ignore_index``.

Design: the weights are not a DataBundle field. :func:`class_weights` computes them from a
bundle's training labels on first use and remembers them per training dataset object, so
a loader does not pay for a pass over the labels that a run may never ask for. It reads the
un-augmented labels: ``train.label_maps()`` where the dataset has it (the lazy RGB-D
datasets: label files only, at their stored size) or the ``(N, H, W)`` ``train.targets`` of
an in-memory dataset.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from mmanet.data.base import DataBundle, DataError

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def median_frequency_weights(
    labels: Iterable[Tensor | np.ndarray], num_classes: int, ignore_index: int | None = None
) -> Tensor:
    """``Tensor[num_classes]`` (float32) of median-frequency weights over label maps (see module docstring).

    Each item is one image's label map of any shape; ``ignore_index`` pixels count towards an
    image's pixel total but belong to no class; any other value outside ``0 … num_classes − 1``
    is a DataError.
    """
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    for number, label in enumerate(labels):
        values = np.asarray(label.cpu() if isinstance(label, Tensor) else label).astype(np.int64).ravel()
        valid = values[values != ignore_index] if ignore_index is not None else values
        if valid.size and (valid.min() < 0 or valid.max() >= num_classes):
            raise DataError(
                f"label map {number} holds ids outside 0..{num_classes - 1} (ignore index {ignore_index}): "
                f"{np.unique(valid[(valid < 0) | (valid >= num_classes)])[:8].tolist()}"
            )
        counts = np.bincount(valid, minlength=num_classes)
        class_pixels += counts
        image_pixels[counts > 0] += values.size
    present = class_pixels > 0
    if not present.any():
        raise DataError("no labelled pixel in the training labels: cannot compute class weights")
    frequency = np.zeros(num_classes, dtype=np.float64)
    frequency[present] = class_pixels[present] / image_pixels[present]
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = np.median(frequency[present]) / frequency[present]
    return torch.from_numpy(weights).float()


def _training_labels(bundle: DataBundle) -> Iterable[Tensor]:
    train = bundle.train
    label_maps = getattr(train, "label_maps", None)
    if callable(label_maps):
        return label_maps()
    targets = getattr(train, "targets", None)
    if isinstance(targets, Tensor) and targets.dim() == 3:
        return iter(targets)
    raise DataError(
        f"{bundle.name}: the training split offers neither label_maps() nor (N, H, W) targets to compute class weights"
    )


def class_weights(bundle: DataBundle) -> Tensor:
    """Median-frequency weights ``Tensor[num_classes]`` of a segmentation bundle's training labels (cached)."""
    if bundle.task != "segmentation":
        raise DataError(f"class weights are for segmentation bundles; {bundle.name!r} is {bundle.task}")
    key = (bundle.num_classes, bundle.ignore_index)
    per_dataset = _CACHE.setdefault(bundle.train, {})
    if key not in per_dataset:
        per_dataset[key] = median_frequency_weights(_training_labels(bundle), bundle.num_classes, bundle.ignore_index)
    return per_dataset[key].clone()
