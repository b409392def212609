"""Versions on everything mmanet writes (issue 24): the package version and a schema version.

Every training checkpoint (its ``mmanet`` section), exported ``.safetensors`` header, model card and
``results.json`` records ``mmanet_version`` (who wrote it) and ``schema_version`` (the layout of what it
wrote, :data:`SCHEMA_VERSION`). A reader refuses a file whose schema is newer than its own with a clear
error (:func:`check_schema`): an older mmanet cannot know what a newer layout means. Files written before
versions were recorded have neither key and read as schema 1.

Schema history: 1 — the layout up to mmanet 0.1.0; 2 — ``results.json``'s ``worst``/``best`` are lists of
``{"combination", "value"}`` objects (were ``[name, value]`` pairs) and every file carries both versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmanet import __version__
from mmanet.errors import MMANetError

__all__ = ["SCHEMA_VERSION", "SchemaError", "check_schema", "stamp"]

SCHEMA_VERSION = 2


class SchemaError(MMANetError):
    """A file written by a newer mmanet, in a layout this one does not know."""


def stamp() -> dict[str, Any]:
    """The two keys every written file carries."""
    return {"mmanet_version": __version__, "schema_version": SCHEMA_VERSION}


def check_schema(record: Mapping[str, Any], what: str) -> int:
    """The schema version of ``record`` (1 when absent); a newer one than :data:`SCHEMA_VERSION` is a
    :class:`SchemaError` naming ``what`` and both versions."""
    found = record.get("schema_version", 1)
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise SchemaError(f"{what} has an invalid schema_version {found!r}")
    if found > SCHEMA_VERSION:
        writer = record.get("mmanet_version", "a newer version")
        raise SchemaError(
            f"{what} was written by mmanet {writer} in schema {found}; this mmanet ({__version__}) reads schemas up "
            f"to {SCHEMA_VERSION}: upgrade mmanet (pip install -U mmanet) to read it"
        )
    return found
