"""The labels of an npz dataset: one file's label array, and the task, number of classes and class names
over all splits (label ranges, unlabelled samples only in train.npz, classes seen in training)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmanet.data.base import UNLABELLED, DataError
from mmanet.data.npz.meta import META_FILE, DatasetMeta
from mmanet.npz_format import LABEL

if TYPE_CHECKING:
    from mmanet.data.npz.split import Split


def check_label_array(path: Path, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """One file's ``label`` array as int64 class indices ``(N,)`` or ``(N, H, W)``."""
    if LABEL not in arrays:
        raise DataError(f"{path} has no {LABEL!r} array (it has {sorted(arrays)}); save the targets as label=...")
    label = arrays[LABEL]
    if label.ndim not in (1, 3):
        raise DataError(
            f"array {LABEL!r} in {path} has shape {label.shape}; expected (N,) class indices (classification) "
            "or (N, H, W) (segmentation)"
        )
    if np.issubdtype(label.dtype, np.integer):
        return label.astype(np.int64)
    if np.issubdtype(label.dtype, np.floating):
        whole = np.isfinite(label) & (label == np.round(label))
        if whole.all():
            return label.astype(np.int64)
        first = np.unravel_index(int(np.flatnonzero(~whole.ravel())[0]), label.shape)
        raise DataError(
            f"array {LABEL!r} in {path} must hold integer class indices; sample {int(first[0])} has "
            f"{label[first].item()}"
        )
    raise DataError(f"array {LABEL!r} in {path} must hold integer class indices, got dtype {label.dtype}")


def label_convention(meta: DatasetMeta, splits: Mapping[str, Split], directory: Path) -> tuple[str, int, list[str]]:
    """Task, number of classes and class names; checks every split's labels against them."""
    train = splits["train"]
    rank = train.label.ndim - 1
    task = meta.task or ("classification" if rank == 0 else "segmentation")
    if (task == "classification") != (rank == 0):
        expected = "(N,)" if task == "classification" else "(N, H, W)"
        raise DataError(f"array {LABEL!r} in {train.file} has shape {train.label.shape}; task {task} needs {expected}")
    where = directory / META_FILE
    if task == "classification" and meta.ignore_index is not None:
        raise DataError(f"{where}: ignore_index only applies to segmentation (the void label)")
    if task == "segmentation" and meta.bona_fide_class is not None:
        raise DataError(f"{where}: bona_fide_class only applies to classification (ACER)")
    declared = meta.num_classes or (len(meta.class_names) if meta.class_names is not None else None)
    if task == "classification":
        _check_unlabelled(splits)
    highest = -1
    for split in splits.values():
        labelled = _labelled(split, meta.ignore_index)
        if labelled.size == 0:
            continue
        low, high = int(labelled.min()), int(labelled.max())
        bad = None
        if low < 0:
            bad = low
        elif declared is not None and high >= declared:
            bad = high
        if bad is not None:
            sample = int(np.argwhere(split.label == bad)[0][0])
            allowed = f"0..{declared - 1}" if declared is not None else "non-negative"
            void = f" or the ignore_index {meta.ignore_index}" if meta.ignore_index is not None else ""
            raise DataError(
                f"array {LABEL!r} in {split.file}: label {bad} (sample {sample}) is out of range; labels must be "
                f"{allowed}{void}"
            )
        highest = max(highest, high)
    if declared is None:
        _check_labels_seen_in_training(splits, meta.ignore_index)
    num_classes = declared if declared is not None else highest + 1
    if num_classes < 2:
        raise DataError(
            f"the labels in {directory} hold {max(num_classes, 0)} class(es); a classifier needs at least 2 "
            f"(set num_classes in {META_FILE} if some classes are absent from the files)"
        )
    if meta.bona_fide_class is not None and not 0 <= meta.bona_fide_class < num_classes:
        raise DataError(f"{where}: bona_fide_class {meta.bona_fide_class} is not a class (0..{num_classes - 1})")
    class_names = list(meta.class_names) if meta.class_names is not None else [str(k) for k in range(num_classes)]
    return task, num_classes, class_names


def _labelled(split: Split, ignore_index: int | None) -> np.ndarray:
    """The labels that name a class: without the void label (segmentation) and unlabelled samples (-1)."""
    if ignore_index is not None:
        return split.label[split.label != ignore_index]
    return split.label[split.label != UNLABELLED] if split.label.ndim == 1 else split.label


def _check_unlabelled(splits: Mapping[str, Split]) -> None:
    """Unlabelled samples (label -1) may only be in train.npz, which must keep some labelled ones."""
    for name, split in splits.items():
        unlabelled = int((split.label == UNLABELLED).sum())
        if not unlabelled:
            continue
        if name != "train":
            raise DataError(
                f"array {LABEL!r} in {split.file}: {unlabelled} sample(s) are unlabelled (label {UNLABELLED}); only "
                f"train.npz may hold unlabelled samples — the {name} split is scored, so every sample needs its label"
            )
        if unlabelled == len(split):
            raise DataError(
                f"array {LABEL!r} in {split.file}: every sample is unlabelled (label {UNLABELLED}); label some"
            )


def _check_labels_seen_in_training(splits: Mapping[str, Split], ignore_index: int | None) -> None:
    """Without a declared ``num_classes`` the classes are those of train.npz: a larger label elsewhere is an error.

    Otherwise a typo in test.npz (label 7 where the training labels are 0..4) would silently
    make an 8-class model with three classes that were never trained.
    """
    train_labels = _labelled(splits["train"], ignore_index)
    classes = int(train_labels.max()) + 1 if train_labels.size else 0
    for name, split in splits.items():
        labels = _labelled(split, ignore_index)
        if name == "train" or labels.size == 0 or int(labels.max()) < classes:
            continue
        unseen = np.unique(labels[labels >= classes])
        count = int(np.isin(split.label, unseen).any(axis=tuple(range(1, split.label.ndim))).sum())
        raise DataError(
            f"array {LABEL!r} in {split.file} (the {name} split): label {int(unseen[0])} is not a training label — "
            f"{count} {name} sample(s) have labels {unseen.tolist()}, but the labels of {splits['train'].file.name} "
            f"are 0..{classes - 1} ({classes} classes). Fix the labels, or declare the classes with num_classes "
            f"(or class_names) in {META_FILE} if some never occur in training"
        )
