"""The user's own components (issue 24): modules or ``.py`` files imported before a configuration is resolved.

A user file registers a fusion, encoder, head, method or dataset with the package's decorators
(``register_fusion("my_fusion")`` …). It is named in the configuration's ``imports:`` list (or with
``--import`` on any command), imported before the configuration is validated — so ``model.fusion:
my_fusion`` is known — and recorded in the run's configuration, so ``evaluate``, ``export`` and
``predict`` import it again from the checkpoint. An entry is a module name (``my_package.fusions``,
importable from ``sys.path``) or a path to a ``.py`` file, recorded as an absolute path. Installed
packages can instead declare an entry point in the group ``mmanet.plugins``; those are imported once,
the first time a configuration is resolved.

A file is imported once per process (by its resolved path), so its registrations never run twice.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from mmanet.errors import MMANetError

__all__ = ["ENTRY_POINT_GROUP", "PluginError", "load_entry_point_plugins", "load_plugins", "normalise_imports"]

ENTRY_POINT_GROUP = "mmanet.plugins"
_FILES: dict[Path, ModuleType] = {}
_ENTRY_POINTS_LOADED = False


class PluginError(MMANetError):
    """A module or file named in ``imports:`` / ``--import`` that cannot be imported."""


def is_file_entry(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def normalise_imports(entries: Iterable[str]) -> list[str]:
    """The entries as they are recorded: files as absolute paths, module names as given, no repeats."""
    out: list[str] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise PluginError(f"imports: {entry!r} is not a module name or a .py file path")
        entry = entry.strip()
        recorded = str(Path(entry).expanduser().resolve()) if is_file_entry(entry) else entry
        if recorded not in out:
            out.append(recorded)
    return out


def load_plugins(entries: Iterable[str]) -> list[ModuleType]:
    """Import every entry (module names and ``.py`` files); a :class:`PluginError` names the one that fails."""
    load_entry_point_plugins()
    return [_import(entry) for entry in normalise_imports(entries)]


def _import(entry: str) -> ModuleType:
    if not is_file_entry(entry):
        try:
            return importlib.import_module(entry)
        except ModuleNotFoundError as err:
            raise PluginError(
                f"imports: cannot import the module {entry!r} ({err}); install it or put it on PYTHONPATH "
                "(a run trained with it needs it to be evaluated, exported and used)"
            ) from None
    path = Path(entry)
    if path in _FILES:
        return _FILES[path]
    if not path.is_file():
        raise PluginError(
            f"imports: the file {path} does not exist (a run trained with it needs it to be evaluated, exported and "
            "used): put it back, or pass --import with its new place"
        )
    name = f"mmanet_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"imports: {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except MMANetError:
        del sys.modules[name]
        raise
    except Exception as err:  # the user's code: any error it raises while importing
        del sys.modules[name]
        raise PluginError(f"imports: importing {path} failed: {type(err).__name__}: {err}") from None
    _FILES[path] = module
    return module


def load_entry_point_plugins() -> None:
    """Import the installed packages' ``mmanet.plugins`` entry points (once per process)."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as err:  # an installed package's code
            raise PluginError(
                f"the mmanet plugin {point.name!r} ({point.value}) of an installed package failed to import: "
                f"{type(err).__name__}: {err}"
            ) from None
