"""Bring your own data: a directory with ``train.npz``, ``test.npz`` and optionally ``val.npz`` (docs/design.md §6).

Each ``.npz`` file (written with ``numpy.savez``) holds one array per modality, ``label`` and optional
``present_<modality>`` / ``lengths_<modality>`` arrays, with a common first axis N
(:mod:`mmanet.npz_format`). In ``train.npz`` a classification label may be ``-1``: an unlabelled
sample, used only by the distillation terms of the mmanet stage (MAD, SP, KD), never by the task or
MAR losses.

Without ``val.npz`` a seeded stratified ``val_fraction`` of ``train.npz`` is the validation
split. An optional ``dataset.yaml`` beside the files (:mod:`.meta`) gives the modality
order, class names, the number of classes, the task and the label conventions (the bona fide
class for ACER, the void label of segmentation). Every problem raises a
:class:`~mmanet.data.base.DataError` that names the file and the array. This module is the loader;
one file is checked in :mod:`.split`, the labels in :mod:`.labels`, standardised in :mod:`.standardize`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmanet.data.base import (
    UNLABELLED,
    ArrayMultimodalDataset,
    DataBundle,
    DataError,
    DataUnavailableError,
    checked_normalization,
    stratified_split,
)
from mmanet.data.npz.labels import label_convention
from mmanet.data.npz.meta import META_FILE, META_KEYS, DatasetMeta, read_meta
from mmanet.data.npz.split import Split, check_file
from mmanet.data.npz.standardize import apply_standardization, fit_standardization
from mmanet.data.registry import DatasetEntry, register_dataset
from mmanet.modality import ModalityError, ModalitySpec
from mmanet.normalization import Normalization
from mmanet.npz_format import LABEL, PRESENT_PREFIX, modality_names, read_npz

__all__ = ["META_FILE", "META_KEYS", "OPTIONS", "DatasetMeta", "availability", "load", "read_meta"]

SPLITS = ("train", "val", "test")
#: the loader's options (``data.options`` in a run configuration)
OPTIONS = ("modalities", "standardize", "val_fraction")
ROOT_HINT = "set data.root to a directory with train.npz/test.npz"


# ---------------------------------------------------------------------------- the loader


def _directory(root: str | Path | None) -> Path:
    if root is None:
        raise DataUnavailableError(f"the npz dataset needs a directory: {ROOT_HINT}")
    directory = Path(root).expanduser()
    if not directory.is_dir():
        raise DataUnavailableError(f"data.root {directory} is not a directory ({ROOT_HINT})")
    missing = [f"{s}.npz" for s in ("train", "test") if not (directory / f"{s}.npz").is_file()]
    if missing:
        raise DataUnavailableError(
            f"{directory} has no {' or '.join(missing)} (found: {sorted(p.name for p in directory.iterdir())}); "
            f"{ROOT_HINT}, val.npz and {META_FILE} optional"
        )
    return directory


def availability(root: str | Path | None = None) -> tuple[bool, str]:
    try:
        directory = _directory(root)
    except DataUnavailableError as err:
        return False, ROOT_HINT if root is None else str(err)
    val = "val.npz" if (directory / "val.npz").is_file() else "val split from train.npz"
    return True, f"{directory}: train.npz, {val}, test.npz"


def _resolve_names(meta: DatasetMeta, train: Mapping[str, np.ndarray], train_path: Path, selected) -> tuple:
    if meta.modalities is not None:
        all_names = list(meta.modalities)
    else:
        all_names = modality_names(train)
        if not all_names:
            raise DataError(f"{train_path} holds no modality array (only {sorted(train)})")
    try:
        ModalitySpec(tuple(all_names))
    except ModalityError as err:
        raise DataError(f"{train_path}: {err}") from err
    if selected is None:
        return all_names, all_names
    if isinstance(selected, str) or not isinstance(selected, Sequence) or not selected:
        raise DataError(f"the npz option 'modalities' must be a non-empty list of names, got {selected!r}")
    unknown = [m for m in selected if m not in all_names]
    if unknown:
        raise DataError(f"unknown modality {unknown[0]!r} in the option 'modalities'; the data has {all_names}")
    if len(set(selected)) != len(selected):
        raise DataError(f"the option 'modalities' lists a modality twice: {list(selected)}")
    return all_names, [str(m) for m in selected]


def load(
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    standardize: bool = True,
    modalities: Sequence[str] | None = None,
    normalization: Mapping[str, Normalization] | None = None,
    **unknown: Any,
) -> DataBundle:
    """Load a ``train.npz`` / [``val.npz``] / ``test.npz`` directory (see the module docstring).

    ``seed`` and ``val_fraction`` only matter without ``val.npz`` (the seeded stratified split of
    ``train.npz``). ``standardize``: per modality and feature (images: per channel), with
    statistics of the present training entries (sequences: their valid time steps).
    ``modalities`` keeps a subset of the modalities, in the given order. ``normalization``: a
    trained model's stored statistics, used instead of fitting them (evaluation on new data).
    """
    if unknown:
        raise DataError(f"unknown npz option(s) {sorted(unknown)}; valid: {list(OPTIONS)}")
    if not isinstance(standardize, bool):
        raise DataError(f"the npz option 'standardize' must be true or false, got {standardize!r}")
    directory = _directory(root)
    if (directory / "dataset.yml").is_file() and not (directory / META_FILE).is_file():
        raise DataError(f"{directory / 'dataset.yml'} is not read; name it {META_FILE}")
    meta = read_meta(directory / META_FILE) if (directory / META_FILE).is_file() else DatasetMeta()
    paths = {s: directory / f"{s}.npz" for s in SPLITS if (directory / f"{s}.npz").is_file()}
    raw = {s: read_npz(p, DataError) for s, p in paths.items()}
    all_names, names = _resolve_names(meta, raw["train"], paths["train"], modalities)
    splits = {s: check_file(paths[s], raw[s], all_names, names, meta.modalities is not None) for s in raw}
    del raw
    train = splits["train"]

    # the same per-sample shapes everywhere; lengths arrays wherever any split has them
    for split in splits.values():
        for m in names:
            if split.arrays[m].shape[1:] != train.arrays[m].shape[1:]:
                raise DataError(
                    f"array {m!r} has per-sample shape {split.arrays[m].shape[1:]} in {split.file} but "
                    f"{train.arrays[m].shape[1:]} in {train.file}"
                )
        if split.label.shape[1:] != train.label.shape[1:]:
            raise DataError(
                f"array {LABEL!r} has per-sample shape {split.label.shape[1:]} in {split.file} but "
                f"{train.label.shape[1:]} in {train.file}"
            )
    sequence_with_lengths = sorted({m for split in splits.values() for m in split.lengths})
    for split in splits.values():
        for m in sequence_with_lengths:
            split.lengths.setdefault(m, np.full(len(split), split.arrays[m].shape[1], dtype=np.int64))

    task, num_classes, class_names = label_convention(meta, splits, directory)

    if "val" not in splits:
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) or not 0 < val_fraction < 1:
            raise DataError(f"the npz option 'val_fraction' must be between 0 and 1 (exclusive), got {val_fraction!r}")
        strata = train.label if task == "classification" else np.zeros(len(train), dtype=np.int64)
        # the validation part is scored: carve it from the labelled samples only
        labelled_idx = np.flatnonzero(strata != UNLABELLED)
        parts = stratified_split(strata[labelled_idx], (1.0 - val_fraction, val_fraction), seed)
        train_idx, val_idx = (labelled_idx[part] for part in parts)
        train_idx = np.sort(np.concatenate([train_idx, np.flatnonzero(strata == UNLABELLED)]))
        if len(train_idx) == 0 or len(val_idx) == 0:
            raise DataError(
                f"{train.file} has too few samples ({len(train)}) to split off val_fraction={val_fraction}; "
                "add val.npz or change val_fraction"
            )
        splits["train"], splits["val"] = train.subset(train_idx), train.subset(val_idx)
        train = splits["train"]
    never = [m for i, m in enumerate(names) if not train.present[:, i].any()]
    if never:
        raise DataError(
            f"modality {never[0]!r} is missing ({PRESENT_PREFIX}{never[0]}=False) in every training sample of "
            f"{train.file}"
        )

    stats = None
    if normalization is not None:
        stats = checked_normalization(normalization, names, {m: train.arrays[m].shape[1:] for m in names})
    elif standardize:
        stats = fit_standardization(train, names)
    if stats is not None:
        for split in splits.values():
            apply_standardization(split, names, stats)

    spec = ModalitySpec(tuple(names))

    def dataset(split: Split) -> ArrayMultimodalDataset:
        return ArrayMultimodalDataset(
            spec,
            {m: torch.from_numpy(split.arrays[m]) for m in names},
            torch.from_numpy(split.label),
            present=torch.from_numpy(split.present),
            lengths={m: torch.from_numpy(v) for m, v in split.lengths.items()},
        )

    return DataBundle(
        name="npz",
        spec=spec,
        task=task,  # type: ignore[arg-type]
        num_classes=num_classes,
        train=dataset(splits["train"]),
        val=dataset(splits["val"]),
        test=dataset(splits["test"]),
        class_names=class_names,
        bona_fide_class=meta.bona_fide_class,
        ignore_index=meta.ignore_index,
        normalization=None if stats is None else {m: stats[m] for m in names},
    )


register_dataset(
    DatasetEntry(
        name="npz",
        modalities=(),
        task="classification or segmentation (from the labels)",
        description="your own data: data.root = a directory with train.npz, test.npz (val.npz optional), each "
        "holding one array per modality (N, F) | (N, T, F) | (N, C, H, W), 'label', optional present_<m> "
        "(bool) and lengths_<m>; optional dataset.yaml with modalities, class_names, num_classes, task, "
        "bona_fide_class, ignore_index",
        load=load,
        availability=availability,
    )
)
