"""The README runs as written (issue 24): every fenced block the README marks runnable
(``<!-- runnable … -->`` on the line before the fence) is executed here, in a scratch directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
MARK = re.compile(r"<!-- runnable[^>]*-->\n```(python|bash)\n(.*?)```", re.S)


def runnable_blocks() -> list[tuple[str, str]]:
    return MARK.findall(README.read_text())


def test_the_readme_marks_its_runnable_blocks():
    languages = [lang for lang, _ in runnable_blocks()]
    assert "python" in languages and "bash" in languages


@pytest.mark.parametrize("number", range(len(runnable_blocks())))
def test_runnable_block(number, tmp_path):
    language, code = runnable_blocks()[number]
    root = README.parent
    for shipped in ("configs", "examples"):  # the blocks use the repository's paths, and write only here
        (tmp_path / shipped).symlink_to(root / shipped)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        f"README block {number} ({language}) failed:\n{code}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
