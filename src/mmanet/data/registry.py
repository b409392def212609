"""Dataset registry: ``name -> DatasetEntry`` (loader + description + availability check)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmanet.data.base import DataBundle
from mmanet.registry import Registry


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    modalities: tuple[str, ...]
    task: str
    description: str
    #: ``load(root=..., seed=..., **options) -> DataBundle``
    load: Callable[..., DataBundle]
    #: ``availability(root) -> (available, how to get it / where it was found)``
    availability: Callable[[Any], tuple[bool, str]]


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    DATASETS.register(entry.name)(entry)
    return entry
