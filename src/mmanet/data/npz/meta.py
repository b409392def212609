"""``dataset.yaml``, the optional description beside an npz dataset's files: modality order, class names,
the number of classes, the task and the label conventions (the bona fide class for ACER, the void label
of segmentation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmanet.config_checks import load_yaml
from mmanet.data.base import DataError

META_FILE = "dataset.yaml"
#: the keys a ``dataset.yaml`` may hold
META_KEYS = ("modalities", "class_names", "num_classes", "task", "bona_fide_class", "ignore_index")
TASKS = ("classification", "segmentation")


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
