"""The process-group helpers of ``mmanet.distributed``: the all-reduce and the release at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

from mmanet.distributed import all_reduce_sum

EXIT_SCRIPT = textwrap.dedent(
    """
    import atexit, os, sys, tempfile
    import torch, torch.distributed as dist
    from mmanet.distributed import release_process_group_at_exit

    # atexit runs last-registered first: this check runs after the release handler
    atexit.register(lambda: print("initialized at exit:", dist.is_initialized(), flush=True))
    release_process_group_at_exit()
    release_process_group_at_exit()  # registered once: a second destroy would raise
    store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    t = torch.ones(3)
    dist.all_reduce(t)
    print("initialized:", dist.is_initialized(), flush=True)
    """
)


def test_without_a_process_group_the_sum_is_the_input():
    a, b = torch.tensor([1, 2], dtype=torch.int64), torch.tensor([[0.5]])
    out = all_reduce_sum(a, b)
    assert out[0].dtype == torch.int64 and out[0].tolist() == [1, 2] and out[1].tolist() == [[0.5]]


def test_the_process_group_is_destroyed_before_the_interpreter_finalizes():
    """Lightning never destroys the DDP group; left to finalization, Gloo aborts the process now and then
    (exit -6, "terminate called without an active exception"; perf/gloo_exit.py counts how often)."""
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["initialized: True", "initialized at exit: False"], proc.stdout


def test_every_trainer_registers_the_release(tmp_path, monkeypatch):
    import mmanet.training.factory as factory
    from conftest import tiny_raw
    from mmanet.config import resolve_run_config

    calls = []
    monkeypatch.setattr(factory, "release_process_group_at_exit", lambda: calls.append(1))
    factory.make_trainer(resolve_run_config(tiny_raw("mmanet")), tmp_path, "val/error", "min", 1)
    assert calls == [1]
