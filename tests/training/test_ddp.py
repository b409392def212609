"""Scale-out: Lightning DDP (strategy="ddp", accelerator="cpu", devices=2, gloo) vs one process.

Each run is this file executed as a script (Lightning's "ddp" launcher re-executes the script for
rank 1, so the worker cannot live inside the pytest process). The worker trains MMANet on the tiny
toy configuration — the teacher stage, then the deployment stage with MAR mining after each
warm-up epoch — through the stage driver ``mmanet.training.run`` uses (``train_teacher``,
``fit_stage``), with the SAME GLOBAL BATCH: 16 in one process, 8 per process in two.

What must agree, and how closely:

* exactly (reductions on a fixed, seeded network): the MAR mining discrepancies ``D_c`` from the
  sharded mining loader + all-reduce equal one process's to 1e-9 (relative), skipped counts equal;
  the per-combination confusion matrices of the sharded test split (torchmetrics all-reduce) are
  identical integer counts.
* within a tolerance (the trained models): two processes see the same samples per epoch but
  grouped into other batches (Lightning wraps the training sampler in a DistributedSamplerWrapper
  that re-shuffles it), each rank draws its own modality-dropout masks, and MAD relates samples
  within a process's batch only — so the runs differ as two seeds do. Same strong modality and weak set, every
  combination's test error within 10 points and the average within 3 points (120 test samples;
  one sample = 0.83 points). On this configuration the 1-process runs of seeds 0–2 spread by up
  to 6.7 points per combination and 0.7 points on average.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PER_COMBINATION_TOLERANCE = 10.0  # error points
AVERAGE_TOLERANCE = 3.0  # error points
GLOBAL_BATCH = 16


def worker_config(devices: int):
    """The tiny toy MMANet configuration, a bit larger than conftest's so that training settles."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import tiny_raw
    from mmanet.config import resolve_run_config

    raw = tiny_raw(
        "mmanet",
        data__options={"num_samples": 600, "num_classes": 3},
        data__batch_size=GLOBAL_BATCH // devices,
        train__max_epochs=8,
        train__devices=devices,
        train__accelerator="cpu",
        train__strategy="ddp" if devices > 1 else "auto",
        teacher__max_epochs=4,
        mar__warmup_epochs=2,
    )
    return resolve_run_config(raw)


def worker(out: Path, devices: int) -> None:
    """Train (teacher, then MMANet with MAR mining), evaluate, and check the reductions; rank 0 writes JSON."""
    import torch

    torch.set_num_threads(1)
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler

    from mmanet.data import collate_samples
    from mmanet.deploy.checkpoint import load_checkpoint
    from mmanet.methods.mar import mine_discrepancies, mining_loader
    from mmanet.modality import leave_one_out_combinations
    from mmanet.models.factory import build_net
    from mmanet.training.factory import load_bundle, quiet_lightning, task_info
    from mmanet.training.fit import fit_stage, train_teacher

    quiet_lightning()
    start = time.perf_counter()
    cfg = worker_config(devices)
    bundle = load_bundle(cfg)
    info = task_info(bundle)
    teacher = train_teacher(cfg, bundle, out)
    net, _ = fit_stage(cfg, bundle, out, teacher=teacher)
    distributed = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if distributed else 1
    rank = dist.get_rank() if distributed else 0

    def test_loader():  # sharded across the processes (no padding: 120 test samples)
        sampler = DistributedSampler(bundle.test, shuffle=False) if distributed else None
        return DataLoader(bundle.test, batch_size=cfg.data.batch_size, sampler=sampler, collate_fn=collate_samples)

    table = info.evaluator().evaluate(net, test_loader())  # the confusion state is all-reduced in compute()
    miner = load_checkpoint(out / "checkpoints" / "last.ckpt")["mmanet"]["miner"]
    # the reductions alone, on a network every process builds identically
    torch.manual_seed(123)
    fixed = build_net(cfg, info)
    candidates = [info.spec.full, *leave_one_out_combinations(info.spec)]
    mined, skipped = mine_discrepancies(fixed, mining_loader(bundle, cfg), candidates)
    evaluator = info.evaluator()
    evaluator.evaluate(fixed, test_loader())
    confusion = evaluator.confusion.compute().tolist()
    if distributed:
        dist.barrier()
    if rank == 0:
        result = {
            "world_size": world,
            "errors": {combo.name: values["error"] for combo, values in table.rows},
            "miner": miner,
            "fixed_mining": mined,
            "fixed_skipped": skipped,
            "fixed_confusion": confusion,
            "seconds": time.perf_counter() - start,
        }
        (out / "result.json").write_text(json.dumps(result))
    if distributed:
        dist.barrier()


