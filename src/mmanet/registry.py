"""Plain-dict registries filled by decorators at import (docs/design.md §2, rules of the house)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from mmanet.errors import MMANetError

T = TypeVar("T")


class UnknownKeyError(MMANetError, KeyError):
    """An unknown registry key; the message lists the valid keys."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """A named mapping from keys to factories; unknown keys raise an error listing valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, key: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, key: str) -> T:
        try:
            return self._items[key]
        except KeyError:
            raise UnknownKeyError(f"unknown {self.kind} {key!r}; valid: {sorted(self._items)}") from None

    def keys(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, key: str) -> bool:
        return key in self._items
