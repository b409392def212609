"""The thread default, measured in one run (prints wall times and the ratio).

Trains `configs/mfeat/sf_md.yaml` as shipped (train.num_threads: the default, 1) and again with torch's
own default (one thread per core: --set train.num_threads=null), each as the `mmanet train` command in a
fresh process, and evaluates the trained run with 1 thread and with torch's default.
Usage (from the repository root): python -m perf.threads [--epochs 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from perf.harness import time_command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40, help="train.max_epochs (the shipped config: 40)")
    args = parser.parse_args()
    mmanet = str(Path(sys.executable).parent / "mmanet")
    print(f"{os.cpu_count()} CPU core(s) visible; mfeat sf_md, {args.epochs} epochs")
    with tempfile.TemporaryDirectory() as tmp:
        base = [mmanet, "train", "configs/mfeat/sf_md.yaml", "--set", f"train.max_epochs={args.epochs}"]
        base += ["--set", "train.progress_bar=false"]
        one = time_command([*base, "--out", f"{tmp}/one"])
        torch_default = time_command([*base, "--out", f"{tmp}/all", "--set", "train.num_threads=null"])
        print(f"train, as shipped (1 thread):     {one:7.1f} s")
        print(f"train, torch's default threads:   {torch_default:7.1f} s   ratio {torch_default / one:.2f}×")
        eval_one = time_command([mmanet, "evaluate", f"{tmp}/one", "--out", f"{tmp}/e1"])
        cores = str(os.cpu_count())
        eval_all = time_command([mmanet, "evaluate", f"{tmp}/one", "--out", f"{tmp}/e2", "--num-threads", cores])
        print(f"evaluate, default (1 thread):     {eval_one:7.1f} s")
        print(f"evaluate, {cores} threads:             {eval_all:7.1f} s   ratio {eval_all / eval_one:.2f}×")


if __name__ == "__main__":
    main()
