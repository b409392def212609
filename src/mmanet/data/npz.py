"""Bring your own data: a directory with ``train.npz``, ``test.npz`` and optionally ``val.npz`` (DESIGN §6).

Each ``.npz`` file (written with ``numpy.savez``) holds, with a common first axis N:

* one array per modality, named by the modality (``accel``, ``gyro``, ``rgb`` …); the
  per-sample shape is ``(F,)`` (vector), ``(T, F)`` (sequence) or ``(C, H, W)`` (image);
* ``label``: integer class indices ``(N,)`` (classification) or ``(N, H, W)`` (segmentation);
  in ``train.npz`` a classification label may be ``-1``: an unlabelled sample, used only by the
  distillation terms of the mmanet stage (MAD, SP, KD), never by the task or MAR losses;
* optional ``present_<modality>``: bool ``(N,)``, False where the modality is genuinely
  missing for that sample (its values are ignored and may even be NaN);
* optional ``lengths_<modality>``: int ``(N,)`` valid lengths 1..T of a sequence padded to T
  (values beyond a sample's length are ignored).

Without ``val.npz`` a seeded stratified ``val_fraction`` of ``train.npz`` is the validation
split. An optional ``dataset.yaml`` beside the files (:data:`META_KEYS`) gives the modality
order, class names, the number of classes, the task and the label conventions (the bona fide
class for ACER, the void label of segmentation). Every problem raises a
:class:`~mmanet.data.base.DataError` that names the file and the array.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mmanet.config_checks import load_yaml
from mmanet.data.base import (
    UNLABELLED,
    ArrayMultimodalDataset,
    DataBundle,
    DataError,
    DataUnavailableError,
    checked_normalization,
    stratified_split,
)
from mmanet.data.registry import DatasetEntry, register_dataset
from mmanet.modality import ModalityError, ModalitySpec
from mmanet.normalization import Normalization, NormalizationError, fit_normalization

SPLITS = ("train", "val", "test")
LABEL = "label"
PRESENT_PREFIX = "present_"
LENGTHS_PREFIX = "lengths_"
META_FILE = "dataset.yaml"
#: the keys a ``dataset.yaml`` may hold
META_KEYS = ("modalities", "class_names", "num_classes", "task", "bona_fide_class", "ignore_index")
TASKS = ("classification", "segmentation")
#: the loader's options (``data.options`` in a run configuration)
OPTIONS = ("modalities", "standardize", "val_fraction")
ROOT_HINT = "set data.root to a directory with train.npz/test.npz"
SHAPE_KINDS = {1: "vector (F,)", 2: "sequence (T, F)", 3: "image (C, H, W)"}


# ---------------------------------------------------------------------------- dataset.yaml


@dataclass(frozen=True)
class DatasetMeta:
    """The validated content of ``dataset.yaml`` (every field optional)."""

    modalities: tuple[str, ...] | None = None
    class_names: tuple[str, ...] | None = None
    num_classes: int | None = None
    task: str | None = None
    bona_fide_class: int | None = None
    ignore_index: int | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_meta(path: str | Path) -> DatasetMeta:
    """Read and validate a ``dataset.yaml``; an unknown key or a wrong type names the key."""
    path = Path(path)
    try:
        raw = load_yaml(path)
    except (OSError, ValueError, yaml.YAMLError) as err:  # (UnicodeDecodeError and YAMLTooLarge are ValueErrors)
        raise DataError(f"cannot read {path}: {err}") from None
    if raw is None:
        return DatasetMeta()
    if not isinstance(raw, dict):
        raise DataError(f"{path} must hold a mapping with the keys {list(META_KEYS)}, got {type(raw).__name__}")
    unknown = [str(k) for k in raw if k not in META_KEYS]
    if unknown:
        raise DataError(f"{path}: unknown key {unknown[0]!r}; valid keys: {list(META_KEYS)}")

    def fail(key: str, expected: str) -> DataError:
        return DataError(f"{path}: {key!r} must be {expected}, got {raw[key]!r}")

    values: dict[str, Any] = {}
    if raw.get("modalities") is not None:
        mods = raw["modalities"]
        if not isinstance(mods, list) or not mods or not all(isinstance(m, str) for m in mods):
            raise fail("modalities", "a non-empty list of modality (array) names")
        if len(set(mods)) != len(mods):
            raise fail("modalities", "a list without duplicates")
        values["modalities"] = tuple(mods)
    if raw.get("class_names") is not None:
        names = raw["class_names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str | int | float) for n in names):
            raise fail("class_names", "a non-empty list of names")
        values["class_names"] = tuple(str(n) for n in names)
    if raw.get("num_classes") is not None:
        if not _is_int(raw["num_classes"]) or raw["num_classes"] < 2:
            raise fail("num_classes", "an integer >= 2")
        values["num_classes"] = raw["num_classes"]
    if raw.get("task") is not None:
        if raw["task"] not in TASKS:
            raise fail("task", f"one of {list(TASKS)}")
        values["task"] = raw["task"]
    for key in ("bona_fide_class", "ignore_index"):
        if raw.get(key) is not None:
            if not _is_int(raw[key]):
                raise fail(key, "an integer")
            values[key] = raw[key]
    meta = DatasetMeta(**values)
    if meta.class_names is not None and meta.num_classes is not None and len(meta.class_names) != meta.num_classes:
        raise DataError(f"{path}: class_names has {len(meta.class_names)} names but num_classes is {meta.num_classes}")
    return meta


# ---------------------------------------------------------------------------- reading and checking one file


@dataclass
class _Split:
    """One split after validation: float32 arrays with missing entries and padding zero-filled."""

    file: Path
    arrays: dict[str, np.ndarray]
    label: np.ndarray
    present: np.ndarray  # (N, M) bool, in the modality order
    lengths: dict[str, np.ndarray]  # sequence modality -> (N,) int64 (full length T where absent)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def subset(self, idx: np.ndarray) -> _Split:
        return _Split(
            self.file,
            {m: v[idx] for m, v in self.arrays.items()},
            self.label[idx],
            self.present[idx],
            {m: v[idx] for m, v in self.lengths.items()},
        )


#: the first bytes of a zip archive (an ``.npz``), of a single ``.npy`` array, and of a pickle (protocol 2+)
ZIP_MAGIC, NPY_MAGIC, PICKLE_MAGIC = b"PK", b"\x93NUMPY", b"\x80"
#: numpy's advice to load a file with pickle enabled: never passed on (mmanet never unpickles data)
_PICKLE_ADVICE = re.compile(r"[^.;]*allow_pickle[^.;]*[.;]?\s*")


def _numpy_reason(err: BaseException) -> str:
    """numpy's message without its advice to enable ``allow_pickle``."""
    return _PICKLE_ADVICE.sub("", str(err)).strip() or type(err).__name__


