"""The package's import graph: no import cycles, and Lightning only where training needs it.

A cycle shows only when a module of the cycle is the first one imported (``cannot import name …
from partially initialized module``), so every module of ``src/mmanet`` is imported alone, each in
a process that has imported no ``mmanet`` module yet. Starting a Python with torch for each of the
~110 modules would take minutes, so one subprocess imports the third-party and standard-library
modules the package imports at module level, then forks one child per module (two at a time): each
child starts with no ``mmanet`` module loaded and imports its module first.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# located without importing it: this process must not hide a cycle, nor fail at collection on one
_SPEC = importlib.util.find_spec("mmanet")
assert _SPEC is not None and _SPEC.origin is not None, "the mmanet package is not installed"
PACKAGE_DIR = Path(_SPEC.origin).parent

# The child processes: import one module each, first of the package; report the error if any.
FORK_EACH = r"""
import importlib, json, os, sys, tempfile, traceback

preload, modules, jobs = json.loads(sys.stdin.read())
for name in preload:
    try:
        importlib.import_module(name)
    except Exception:
        pass  # an optional dependency that is not installed: the module that needs it reports it
loaded = sorted(m for m in sys.modules if m == "mmanet" or m.startswith("mmanet."))
assert not loaded, f"the forking process must not import the package: {loaded}"
reports = tempfile.mkdtemp(prefix="mmanet-imports-")
queue, running, results = list(enumerate(modules)), {}, {}
while queue or running:
    while queue and len(running) < jobs:
        index, module = queue.pop(0)
        pid = os.fork()
        if pid == 0:
            try:
                importlib.import_module(module)
                report = None
            except BaseException as err:
                report = {"type": type(err).__name__, "name": getattr(err, "name", None), "text": str(err),
                          "traceback": traceback.format_exc()}
            with open(os.path.join(reports, f"{index}.json"), "w") as fh:
                fh.write(json.dumps(report))
            os._exit(0)
        running[pid] = (index, module)
    pid, status = os.wait()
    index, module = running.pop(pid)
    path = os.path.join(reports, f"{index}.json")
    if os.path.exists(path):
        with open(path) as fh:
            results[module] = json.load(fh)
        os.remove(path)
    else:
        results[module] = {"type": "crash", "name": None, "text": f"wait status {status}", "traceback": ""}
os.rmdir(reports)
print(json.dumps(results))
"""


#: children importing at the same time (the suite runs on 2 cores)
JOBS = 2


def package_modules() -> list[str]:
    """Every module of the package (packages by their ``__init__``), except ``__main__``."""
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _import_time_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements that run when a module is imported (not the bodies of functions)."""
    out = []
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        out.append(node)
        for field in ("body", "orelse", "finalbody"):
            out += _import_time_statements(getattr(node, field, []) or [])
        for handler in getattr(node, "handlers", []) or []:
            out += _import_time_statements(handler.body)
    return out


def external_imports() -> list[str]:
    """The modules outside the package that the package imports at module level (with ``from a import b``
    also ``a.b``, which may be a submodule)."""
    names: dict[str, None] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _import_time_statements(tree.body):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            names.update(dict.fromkeys(n for n in found if n.split(".")[0] != "mmanet"))
    return list(names)


def test_the_module_list_covers_the_package():
    modules = package_modules()
    assert "mmanet" in modules and "mmanet.config" in modules and "mmanet.models.network" in modules
    assert len(modules) == len(set(modules)) > 50


def test_every_module_imports_alone_without_an_import_cycle():
    modules = package_modules()
    payload = json.dumps([external_imports(), modules, JOBS])
    proc = subprocess.run(
        [sys.executable, "-c", FORK_EACH], input=payload, capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(results) == sorted(modules)
    failed = {m: r for m, r in results.items() if r is not None}
    cycles = {
        m: r["text"]
        for m, r in failed.items()
        if "partially initialized module" in r["text"] or "circular import" in r["text"]
    }
    assert not cycles, "import cycles (each module imported first in a fresh process):\n" + "\n".join(
        f"{m}: {text}" for m, text in cycles.items()
    )
    # a missing optional dependency (not installed here) is not a broken package; anything else is
    broken = {
        m: r["traceback"] or r["text"]
        for m, r in failed.items()
        if not (r["type"] == "ModuleNotFoundError" and r["name"] and r["name"].split(".")[0] != "mmanet")
    }
    assert not broken, "modules that fail to import on their own:\n" + "\n".join(
        f"--- {m}\n{text}" for m, text in broken.items()
    )


LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")


@pytest.mark.parametrize(
    "code",
    [
        "import mmanet.deploy",
        "from mmanet.config import resolve_run_config; resolve_run_config({'method': 'mmanet'})",
    ],
    ids=["deploy", "resolve_run_config"],
)
def test_config_and_deployment_never_import_lightning(code):
    check = (
        f"import sys\n{code}\n"
        f"found = sorted(m for m in sys.modules if m.split('.')[0] in {LIGHTNING!r})\n"
        "assert not found, f'lightning imported: {found[:5]}'\n"
    )
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
