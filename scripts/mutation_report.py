"""The mutation score per file of the last ``mutmut run`` (``make mutate``, docs/testing.md).

Reads mutmut's per-file results (``mutants/<file>.meta``) for the files of ``[tool.mutmut]
only_mutate`` and prints killed / checked mutants, the score (killed or timed out, as mutmut
counts it), survivors, timeouts and mutants no selected test reaches (a run restricted to some
mutants leaves the others unchecked). ``--survivors``
adds the diff of every surviving mutant; ``--json PATH`` writes the table.

    .venv/bin/python scripts/mutation_report.py [--survivors] [--json mutants/score.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

if sys.version_info >= (3, 11):
    import tomllib
else:  # mutmut depends on toml below 3.11
    import toml as tomllib

ROOT = Path(__file__).resolve().parent.parent


def mutated_files() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    return list(tomllib.loads(text)["tool"]["mutmut"]["only_mutate"])


def file_results(path: str) -> dict[str, str] | None:
    """Mutant name → status (killed, survived, timeout, no tests, …); None before the first run."""
    meta = ROOT / "mutants" / (path + ".meta")
    if not meta.exists():
        return None
    codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in codes.items()}


def summary(results: dict[str, str]) -> dict[str, int]:
    statuses = list(results.values())
    row = {key: statuses.count(key) for key in ("killed", "survived", "timeout", "no tests", "not checked")}
    row["total"] = len(statuses)
    row["other"] = row["total"] - sum(row[key] for key in ("killed", "survived", "timeout", "no tests", "not checked"))
    return row


def survivor_diff(name: str, path: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=path)
    return "\n".join(line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", action="store_true", help="print the diff of every surviving mutant")
    parser.add_argument("--json", type=Path, help="write the per-file table to this file")
    args = parser.parse_args()

    table: dict[str, dict[str, int]] = {}
    survivors: dict[str, list[str]] = {}
    for path in mutated_files():
        results = file_results(path)
        if results is None:
            continue
        table[path] = summary(results)
        survivors[path] = sorted(name for name, status in results.items() if status == "survived")
    if not table:
        print("no mutmut results under mutants/: run `make mutate` first", file=sys.stderr)
        return 1

    header = ("killed/checked", 15), ("score", 7), ("survived", 9), ("timeout", 8), ("no tests", 9), ("unchecked", 10)
    print(f"{'file':36} " + " ".join(f"{name:>{width}}" for name, width in header))
    for path, row in table.items():
        checked = row["total"] - row["not checked"]  # a run restricted to some mutants leaves the others unchecked
        score = 100.0 * (row["killed"] + row["timeout"]) / checked if checked else float("nan")  # mutmut's score
        print(
            f"{path:36} {row['killed']:>7}/{checked:<7} {score:6.1f}% "
            f"{row['survived']:>9} {row['timeout']:>8} {row['no tests']:>9} {row['not checked']:>10}"
        )
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n", "utf-8")
    if args.survivors:
        import os

        os.chdir(ROOT)  # mutmut reads its files relative to the project root
        for path, names in survivors.items():
            for name in names:
                print(f"\n## {name}\n{survivor_diff(name, path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
