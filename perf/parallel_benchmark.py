"""A benchmark's wall time with 2 workers against 1, measured in one run (prints BENCH lines).

Runs `configs/mfeat/demo.yaml` (SF-MD and MMANet, 3 seeds, one thread per run) into fresh directories:
serially, with two local worker processes and with two tasks on a local Ray instance; checks that the
tables are identical to the serial one, and prints each ratio to the serial wall time.
Usage (from the repository root): python -m perf.parallel_benchmark [--config configs/mfeat/demo.yaml]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from perf.harness import time_command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/mfeat/demo.yaml")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    mmanet = str(Path(sys.executable).parent / "mmanet")
    with tempfile.TemporaryDirectory() as tmp:
        base = [mmanet, "benchmark", args.config, "--set", "train.progress_bar=false"]
        serial = time_command([*base, "--out", f"{tmp}/serial"])
        table = Path(f"{tmp}/serial/table.csv").read_text()
        for executor in ("local", "ray"):
            out = f"{tmp}/{executor}"
            seconds = time_command([*base, "--out", out, "--workers", str(args.workers), "--executor", executor])
            same = Path(f"{out}/table.csv").read_text() == table
            print(
                f"serial {serial:.1f} s, --executor {executor} --workers {args.workers} {seconds:.1f} s; same: {same}"
            )
            print(f"BENCH parallel_benchmark executor={executor} workers={args.workers} ratio={seconds / serial:.3f}")


if __name__ == "__main__":
    main()
