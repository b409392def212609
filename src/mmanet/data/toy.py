"""A small synthetic multimodal classification dataset (for tests, smoke runs and examples).

Each class has a random prototype per modality; a sample is its class prototype scaled by
the modality's ``signal`` plus unit Gaussian noise, so modalities range from strong to weak.
Deterministic by seed; nothing is read from disk.
"""

from __future__ import annotations

import numpy as np
import torch

from mmanet.data.base import UNLABELLED, ArrayMultimodalDataset, DataBundle, DataError, stratified_split
from mmanet.data.registry import DatasetEntry, register_dataset
from mmanet.modality import ModalitySpec


def load(
    root: str | None = None,
    seed: int = 0,
    num_samples: int = 300,
    num_classes: int = 4,
    modalities: dict[str, int] | None = None,
    signal: dict[str, float] | None = None,
    missing_rate: float = 0.0,
    unlabelled_fraction: float = 0.0,
) -> DataBundle:
    """``modalities``: name → feature width (default a: 8, b: 8, c: 8); ``signal``: name → class
    separation (default a strong, b medium, c weak); ``missing_rate``: fraction of genuinely
    missing entries (never all of a sample's modalities); ``unlabelled_fraction``: fraction of the
    training samples whose label is hidden (label -1; validation and test keep theirs)."""
    if root is not None:
        raise DataError("the toy dataset is generated in memory; data.root must be empty")
    widths = modalities or {"a": 8, "b": 8, "c": 8}
    spec = ModalitySpec(tuple(widths))
    default_signal = np.linspace(2.0, 0.4, num=len(spec))
    signal = {m: float((signal or {}).get(m, default_signal[i])) for i, m in enumerate(spec.names)}
    if not 0.0 <= missing_rate < 1.0:
        raise DataError(f"missing_rate must be in [0, 1), got {missing_rate}")
    if not 0.0 <= unlabelled_fraction < 1.0:
        raise DataError(f"unlabelled_fraction must be in [0, 1), got {unlabelled_fraction}")
    rng = np.random.default_rng(seed)
    labels = np.arange(num_samples) % num_classes
    arrays = {}
    for m, width in widths.items():
        prototypes = rng.normal(size=(num_classes, width))
        arrays[m] = torch.from_numpy(signal[m] * prototypes[labels] + rng.normal(size=(num_samples, width))).float()
    present = torch.from_numpy(rng.random((num_samples, len(spec))) >= missing_rate)
    present[~present.any(dim=1), 0] = True
    target = torch.from_numpy(labels)
    parts = stratified_split(labels, (0.6, 0.2, 0.2), seed)
    if unlabelled_fraction > 0:  # hide the labels of a seeded part of the training split
        hidden = rng.choice(parts[0], size=int(round(unlabelled_fraction * len(parts[0]))), replace=False)
        target = target.clone()
        target[torch.from_numpy(hidden)] = UNLABELLED

    def subset(idx: np.ndarray) -> ArrayMultimodalDataset:
        t = torch.from_numpy(idx)
        return ArrayMultimodalDataset(spec, {m: v[t] for m, v in arrays.items()}, target[t], present[t])

    train, val, test = (subset(p) for p in parts)
    return DataBundle(
        "toy", spec, "classification", num_classes, train, val, test, [str(k) for k in range(num_classes)]
    )


register_dataset(
    DatasetEntry(
        name="toy",
        modalities=("a", "b", "c"),
        task="classification (synthetic)",
        description="synthetic Gaussian prototypes with strong-to-weak modalities, generated in memory "
        "(options: num_samples, num_classes, modalities, signal, missing_rate)",
        load=load,
        availability=lambda root: (True, "generated in memory"),
    )
)
