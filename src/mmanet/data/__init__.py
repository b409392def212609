"""Datasets: registry, the sample contract and loaders (one module per dataset)."""

import inspect

from mmanet.data import av_digits, casia_surf, cefa, cityscapes, mfeat, npz, nyuv2, rooms, toy  # noqa: F401  (register the datasets)
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


def load_dataset(name: str, root: str | None = None, seed: int = 0, normalization=None, **options) -> DataBundle:
    """Load a registered dataset by name (an unknown name lists the valid ones).

    ``normalization``: a trained model's stored input statistics (``TaskInfo.normalization``).
    Loaders that fit statistics take them instead of refitting on this data; for any other
    loader the statistics it applies must be the same (a DataError otherwise).
    """
    entry = DATASETS.get(name)
    parameters = inspect.signature(entry.load).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        valid = sorted(p for p in parameters if p not in ("root", "seed", "normalization"))
        unknown = sorted(k for k in options if k not in valid)
        if unknown:
            raise DataError(f"unknown {name} option(s) {unknown} (data.options); valid: {valid}")
    for key, value in options.items():
        _check_option_type(name, key, value, parameters.get(key))
    if normalization is not None and "normalization" in parameters:
        options["normalization"] = normalization
    bundle = entry.load(root=root, seed=seed, **options)
    if normalization is not None and bundle.normalization != dict(normalization):
        raise DataError(
            f"the {name} loader standardises its inputs differently from the model (which stores the statistics "
            "it was trained with) and cannot take the stored ones; evaluate it on data loaded the same way"
        )
    return bundle


def _check_option_type(dataset: str, key: str, value, parameter: inspect.Parameter | None) -> None:
    """An option must have the type of the loader's default (bool, int, float or str) when it has one."""
    if parameter is None:  # an option the loader takes through **kwargs: nothing to compare with
        return
    default = parameter.default
    if default is inspect.Parameter.empty or default is None or value is None:
        return
    if "Size" in str(parameter.annotation):  # int or [H, W]: the loader checks it (data.options.<key> named)
        return
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, expected = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, expected = isinstance(value, str), "a string"
    else:
        return
    if not ok:
        raise DataError(f"the {dataset} option {key!r} (data.options.{key}) must be {expected}, got {value!r}")