def segmentation_config(devices: int):
    """MMANet on the rooms with the ESANet network — BatchNorm in the encoders, the context module, the
    decoder and the regularization head — at two samples per process (often one weak row), the authors'
    per-pixel MAD on three maps and their MAR (the weak rows' pixel CE with the side outputs)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import tiny_raw
    from mmanet.config import resolve_run_config

    rooms = {"num_train": 16, "num_val": 4, "num_test": 4, "height": 64, "width": 64, "augment": True}
    raw = tiny_raw(
        "mmanet",
        data={"name": "rooms", "options": rooms, "batch_size": 2},
        model={"width": 4, "channels": None, "encoder": {"type": "resnet"}, "head": {"type": "esanet_decoder"},
               "fusion": "se_add", "dropout": 0.0},
        mad={"variant": "official", "alpha": 4.0, "reduction": "sum", "row_normalization": "column_halves",
             "feature": ["context", "skip16", "skip8"], "start_epoch": 1},
        mar={"warmup_epochs": 1, "variant": "official"},
        train={"max_epochs": 2, "lr": 0.001, "progress_bar": False, "devices": devices, "accelerator": "cpu",
               "strategy": "ddp" if devices > 1 else "auto"},
        teacher__max_epochs=1,
    )  # fmt: skip
    return resolve_run_config(raw)


def run_driver(out: Path, devices: int, segmentation: bool = False) -> None:
    """``mmanet.training.run`` itself (what ``mmanet train`` calls) under DDP."""
    import torch

    torch.set_num_threads(1)
    from mmanet.training import run

    run((segmentation_config if segmentation else worker_config)(devices), out)


def launch(out: Path, devices: int, mode: str = "stages") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(out), str(devices), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def results(out: Path, devices: int) -> dict:
    proc = launch(out, devices)
    assert proc.returncode == 0, f"{devices}-process run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads((out / "result.json").read_text())


def test_two_ddp_processes_match_one_process_with_the_same_global_batch(tmp_path):
    start = time.perf_counter()
    one = results(tmp_path / "one", 1)
    two = results(tmp_path / "two", 2)
    seconds = time.perf_counter() - start
    assert one["world_size"] == 1 and two["world_size"] == 2

    # exact: mining reductions (sharded loader + all-reduce) and the evaluator's confusion all-reduce
    assert one["fixed_mining"].keys() == two["fixed_mining"].keys()
    for name, value in one["fixed_mining"].items():
        assert two["fixed_mining"][name] == pytest.approx(value, rel=1e-9, abs=1e-15), name
    assert one["fixed_skipped"] == two["fixed_skipped"]
    assert one["fixed_confusion"] == two["fixed_confusion"]

    # the trained models: same mined weak set, per-combination errors within the stated tolerance
    assert sorted(one["miner"]["memory_bank"]) == sorted(two["miner"]["memory_bank"]) == ["0", "1"]
    assert one["miner"]["strong_modalities"] == two["miner"]["strong_modalities"]
    assert one["miner"]["weak_set"] == two["miner"]["weak_set"]
    assert one["errors"].keys() == two["errors"].keys() and len(one["errors"]) == 7
    diffs = {name: abs(one["errors"][name] - two["errors"][name]) for name in one["errors"]}
    assert max(diffs.values()) <= PER_COMBINATION_TOLERANCE, (one["errors"], two["errors"])
    average = abs(sum(one["errors"].values()) - sum(two["errors"].values())) / len(diffs)
    assert average <= AVERAGE_TOLERANCE, (one["errors"], two["errors"])
    print(
        f"\nDDP 2 processes vs 1 (global batch {GLOBAL_BATCH}): max per-combination |Δerror| "
        f"{max(diffs.values()):.2f} points, average {average:.2f}; wall {seconds:.0f}s "
        f"(1 process {one['seconds']:.0f}s, 2 processes {two['seconds']:.0f}s)"
    )


def test_the_run_driver_trains_under_ddp(tmp_path):
    """``mmanet.training.run`` under Lightning's DDP launcher: rank 0 owns the run directory (lock,
    config, tables); the second rank trains beside it instead of finding the directory locked."""
    proc = launch(tmp_path / "run", 2, mode="run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "per_combination.csv").is_file()
    assert not (tmp_path / "run" / ".lock.pid").exists()  # released


def test_mmanet_with_batchnorm_heads_and_one_weak_row_trains_under_ddp(tmp_path):
    """Every parameter of the ESANet network and its regularization head in every step (no unused
    parameter for DDP's reducer), whatever the weak rows of a process's two-sample batch."""
    proc = launch(tmp_path / "run", 2, mode="segmentation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert summary["miner"]["weak_set"]


if __name__ == "__main__":
    mode = sys.argv[3]
    if mode == "stages":
        worker(Path(sys.argv[1]), int(sys.argv[2]))
    else:
        run_driver(Path(sys.argv[1]), int(sys.argv[2]), segmentation=mode == "segmentation")
