"""Timing harness: interleaved paired timings on one intra-op thread and the ``BENCH`` output line."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

THREADS = 1
torch.set_num_threads(THREADS)


@dataclass
class Pair:
    """Interleaved timings of A and B (seconds)."""

    a: list[float]
    b: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(x / y for x, y in zip(self.a, self.b, strict=True))

    @property
    def a_ms(self) -> float:
        return 1e3 * statistics.median(self.a)

    @property
    def b_ms(self) -> float:
        return 1e3 * statistics.median(self.b)

    def describe(self, a: str, b: str) -> str:
        return f"{a}={self.a_ms:.1f}ms {b}={self.b_ms:.1f}ms repeats={len(self.a)}"


def time_pair(fa: Callable[[], object], fb: Callable[[], object], repeats: int, warmup: int = 1) -> Pair:
    """Warm-up, then ``repeats`` interleaved timings of ``fa`` and ``fb`` (the order alternates)."""
    for _ in range(warmup):
        fa()
        fb()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(repeats):
        order = ((fa, ta), (fb, tb)) if i % 2 == 0 else ((fb, tb), (fa, ta))
        for fn, acc in order:
            gc.collect()
            start = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - start)
    return Pair(ta, tb)


def bench(name: str, ratio: float, target: float, details: str, info: bool = False) -> None:
    status = "info" if info else "pass" if ratio <= target else "MISS"
    print(f"BENCH {name} ratio={ratio:.3f} target={target:g} status={status} {details}", flush=True)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_command(command: list[str]) -> float:
    """Wall seconds of a command run to completion (its output captured; a failure raises)."""
    import subprocess

    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start
