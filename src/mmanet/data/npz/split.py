"""One file of an npz dataset read into a :class:`Split`: checked against the dataset's modalities (shapes,
dtypes, ``present_<m>``, ``lengths_<m>``, finite values in float32's range), missing entries and padding
zero-filled. The array names are :mod:`mmanet.npz_format`'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmanet.data.base import DataError
from mmanet.data.npz.labels import check_label_array
from mmanet.data.npz.meta import META_FILE
from mmanet.npz_format import (
    FLOAT32_MAX,
    LABEL,
    LENGTHS_PREFIX,
    PRESENT_PREFIX,
    SHAPE_KINDS,
    float32_overflow,
    modality_names,
    referred_modality,
)


@dataclass
class Split:
    """One split after validation: float32 arrays with missing entries and padding zero-filled."""

    file: Path
    arrays: dict[str, np.ndarray]
    label: np.ndarray
    present: np.ndarray  # (N, M) bool, in the modality order
    lengths: dict[str, np.ndarray]  # sequence modality -> (N,) int64 (full length T where absent)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def subset(self, idx: np.ndarray) -> Split:
        return Split(
            self.file,
            {m: v[idx] for m, v in self.arrays.items()},
            self.label[idx],
            self.present[idx],
            {m: v[idx] for m, v in self.lengths.items()},
        )


def check_file(
    path: Path, arrays: dict[str, np.ndarray], all_names: Sequence[str], names: Sequence[str], from_meta: bool
) -> Split:
    """Validate one file against the dataset's modalities; ``names`` are the ones kept."""
    label = check_label_array(path, arrays)
    n = int(label.shape[0])
    if n == 0:
        raise DataError(f"{path} holds no samples (array {LABEL!r} is empty)")
    found = modality_names(arrays)
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
        referred = referred_modality(key)
        if referred is not None and referred not in all_names:
            raise DataError(
                f"array {key!r} in {path} refers to modality {referred!r}, which is not one of {list(all_names)}"
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
    return Split(path, values, label, present, lengths)


def check_float32_range(
    x: np.ndarray, valid: np.ndarray, what: str, fix: str = "rescale the data (other units)"
) -> None:
    """A DataError when a valid (finite) value of ``x`` lies outside float32's range: the cast to float32
    would turn it into ±inf, and it would surface later as a NaN loss or a non-finite statistic."""
    overflow = float32_overflow(x, valid)
    if overflow is not None:
        sample, value, rows = overflow
        raise DataError(
            f"{what}: sample {sample} holds {value:.3g}, a finite {x.dtype} value outside float32's "
            f"range (±{FLOAT32_MAX:.2g}), in which mmanet computes ({rows} sample(s) like this); {fix}"
        )


def _count(value: np.ndarray) -> int | str:
    return value.shape[0] if value.ndim else "no (a scalar)"