def _file_kind(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(8)
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` archive, in stored order (``allow_pickle=False``).

    A file that is not a zip archive (text, a pickle named ``.npz``, a single ``.npy`` array) is refused by
    its first bytes, before numpy sees it: nothing in it is unpickled, and no message advises doing so."""
    path = Path(path)
    head = _file_kind(path)
    if head.startswith(NPY_MAGIC):
        raise DataError(f"{path} holds a single array, not an .npz archive of named arrays; write it with numpy.savez")
    if not head.startswith(ZIP_MAGIC):
        kind = "a Python pickle" if head.startswith(PICKLE_MAGIC) else "empty" if not head else "not a zip archive"
        raise DataError(
            f"{path} is not a readable .npz archive (it is {kind}); mmanet reads named numeric arrays written with "
            "numpy.savez, and never unpickles data"
        )
    errors = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
    try:
        archive = np.load(path, allow_pickle=False)
    except MemoryError:
        raise DataError(f"{path} is not an .npz archive: it holds one array too large to load") from None
    except errors as err:
        raise DataError(
            f"{path} is not a readable .npz archive ({_numpy_reason(err)}); write it with numpy.savez"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single array, not an .npz archive of named arrays; write it with numpy.savez")
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for key in archive.files:
            try:
                _check_header(archive.zip, key, path)
                arrays[key] = np.asarray(archive[key])
            except DataError:
                raise
            except MemoryError:
                raise DataError(f"array {key!r} in {path} is too large to load into memory") from None
            except errors as err:
                raise DataError(
                    f"array {key!r} in {path} cannot be read ({_numpy_reason(err)}); arrays must be numeric: mmanet "
                    "never unpickles data, so arrays of Python objects cannot be read"
                ) from None
    return arrays


def _check_header(archive: zipfile.ZipFile, key: str, path: Path) -> None:
    """Refuse a member whose ``.npy`` header claims more data than the member holds (before allocating it)."""
    member = f"{key}.npy" if f"{key}.npy" in archive.namelist() else key
    info = archive.getinfo(member)
    with archive.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(fh, max_header_size=1 << 20)
        header_size = fh.tell()
    if dtype.hasobject:
        return  # refused by allow_pickle=False when it is read
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = info.file_size - header_size
    if claimed > held:
        raise DataError(
            f"array {key!r} in {path} is damaged: its header claims shape {tuple(shape)} ({claimed:,} bytes of "
            f"{dtype}) but it holds {held:,} bytes; write the file again with numpy.savez"
        )


def _modality_names(arrays: Mapping[str, np.ndarray]) -> list[str]:
    return [k for k in arrays if k != LABEL and not k.startswith((PRESENT_PREFIX, LENGTHS_PREFIX))]


def _check_labels(path: Path, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
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


def _check_file(
    path: Path, arrays: dict[str, np.ndarray], all_names: Sequence[str], names: Sequence[str], from_meta: bool
) -> _Split:
    """Validate one file against the dataset's modalities; ``names`` are the ones kept."""
    label = _check_labels(path, arrays)
    n = int(label.shape[0])
    if n == 0:
        raise DataError(f"{path} holds no samples (array {LABEL!r} is empty)")
    found = _modality_names(arrays)
    missing = [m for m in all_names if m not in found]
    if missing:
        raise DataError(f"modality {missing[0]!r} is missing from {path} (its modality arrays: {found})")
    extra = [m for m in found if m not in all_names]
    if extra:
        source = f"listed in {META_FILE}" if from_meta else "the modality arrays of train.npz"
        raise DataError(
            f"{path} has an array {extra[0]!r} that is not a modality of the dataset ({source}: {list(all_names)}); "
            "every split must hold the same modality arrays"
        )
    for key in arrays:
        for prefix in (PRESENT_PREFIX, LENGTHS_PREFIX):
            if key.startswith(prefix) and key[len(prefix) :] not in all_names:
                raise DataError(
                    f"array {key!r} in {path} refers to modality {key[len(prefix) :]!r}, which is not one of "
                    f"{list(all_names)}"
                )
    for key, value in arrays.items():
        if value.ndim == 0 or value.shape[0] != n:
            raise DataError(f"array {key!r} in {path} has {_count(value)} samples but {LABEL!r} has {n}")

    values: dict[str, np.ndarray] = {}
    present = np.ones((n, len(names)), dtype=bool)
    lengths: dict[str, np.ndarray] = {}
    for i, m in enumerate(names):
        x = arrays[m]
        if x.ndim - 1 not in SHAPE_KINDS:
            raise DataError(
                f"array {m!r} in {path} has per-sample shape {x.shape[1:]}; expected (F,), (T, F) or (C, H, W)"
                + (" (use x[:, None] for a single feature)" if x.ndim == 1 else "")
            )
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating) or x.dtype == np.bool_):
            raise DataError(f"array {m!r} in {path} must be numeric, got dtype {x.dtype}")
        if (key := PRESENT_PREFIX + m) in arrays:
            p = arrays[key]
            if p.shape != (n,):
                raise DataError(f"array {key!r} in {path} has shape {p.shape}, expected ({n},)")
            if p.dtype != np.bool_:
                if not np.issubdtype(p.dtype, np.integer) or not np.isin(p, (0, 1)).all():
                    raise DataError(f"array {key!r} in {path} must be bool (True = present), got dtype {p.dtype}")
                p = p.astype(bool)
            present[:, i] = p
        valid = present[:, i].reshape((n,) + (1,) * (x.ndim - 1))
        if (key := LENGTHS_PREFIX + m) in arrays:
            if x.ndim != 3:
                raise DataError(
                    f"array {key!r} in {path}: lengths only apply to sequence modalities (T, F); {m!r} has "
                    f"per-sample shape {x.shape[1:]}"
                )
            steps = x.shape[1]
            lens = arrays[key]
            if lens.shape != (n,) or not np.issubdtype(lens.dtype, np.integer):
                raise DataError(
                    f"array {key!r} in {path} must be an integer array of shape ({n},), got {lens.dtype} {lens.shape}"
                )
            bad = present[:, i] & ((lens < 1) | (lens > steps))
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"array {key!r} in {path}: lengths must be in 1..{steps} (the padded length T) for present "
                    f"samples; {int(bad.sum())} are not (first: sample {j} has {int(lens[j])})"
                )
            lens = np.where(present[:, i], lens, steps).astype(np.int64)
            lengths[m] = lens
            valid = valid & (np.arange(steps)[None, :, None] < lens[:, None, None])
        finite = np.isfinite(x) if np.issubdtype(x.dtype, np.floating) else np.ones(x.shape, dtype=bool)
        bad = ~(finite | ~valid).reshape(n, -1).all(axis=1)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"array {m!r} in {path} has NaN or infinite values in {int(bad.sum())} present sample(s) "
                f"(first: sample {j}); fix them or mark the samples missing with {PRESENT_PREFIX + m}=False"
            )
        check_float32_range(x, valid, f"array {m!r} in {path}")
        values[m] = np.where(valid, x, 0).astype(np.float32)
    empty = ~present.any(axis=1)
    if empty.any():
        j = int(np.flatnonzero(empty)[0])
        which = f"of {list(names)} " if list(names) != list(all_names) else ""
        raise DataError(
            f"{path}: {int(empty.sum())} sample(s) have no present modality {which}(first: sample {j}); "
            "every sample needs at least one"
        )
    return _Split(path, values, label, present, lengths)


#: the largest magnitude float32 holds: mmanet computes in float32, so a larger (finite) value becomes infinite
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_float32_range(
    x: np.ndarray, valid: np.ndarray, what: str, fix: str = "rescale the data (other units)"
) -> None:
    """A DataError when a valid (finite) value of ``x`` lies outside float32's range: the cast to float32
    would turn it into ±inf, and it would surface later as a NaN loss or a non-finite statistic."""
    if not np.issubdtype(x.dtype, np.floating) or np.finfo(x.dtype).max <= FLOAT32_MAX:
        return
    huge = (np.abs(np.where(np.isfinite(x), x, 0)) > FLOAT32_MAX) & np.broadcast_to(valid, x.shape)
    if huge.any():
        first = np.unravel_index(int(np.flatnonzero(huge.ravel())[0]), x.shape)
        rows = int(huge.reshape(len(x), -1).any(axis=1).sum())
        raise DataError(
            f"{what}: sample {int(first[0])} holds {float(x[first]):.3g}, a finite {x.dtype} value outside float32's "
            f"range (±{FLOAT32_MAX:.2g}), in which mmanet computes ({rows} sample(s) like this); {fix}"
        )


def _count(value: np.ndarray) -> int | str:
    return value.shape[0] if value.ndim else "no (a scalar)"


# ---------------------------------------------------------------------------- standardisation


def _valid_mask(x: np.ndarray, present: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """Boolean mask over the statistics' sample axes: (N,) or (N, T) for sequences."""
    if x.ndim == 3:  # sequence (N, T, F): valid time steps of present samples
        steps = np.arange(x.shape[1])[None, :]
        lens = lengths if lengths is not None else np.full(x.shape[0], x.shape[1])
        return present[:, None] & (steps < lens[:, None])
    return present


def fit_standardization(split: _Split, names: Sequence[str]) -> dict[str, Normalization]:
    """Per modality: mean and std per feature — per channel for images — over PRESENT training entries only."""
    stats = {}
    for i, m in enumerate(names):
        x = split.arrays[m]
        selected = x[_valid_mask(x, split.present[:, i], split.lengths.get(m))]  # (n, F) or (n, C, H, W)
        try:
            stats[m] = fit_normalization(selected, (0, 2, 3) if x.ndim == 4 else (0,))  # a constant feature is centred
        except NormalizationError:
            raise DataError(
                f"array {m!r} in {split.file}: its standardisation statistics (mean/std over the present training "
                "samples) are not finite in float32 — its values are too large; rescale the data (other units)"
            ) from None
    return stats


def _standardize(split: _Split, names: Sequence[str], stats: Mapping[str, Normalization]) -> None:
    for i, m in enumerate(names):
        x = split.arrays[m]
        valid = _valid_mask(x, split.present[:, i], split.lengths.get(m))
        split.arrays[m] = stats[m].apply(x, valid.reshape(valid.shape + (1,) * (x.ndim - valid.ndim)))


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
        all_names = _modality_names(train)
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
    raw = {s: read_npz(p) for s, p in paths.items()}
    all_names, names = _resolve_names(meta, raw["train"], paths["train"], modalities)
    splits = {s: _check_file(paths[s], raw[s], all_names, names, meta.modalities is not None) for s in raw}
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

    task, num_classes, class_names = _label_convention(meta, splits, directory)

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
            _standardize(split, names, stats)

    spec = ModalitySpec(tuple(names))

    def dataset(split: _Split) -> ArrayMultimodalDataset:
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


def _label_convention(meta: DatasetMeta, splits: Mapping[str, _Split], directory: Path) -> tuple[str, int, list[str]]:
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


def _labelled(split: _Split, ignore_index: int | None) -> np.ndarray:
    """The labels that name a class: without the void label (segmentation) and unlabelled samples (-1)."""
    if ignore_index is not None:
        return split.label[split.label != ignore_index]
    return split.label[split.label != UNLABELLED] if split.label.ndim == 1 else split.label


def _check_unlabelled(splits: Mapping[str, _Split]) -> None:
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


def _check_labels_seen_in_training(splits: Mapping[str, _Split], ignore_index: int | None) -> None:
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
