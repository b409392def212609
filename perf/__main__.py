"""``python -m perf``: run the measurements (see the package docstring) or profile one epoch."""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported: one OpenMP thread
os.environ["MKL_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import perf  # noqa: E402
from perf.evaluation import b_eval_mfeat, b_eval_sf, b_naive_mfeat, b_naive_sf  # noqa: E402
from perf.harness import THREADS  # noqa: E402
from perf.mad_memory import b_mad_memory  # noqa: E402
from perf.mining import b_mining_mfeat, b_mining_sf  # noqa: E402
from perf.profiling import profile_epoch  # noqa: E402
from perf.train_step import b_train_step  # noqa: E402

warnings.filterwarnings("ignore", message=".*does not have many workers.*")

BENCHMARKS: dict[str, Callable[[bool], None]] = {
    "eval_all_combinations": b_eval_sf,
    "eval_all_combinations_mfeat": b_eval_mfeat,
    "mar_mining": b_mining_mfeat,
    "mar_mining_sf": b_mining_sf,
    "train_step_overhead": b_train_step,
    "mad_memory": b_mad_memory,
    "naive_vs_shared": b_naive_sf,
    "naive_vs_shared_mfeat": b_naive_mfeat,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m perf", description=perf.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer repeats (< 3 min on 2 cores)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {list(BENCHMARKS)}")
    parser.add_argument("--profile", choices=["mfeat", "image"], help="profile one MMANet epoch instead")
    parser.add_argument("--profile-out", default="runs/profile", help="where --profile writes its reports")
    args = parser.parse_args()
    print(
        f"# torch {torch.__version__}; threads FIXED: torch.set_num_threads({THREADS}) -> "
        f"get_num_threads()={torch.get_num_threads()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
        f"{'profile' if args.profile else 'quick' if args.quick else 'full'} run; "
        "ratio = median of interleaved per-repeat ratios",
        flush=True,
    )
    if args.profile:
        profile_epoch(args.profile, Path(args.profile_out))
        return
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; valid: {list(BENCHMARKS)}")
    start = time.perf_counter()
    for name in names:
        BENCHMARKS[name](args.quick)
    print(f"# total {time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
