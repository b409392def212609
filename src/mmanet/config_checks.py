"""Type and value checks the configuration sections apply before pydantic's own validation.

pydantic's lax mode turns ``true`` into ``1`` for an integer field and ``1`` into ``true`` for a
boolean one, so ``--set train.max_epochs=true`` would train for one epoch. Here a boolean is
accepted only where the field's type names ``bool``, and a boolean field accepts only booleans.
Numeric strings stay accepted for numbers (YAML reads ``1e-3`` as a string).

:func:`non_finite_keys` finds NaN/infinite floats anywhere in a raw configuration — also in the
free-form sections (``data.options``, component options) that no typed field covers.

:func:`load_yaml` reads a YAML file with a bounded cost: at most :data:`MAX_YAML_BYTES` bytes and
:data:`MAX_YAML_VALUES` values once YAML aliases are expanded (ten nested aliases of ten entries
each would otherwise expand to 10^10 values when the configuration is merged, checked or compared).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def _leaf_types(annotation: Any) -> set[Any]:
    """Every type an annotation admits, looking through ``X | Y``, ``Optional``, ``list[...]``, ``Literal``."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return {Any}
    if origin is typing.Literal:
        return {type(arg) for arg in typing.get_args(annotation)}
    if origin in (typing.Union, types.UnionType, list, tuple, set, dict):
        found: set[Any] = set()
        for arg in typing.get_args(annotation):
            found |= _leaf_types(arg)
        return found | ({origin} if origin in (list, tuple, set, dict) else set())
    return {annotation}


def _contains_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, list | tuple) and any(_contains_bool(v) for v in value)


def check_strict_scalars(value: Any, annotation: Any) -> Any:
    """``value`` unchanged, or a ``ValueError`` when a boolean meets a number (or a number a boolean)."""
    leaves = _leaf_types(annotation)
    if Any in leaves or value is None:
        return value
    if bool not in leaves and _contains_bool(value):
        numeric = leaves & {int, float}
        if numeric:
            expected = "an integer" if numeric == {int} else "a number"
            raise ValueError(f"must be {expected}, not a boolean (true/false)")
        # YAML 1.1 reads unquoted off/on/no/yes as booleans: the usual cause of this error
        raise ValueError(
            "got a boolean; YAML reads an unquoted off/on/no/yes/false/true as a boolean: quote the word, "
            "e.g. mode: 'off'"
        )
    if leaves <= {bool, type(None)} and not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def non_finite_keys(raw: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(dotted key, value)`` of every NaN or infinite float in a nested mapping/list."""
    if isinstance(raw, float) and not math.isfinite(raw):
        yield prefix or "(top level)", raw
    elif isinstance(raw, Mapping):
        for key, value in raw.items():
            yield from non_finite_keys(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(raw, list | tuple):
        for i, value in enumerate(raw):
            yield from non_finite_keys(value, f"{prefix}.{i}")


#: the largest YAML file mmanet reads (configurations and dataset.yaml files are a few KB)
MAX_YAML_BYTES = 4 << 20
#: the most values a YAML document may hold with its aliases expanded
MAX_YAML_VALUES = 200_000


class YAMLTooLarge(ValueError):
    """A YAML document too large, or expanding to too many values, to be read at a bounded cost."""


def count_values(raw: Any, budget: int = MAX_YAML_VALUES) -> int:
    """The number of values in ``raw`` with shared (aliased) parts counted each time they appear; a
    :class:`YAMLTooLarge` as soon as it passes ``budget`` (so the count itself costs at most ``budget``)."""
    seen, stack = 0, [raw]
    while stack:
        value = stack.pop()
        seen += 1
        if seen > budget:
            raise YAMLTooLarge(
                f"it holds more than {budget:,} values once its aliases (&name / *name) are expanded; "
                "write the configuration out without aliases"
            )
        if isinstance(value, Mapping):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return seen


def load_yaml(path: str | Path) -> Any:
    """``yaml.safe_load`` of a file at a bounded cost (module docstring). Raises ``OSError``,
    ``UnicodeDecodeError``, ``yaml.YAMLError`` or :class:`YAMLTooLarge` — the caller names the file."""
    import yaml

    path = Path(path)
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise YAMLTooLarge(f"it is {size:,} bytes, more than the {MAX_YAML_BYTES:,} a YAML file mmanet reads may have")
    raw = yaml.safe_load(path.read_text())
    count_values(raw)
    return raw
