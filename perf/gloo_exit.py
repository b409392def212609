"""How often a two-process Gloo run aborts at exit without and with ``release_process_group_at_exit``.

Each trial spawns two processes that create a Gloo group (as Lightning's DDP strategy does), all-reduce a
few tensors and return; "without" leaves the group to interpreter finalization (what Lightning does),
"with" registers mmanet's release first. Prints the aborted trials of each, measured in one run.
Usage (from the repository root): python -m perf.gloo_exit [--trials 12]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = """
import os, sys
import torch, torch.distributed as dist
import torch.multiprocessing as mp

def body(rank, port, release):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    if release:
        from mmanet.distributed import release_process_group_at_exit
        release_process_group_at_exit()
    dist.init_process_group("gloo", rank=rank, world_size=2)
    for _ in range(20):
        dist.all_reduce(torch.ones(1000))

if __name__ == "__main__":
    mp.start_processes(body, args=(int(sys.argv[1]), sys.argv[2] == "1"), nprocs=2, start_method="spawn")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def aborted_trials(script: Path, release: bool, trials: int) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    failed = 0
    for _ in range(trials):
        proc = subprocess.run(
            [sys.executable, str(script), str(free_port()), "1" if release else "0"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if proc.returncode != 0 and "terminate called" not in proc.stderr:
            raise RuntimeError(f"a trial failed for another reason:\n{proc.stderr[-2000:]}")
        failed += proc.returncode != 0
    return failed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:  # a file, not -c: spawned children import the worker
        script = Path(tmp) / "gloo_worker.py"
        script.write_text(WORKER)
        without = aborted_trials(script, False, args.trials)
        with_release = aborted_trials(script, True, args.trials)
    print(f"two-process Gloo runs that aborted at exit, of {args.trials} each:")
    print(f"  group left to interpreter finalization (Lightning's default): {without}")
    print(f"  mmanet.distributed.release_process_group_at_exit registered:  {with_release}")


if __name__ == "__main__":
    main()
