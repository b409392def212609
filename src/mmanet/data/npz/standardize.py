"""Standardisation of an npz dataset: per modality and feature (images: per channel), with statistics of
the present training entries (sequences: their valid time steps), through :mod:`mmanet.normalization`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mmanet.data.base import DataError
from mmanet.data.npz.split import Split
from mmanet.normalization import Normalization, NormalizationError, fit_normalization


def _valid_mask(x: np.ndarray, present: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """Boolean mask over the statistics' sample axes: (N,) or (N, T) for sequences."""
    if x.ndim == 3:  # sequence (N, T, F): valid time steps of present samples
        steps = np.arange(x.shape[1])[None, :]
        lens = lengths if lengths is not None else np.full(x.shape[0], x.shape[1])
        return present[:, None] & (steps < lens[:, None])
    return present


def fit_standardization(split: Split, names: Sequence[str]) -> dict[str, Normalization]:
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


def apply_standardization(split: Split, names: Sequence[str], stats: Mapping[str, Normalization]) -> None:
    """Standardise ``split`` in place with ``stats``; missing entries and sequence padding stay 0."""
    for i, m in enumerate(names):
        x = split.arrays[m]
        valid = _valid_mask(x, split.present[:, i], split.lengths.get(m))
        split.arrays[m] = stats[m].apply(x, valid.reshape(valid.shape + (1,) * (x.ndim - valid.ndim)))
