"""A benchmark's wall time with --workers 2 against --workers 1, measured in one run (prints a BENCH line).

Runs `configs/mfeat/demo.yaml` (SF-MD and MMANet, 3 seeds, one thread per run) into two fresh directories,
serially and with two worker processes, checks that the two tables are identical, and prints the ratio.
Usage (from the repository root): python -m perf.parallel_benchmark [--config configs/mfeat/demo.yaml]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/mfeat/demo.yaml")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    mmanet = str(Path(sys.executable).parent / "mmanet")
    with tempfile.TemporaryDirectory() as tmp:
        base = [mmanet, "benchmark", args.config, "--set", "train.progress_bar=false"]
        serial = timed([*base, "--out", f"{tmp}/serial"])
        parallel = timed([*base, "--out", f"{tmp}/parallel", "--workers", str(args.workers)])
        same = Path(f"{tmp}/serial/table.csv").read_text() == Path(f"{tmp}/parallel/table.csv").read_text()
    print(f"serial {serial:.1f} s, --workers {args.workers} {parallel:.1f} s; tables identical: {same}")
    print(f"BENCH parallel_benchmark workers={args.workers} ratio={parallel / serial:.3f}")


if __name__ == "__main__":
    main()
