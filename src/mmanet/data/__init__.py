"""Datasets: registry, the sample contract and loaders (one module per dataset)."""

from mmanet.data import av_digits, casia_surf, cefa, mfeat, npz, toy  # noqa: F401  (register the datasets)
from mmanet.data.base import (
    ArrayMultimodalDataset,
    DataBundle,
    DataError,
    DataUnavailableError,
    MultimodalDataset,
    Standardizer,
    collate_samples,
    stratified_split,
)
from mmanet.data.registry import DATASETS, DatasetEntry, register_dataset

__all__ = [
    "DATASETS",
    "ArrayMultimodalDataset",
    "DataBundle",
    "DataError",
    "DataUnavailableError",
    "DatasetEntry",
    "MultimodalDataset",
    "Standardizer",
    "collate_samples",
    "load_dataset",
    "register_dataset",
    "stratified_split",
]


def load_dataset(name: str, root: str | None = None, seed: int = 0, **options) -> DataBundle:
    """Load a registered dataset by name (an unknown name lists the valid ones)."""
    return DATASETS.get(name).load(root=root, seed=seed, **options)
