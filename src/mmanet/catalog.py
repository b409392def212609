"""``mmanet list``: every registered component, with its one-line description and its options (issue 24).

The registries are filled when their modules are imported (and by the user's ``--import`` files and the
installed ``mmanet.plugins`` entry points, :mod:`mmanet.plugins`); this module reads them, it registers
nothing. A component's description is its docstring's first line (a method's and a dataset's: their
registered description), its options the keyword arguments of its constructor that a configuration sets.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["KINDS", "CatalogEntry", "catalog"]


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    options: list[str]


def _first_line(text: str | None) -> str:
    """The docstring's first paragraph on one line (its summary, which may wrap over several source lines)."""
    paragraph = (text or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def _options(cls: type, skip: tuple[str, ...]) -> list[str]:
    out = []
    for name, p in inspect.signature(cls).parameters.items():  # (the constructor's, without self)
        if name == "self" or name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out.append(name if p.default is inspect.Parameter.empty else f"{name}={p.default!r}")
    return out


def _methods() -> list[CatalogEntry]:
    from mmanet.methods import METHODS

    entries = []
    for name in METHODS:
        entry = METHODS.get(name)
        preset = {k: v for k, v in entry.preset.items() if k != "stage"}
        shown = [f"stage={entry.stage!r}", *(f"{k}: {v!r}" for k, v in preset.items())]
        entries.append(CatalogEntry(name, _first_line(entry.description), shown))
    return entries


def _classes(registry_of: Callable[[], object], skip: tuple[str, ...]) -> list[CatalogEntry]:
    registry = registry_of()
    return [
        CatalogEntry(name, _first_line(registry.get(name).__doc__), _options(registry.get(name), skip))  # type: ignore[attr-defined]
        for name in registry  # type: ignore[attr-defined]
    ]


def _fusions() -> list[CatalogEntry]:
    from mmanet.models.fusion import FUSIONS
    from mmanet.models.fusion.base import BUILT_BY_NETWORK

    return _classes(lambda: FUSIONS, BUILT_BY_NETWORK)


def _encoders() -> list[CatalogEntry]:
    from mmanet.models.encoders.base import ENCODERS

    return _classes(lambda: ENCODERS, ("input_shape", "channels", "out_channels"))


def _heads() -> list[CatalogEntry]:
    from mmanet.models.heads.base import HEADS

    return _classes(lambda: HEADS, ("in_channels", "num_classes", "spatial", "fused_info"))


def _datasets() -> list[CatalogEntry]:
    from mmanet.data import DATASETS

    out = []
    for name in DATASETS:
        entry = DATASETS.get(name)
        modalities = ", ".join(entry.modalities) or "from the files"
        out.append(
            CatalogEntry(name, _first_line(entry.description), [f"task={entry.task}", f"modalities: {modalities}"])
        )
    return out


#: ``mmanet list KIND``
KINDS: dict[str, Callable[[], list[CatalogEntry]]] = {
    "methods": _methods,
    "encoders": _encoders,
    "fusions": _fusions,
    "heads": _heads,
    "datasets": _datasets,
}


def catalog(kind: str) -> list[CatalogEntry]:
    """The registered components of ``kind`` (one of :data:`KINDS`)."""
    import mmanet.models  # noqa: F401  (registers the built-in encoders, fusions, heads)

    return KINDS[kind]()
