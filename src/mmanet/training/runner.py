"""Run a configured training job end to end: data → stage(s) → best checkpoint → per-combination tables.

Run directory layout (``out``)::

    config.yaml                 resolved configuration
    checkpoints/{best,last}.ckpt
    logs/version_N/metrics.csv  tb/version_N/   CSV and TensorBoard logs (one version per attempt)
    teacher/ …                  (mmanet) the teacher stage, same layout
    sf/<combination>/ …         (customized) one sub-run per combination
    per_combination.{csv,md}    the evaluation split (config.evaluate.split)
    per_combination_val.{csv,md}
    results.json                summary (averages, worst/best, time, parameters, weak set)

The pieces live in their own modules: objects from config (:mod:`.factory`), the run-directory
guard (:mod:`.run_dir`), fitting a stage (:mod:`.fit`), evaluation (:mod:`.evaluation`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmanet.config import RunConfig
from mmanet.data import DataBundle
from mmanet.deploy.checkpoint import read_checkpoint
from mmanet.methods import method_entry
from mmanet.modality import Combination, all_combinations
from mmanet.results import ResultTable
from mmanet.training.evaluation import evaluate_tables
from mmanet.training.factory import load_bundle, quiet_lightning
from mmanet.training.fit import check_resumed_teacher, fit_stage, train_teacher
from mmanet.training.preflight import preflight
from mmanet.training.run_dir import RunDirectory, process_rank
from mmanet.versioning import stamp


@dataclass
class RunResult:
    out_dir: Path
    config: RunConfig
    tables: dict[str, ResultTable]
    train_seconds: float
    num_parameters: int
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def table(self) -> ResultTable:
        return self.tables[self.config.evaluate.split]


def customized_combinations(config: RunConfig, bundle: DataBundle) -> list[Combination]:
    if config.customized.combinations == "all":
        return all_combinations(bundle.spec)
    return sorted(bundle.spec.combination(name) for name in config.customized.combinations)


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def run(config: RunConfig, out_dir: str | Path, overwrite: bool = False, bundle: DataBundle | None = None) -> RunResult:
    """Train according to the method's run plan and write the per-combination tables into ``out_dir``."""
    quiet_lightning()
    if config.train.num_threads is not None:
        torch.set_num_threads(config.train.num_threads)
    out_dir = Path(out_dir)
    if process_rank() == 0:
        for note in config.schedule_warnings():
            print(f"warning: {note}", flush=True)
    with RunDirectory(out_dir, config, overwrite):
        bundle = bundle if bundle is not None else load_bundle(config)
        preflight(config, bundle)  # every name the configuration uses, before anything trains
        return _run_stages(config, out_dir, bundle)


def evaluated_splits(config: RunConfig) -> tuple[str, ...]:
    """The splits a run evaluates: ``evaluate.split: val`` (tuning, choosing defaults) never touches test."""
    return ("val",) if config.evaluate.split == "val" else ("val", "test")


def _run_stages(config: RunConfig, out_dir: Path, bundle: DataBundle) -> RunResult:
    """The method's run plan (:attr:`~mmanet.methods.Method.plan`), then the per-combination tables."""
    start = time.perf_counter()
    extras: dict[str, Any] = {}
    splits = evaluated_splits(config)
    method = method_entry(config.method).cls
    if method.plan == "per_combination":
        combos = customized_combinations(config, bundle)
        parts: dict[str, list[ResultTable]] = {split: [] for split in splits}
        num_parameters = 0
        for k, combo in enumerate(combos, 1):
            net, _ = fit_stage(config, bundle, out_dir / "sf" / combo.name, combination=combo)
            tables = evaluate_tables(net, bundle, config, method.eval_combinations(bundle.spec, combo), splits=splits)
            for split, table in tables.items():
                parts[split].append(table)
            num_parameters += count_parameters(net)
            print(
                f"SF [{k}/{len(combos)}] {combo.name}: val {tables['val'].metric} "
                f"{tables['val'].average()[tables['val'].metric]:.2f}",
                flush=True,
            )
        result_tables = {s: ResultTable.merged(t) for s, t in parts.items()}
        extras["models"] = len(combos)
    else:
        teacher = train_teacher(config, bundle, out_dir) if method.plan == "teacher_then_student" else None
        if teacher is not None:
            extras["teacher"] = teacher.reference()
            full = evaluate_tables(teacher.net, bundle, config, [bundle.spec.full], splits=splits)
            extras["teacher_full"] = {s: t.average()[t.metric] for s, t in full.items()}
            check_resumed_teacher(out_dir, teacher)
        net, best = fit_stage(config, bundle, out_dir, teacher=teacher)
        result_tables = evaluate_tables(net, bundle, config, method.eval_combinations(bundle.spec), splits=splits)
        num_parameters = count_parameters(net)
        final = read_checkpoint(best.parent / "last.ckpt")  # the method's final state
        extras.update(method.results_of(final.method_state))
    if bundle.missing_rates is not None:
        extras["missing_rates"] = bundle.missing_rates
    seconds = time.perf_counter() - start
    writes = process_rank() == 0  # DDP: every rank evaluates (metrics are all-reduced), rank 0 writes
    for split, table in result_tables.items():
        stem = "per_combination" if split == config.evaluate.split else f"per_combination_{split}"
        if writes:
            table.write(out_dir, stem)
    result = RunResult(out_dir, config, result_tables, seconds, num_parameters, extras)
    if writes:
        write_summary(result)
    return result


def write_summary(result: RunResult) -> None:
    summary: dict[str, Any] = {
        **stamp(),
        "name": result.config.name,
        "method": result.config.method,
        "seed": result.config.seed,
        "train_seconds": round(result.train_seconds, 2),
        "num_parameters": result.num_parameters,
    }
    for split, table in result.tables.items():
        avg = table.average()
        summary[split] = {
            "metric": table.metric,
            "average": avg[table.metric],
            "worst": [{"combination": c.name, "value": v} for c, v in table.worst(5)],
            "best": [{"combination": c.name, "value": v} for c, v in table.best(1)],
            "samples": dict(table.samples),
        }
        if table.complete_full is not None:  # the full combination on the samples with every modality
            summary[split]["complete_full"] = {**table.complete_full, "samples": table.complete_samples}
    summary.update({k: v for k, v in result.extras.items() if k != "miner"})
    if "miner" in result.extras:
        summary["miner"] = _jsonable(result.extras["miner"])
    (result.out_dir / "results.json").write_text(json.dumps(summary, indent=2))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj
