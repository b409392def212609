"""``mmanet benchmark``: several methods × several seeds → report.md, table.csv, ablation.csv, plots.

Protocol (docs/design.md §6): the data split is fixed (``data.split_seed``); seed k trains every
method with training seed ``base.seed + k``. Reported: per combination mean ± std over seeds,
the Average over all combinations, the mean of the 5 worst combinations (by the reference
method), the mean over the mined weak set, and the paired per-seed difference of every
method to the reference method. Model selection uses the validation split only.

Outputs (:func:`check_outputs`): each run in ``OUT/<label>/seed_<k>`` (a label is a plain name,
:func:`check_labels`), shared teachers in ``OUT/shared_teachers``, the report files
(:data:`REPORT_FILES`) at the top. A rerun reuses every finished run whose configuration is
unchanged; a run whose configuration changed is refused before anything is trained, unless
``overwrite`` (then only the changed runs are trained again). Nothing the benchmark reads (its
file, a method's ``config:``, the data, a teacher) is ever deleted or written over.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from mmanet.analysis.availability import check_tables_cover, validate_availability
from mmanet.analysis.baseline import empty_combination_metrics
from mmanet.analysis.deployment import SeedTable, analyse, deployment_markdown, recommendation_sentence
from mmanet.analysis.significance import ALPHA, adjusted_p_values, paired_p_value
from mmanet.benchmark_config import BenchmarkConfig, BenchmarkMethod, method_config
from mmanet.config import ConfigError, RunConfig, resolve_run_config
from mmanet.config_checks import load_yaml
from mmanet.data import DataBundle
from mmanet.figures.deployment import plot_availability_sweep, plot_shapley
from mmanet.figures.heatmap import plot_delta_heatmap
from mmanet.figures.per_combination import plot_per_combination
from mmanet.methods.mar import mining_history, weak_set_of
from mmanet.modality import Combination, all_combinations
from mmanet.outputs import OutputPathError, Reads, check_not_read, inside, plain_name_problem, writing
from mmanet.parallel import WORKER_LOGS, Job, LocalExecutor, RayExecutor, RunsFailedError, run_jobs
from mmanet.report import plot_mar_discrepancy
from mmanet.results import AVERAGE, ResultTable, higher_is_better, markdown_table
from mmanet.training.factory import check_config_against_data, load_bundle
from mmanet.training.preflight import preflight
from mmanet.training.run_dir import (
    RunDirectoryError,
    changed_run,
    check_deletable,
    data_changed,
    run_part,
    same_configuration,
)
from mmanet.training.runner import customized_combinations, run
from mmanet.training.shared_teacher import (
    BENCHMARK_TEACHERS,
    share_teacher,
    shared_teacher_dir,
    stale_shared_teacher,
    trained_shared_teacher,
)
from mmanet.versioning import SchemaError, check_schema

WORST_K = 5
#: the figures a benchmark writes at the top of its output directory, each as .png (300 dpi) and .pdf
FIGURES = ("per_combination", "delta_heatmap", "availability_sweep", "shapley")
#: the files a benchmark writes at the top of its output directory (besides mar_discrepancy_*.png and .pdf)
REPORT_FILES = (
    "report.md",
    "table.csv",
    "results_long.csv",
    "ablation.csv",
    "summary.json",
    "deployment.json",
    "deployment.md",
    *(f"{name}{suffix}" for name in FIGURES for suffix in (".png", ".pdf")),
)


@dataclass
class MethodRun:
    """One finished (method, seed) run as the report needs it."""

    label: str
    seed: int
    table: ResultTable
    val_table: ResultTable
    summary: dict[str, Any]


@dataclass
class BenchmarkReport:
    config: BenchmarkConfig
    out_dir: Path
    runs: dict[str, list[MethodRun]] = field(default_factory=dict)
    rows: list[list[str]] = field(default_factory=list)
    #: the per-combination table (header, rows) of report.md (table.csv adds numeric mean and std columns)
    table_rows: tuple[list[str], list[list[str]]] = field(default_factory=lambda: ([], []))
    #: the deployment availability (modality → probability; None: no expected metric)
    availability: dict[str, float] | None = None
    #: the headline metric of the empty combination (training majority class) on the reported split
    empty_metric: float | None = None
    #: the content of deployment.json (after :func:`write_report`)
    deployment: dict[str, Any] | None = None
    #: the (method, seed) cells whose run failed (a parallel benchmark goes on without them), with the reason
    missing: list[str] = field(default_factory=list)

    def table_markdown(self) -> str:
        return markdown_table(*self.table_rows)

    @property
    def labels(self) -> list[str]:
        return list(self.runs)

    def tables(self, label: str) -> list[ResultTable]:
        return [r.table for r in self.runs[label]]

    def summary_markdown(self) -> str:
        return markdown_table(self.summary_header(), self.rows)

    def summary_header(self) -> list[str]:
        metric = next(iter(self.runs.values()))[0].table.metric
        ref = self.config.reference_label
        return ["method", f"Average {metric}", f"worst-{WORST_K} mean", "weak-set mean", f"Δ Average vs {ref}"]


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.pstdev(finite) if len(finite) > 1 else 0.0


def fmt_mean_std(values: list[float]) -> str:
    mean, std = _mean_std(values)
    return "nan" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def _subset_mean(table: ResultTable, names: list[str]) -> float:
    values = [table.value(n) for n in names]
    return sum(values) / len(values) if values else math.nan


def finished_run(
    cfg: RunConfig, run_dir: Path, bundle: DataBundle
) -> tuple[ResultTable, ResultTable, dict[str, Any]] | None:
    """The tables of the finished run in ``run_dir`` when its configuration and data are ``cfg``'s (None: not
    finished, damaged, or another configuration). A run written by a newer mmanet is a SchemaError."""
    done = run_dir / "results.json"
    if not (done.exists() and (run_dir / "per_combination.csv").exists()):
        return None
    try:
        saved = load_yaml(run_dir / "config.yaml")
        if not same_configuration(run_dir, saved, cfg) or data_changed(run_dir, cfg) is not None:
            return None
        summary = json.loads(done.read_text())
        check_schema(summary, f"the run results {done}")
        metric = summary[cfg.evaluate.split]["metric"]
        test = ResultTable.read_csv(run_dir / "per_combination.csv", bundle.spec, metric)
        if cfg.evaluate.split == "val":  # per_combination.csv IS the validation table
            return test, test, summary
        val = ResultTable.read_csv(run_dir / "per_combination_val.csv", bundle.spec, metric)
        return test, val, summary
    except SchemaError:
        raise  # written by a newer mmanet: never resumed over
    except (OSError, KeyError, ValueError, TypeError, yaml.YAMLError):  # (YAMLTooLarge is a ValueError)
        return None  # incomplete or damaged: resumed (a changed config is refused by the run directory)


def run_or_reuse(
    cfg: RunConfig, run_dir: Path, bundle: DataBundle, overwrite: bool = False, reads: Reads = ()
) -> tuple[ResultTable, ResultTable, dict[str, Any]]:
    """Run (or reuse a finished run in ``run_dir`` with the same config) and return its tables.

    A run whose saved configuration differs is refused (:class:`RunDirectoryError`) unless
    ``overwrite``: then it alone is trained again — never when ``run_dir`` holds something the run
    reads (its config's paths and ``reads``). An interrupted run with the same config resumes."""
    found = finished_run(cfg, run_dir, bundle)
    if found is not None:
        return found
    redo = overwrite and changed_run(run_dir, cfg)
    if redo:
        check_deletable(run_dir, cfg, reads)
    result = run(cfg, run_dir, overwrite=redo, bundle=bundle)
    written = finished_run(cfg, run_dir, bundle)  # the tables as written: a fresh run reports what a rerun reuses
    if written is not None:
        return written
    summary = json.loads((run_dir / "results.json").read_text())
    return result.tables[cfg.evaluate.split], result.tables["val"], summary


def check_labels(bench: BenchmarkConfig) -> None:
    """Every method label is a plain name: it becomes the folder ``OUT/<label>`` and must not point elsewhere."""
    for m in bench.methods:
        problem = plain_name_problem(m.display, (BENCHMARK_TEACHERS, WORKER_LOGS, *REPORT_FILES))
        if problem:
            plain = Path(m.display.replace("\\", "/")).name
            hint = plain if plain and not plain_name_problem(plain, (BENCHMARK_TEACHERS, *REPORT_FILES)) else "MyMethod"
            raise ConfigError(
                f"benchmark method label {m.display!r} {problem}: a label names the method's folder in the "
                f"output directory (OUT/<label>/seed_<k>); give a plain name, e.g. label: {hint}"
            )


def _is_benchmark_directory(out_dir: Path) -> bool:
    """``out_dir`` holds an earlier benchmark (its summary, its shared teachers or one of its runs)."""
    summary = out_dir / "summary.json"
    try:
        known = json.loads(summary.read_text()).keys() >= {"metric", "methods"} if summary.is_file() else False
    except (OSError, ValueError, AttributeError):
        known = False
    return known or (out_dir / BENCHMARK_TEACHERS).is_dir() or any(out_dir.glob("*/seed_*/config.yaml"))


def check_outputs(out_dir: Path, reads: Reads = ()) -> None:
    """``out_dir`` can take a benchmark: a new or empty directory, or an earlier benchmark's; its report files
    are neither something the benchmark reads nor files it did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputPathError(f"--out {out_dir} is an existing file, not a directory; choose a directory")
    if not out_dir.is_dir():
        return
    part = run_part(out_dir)
    if part is not None:
        raise OutputPathError(f"--out {out_dir} is {part} (of mmanet train), not a benchmark's; choose a new directory")
    reports = [out_dir / name for name in REPORT_FILES] + sorted(out_dir.glob("mar_discrepancy_*.p[nd][gf]"))
    for path in reports:
        check_not_read(path, reads, subject=f"the report file {path}")
    taken = [p.name for p in reports if p.exists() or p.is_symlink()]
    if taken and not _is_benchmark_directory(out_dir):
        raise OutputPathError(
            f"--out {out_dir} is not a benchmark directory (no summary.json, no runs) but already holds "
            f"{', '.join(taken)}, which the benchmark would write over; choose a new or empty directory"
        )


def _planned(bench: BenchmarkConfig, method: BenchmarkMethod, seed: int, out_dir: Path) -> RunConfig:
    """The configuration a run will have, as far as it is known before anything is trained: with a shared
    teacher, the one already trained in this benchmark (its path and content hash), else — to be trained
    later, the same weights as before — the teacher the saved run names."""
    cfg = method_config(bench, method, seed=seed)
    if not (bench.share_teachers and cfg.stage == "mmanet" and not cfg.teacher.checkpoint):
        return cfg
    found = trained_shared_teacher(cfg, out_dir / BENCHMARK_TEACHERS)
    if found is not None:
        return found
    saved = out_dir / method.display / f"seed_{seed}" / "config.yaml"
    try:
        teacher = load_yaml(saved)["teacher"]
        pointer, digest = teacher["checkpoint"], teacher.get("sha256")
    except (OSError, KeyError, TypeError, AttributeError, ValueError, yaml.YAMLError):  # ValueError: too large
        return cfg
    if isinstance(pointer, str) and (digest is not None or inside(out_dir / BENCHMARK_TEACHERS, pointer)):
        return cfg.model_copy(
            update={"teacher": cfg.teacher.model_copy(update={"checkpoint": pointer, "sha256": digest})}
        )
    return cfg


def check_changed_runs(
    bench: BenchmarkConfig,
    methods: list[BenchmarkMethod],
    seeds: list[int],
    out_dir: Path,
    overwrite: bool,
    reads: Reads,
) -> list[Path]:
    """The finished runs (shared teachers included) whose configuration or data changed; refused (before anything
    is trained) unless ``overwrite``, and never when such a run's directory holds something the benchmark reads."""
    changed: list[Path] = []
    teachers: set[Path] = set()  # each shared teacher examined once
    for seed in seeds:
        for method in methods:
            run_dir = out_dir / method.display / f"seed_{seed}"
            cfg = method_config(bench, method, seed=seed)
            if bench.share_teachers and cfg.stage == "mmanet" and not cfg.teacher.checkpoint:
                teacher_dir = shared_teacher_dir(cfg, out_dir / BENCHMARK_TEACHERS)
                if teacher_dir not in teachers and stale_shared_teacher(cfg, out_dir / BENCHMARK_TEACHERS):
                    changed.append(teacher_dir)
                teachers.add(teacher_dir)
            cfg = _planned(bench, method, seed, out_dir)
            if changed_run(run_dir, cfg):
                if overwrite:
                    check_deletable(run_dir, cfg, reads)
                changed.append(run_dir)
    if changed and not overwrite:
        listed = ", ".join(str(p) for p in changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        runs = "holds a finished run" if len(changed) == 1 else f"hold {len(changed)} finished runs"
        raise RunDirectoryError(
            f"{listed} {runs} trained with another configuration than this benchmark gives now, or on data that "
            "changed since; pass --overwrite to train the changed runs again (the unchanged runs are kept), or choose "
            "another --out"
        )
    return changed


def run_benchmark(
    bench: BenchmarkConfig,
    out_dir: str | Path,
    only: list[str] | None = None,
    console=None,
    overwrite: bool = False,
    reads: Reads = (),
    availability: Mapping[str, float] | None = None,
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
    gpus_per_run: float = 0.0,
) -> BenchmarkReport:
    """Train (or reuse) every method × seed into ``out_dir`` and write the report (module docstring).

    ``overwrite``: train again the runs whose configuration changed; ``reads``: files the caller read
    (the benchmark file), never deleted or written over — the methods' ``config:`` files are added here.
    ``availability`` (else the benchmark's ``availability:``): the deployment analysis' modality availability,
    checked against the data and every method's combinations before anything is trained. ``workers`` > 1: the
    runs go to that many worker processes (:mod:`mmanet.parallel`; the same tables as a serial benchmark)."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers!r}")
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor {executor!r} is not an executor; valid: ['local', 'ray']")
    if address is not None and executor != "ray":
        raise ConfigError("--address names a Ray cluster: give it with --executor ray")
    if not gpus_per_run >= 0 or (gpus_per_run and executor != "ray"):
        raise ConfigError(f"--gpus-per-run {gpus_per_run!r}: a number ≥ 0, with --executor ray")
    out_dir = Path(out_dir)
    check_labels(bench)
    reads = [*reads, *((f"the config file of method {m.display!r}", m.config) for m in bench.methods)]
    check_outputs(out_dir, reads)
    methods: list[BenchmarkMethod] = bench.methods
    if only:
        labels = [m.display for m in methods]
        unknown = [o for o in only if o not in labels]
        if unknown:
            raise ConfigError(f"--only {unknown[0]!r} is not a method label of this benchmark; labels: {labels}")
        methods = [m for m in methods if m.display in only]
    first_cfg = method_config(bench, methods[0])
    seeds = [first_cfg.seed + k for k in range(bench.seeds)]
    check_changed_runs(bench, methods, seeds, out_dir, overwrite, reads)
    bundle = load_bundle(first_cfg)  # every method shares the data and its split
    wanted = availability if availability is not None else bench.availability
    checked = validate_availability(wanted, bundle.spec) if wanted is not None else None
    for method in methods:  # every method's names (components, features, modalities), before anything trains
        cfg = method_config(bench, method)
        check_config_against_data(cfg, bundle)
        preflight(cfg, bundle)
        if checked is not None:
            combos = (
                customized_combinations(cfg, bundle) if cfg.stage == "customized" else all_combinations(bundle.spec)
            )
            check_tables_cover({method.display: [c.name for c in combos]}, checked, bundle.spec)
    with contextlib.ExitStack() as stack:
        pool: LocalExecutor | RayExecutor | None = None
        if workers > 1 or executor == "ray":  # (Ray: reached, and its GPUs counted, before anything is written)
            chosen = RayExecutor(workers, address, gpus_per_run) if executor == "ray" else LocalExecutor(workers)
            stack.enter_context(chosen)
            pool = chosen
        out_dir.mkdir(parents=True, exist_ok=True)  # (after every check: a refused benchmark leaves nothing behind)
        report = BenchmarkReport(bench, out_dir, {m.display: [] for m in methods}, availability=checked)
        if pool is not None:
            _run_in_parallel(bench, methods, first_cfg.seed, out_dir, bundle, report, overwrite, pool, console)
        else:
            _run_serially(bench, methods, first_cfg.seed, out_dir, bundle, report, overwrite, reads, console)
    report.runs = {label: runs for label, runs in report.runs.items() if runs}
    if not report.runs:
        raise RunsFailedError("every run failed: " + "; ".join(report.missing))
    first_table = next(iter(report.runs.values()))[0].table
    report.empty_metric = empty_combination_metrics(bundle, first_cfg.evaluate.split, first_table.metric).get(
        first_table.metric
    )
    with writing(out_dir / "report.md", "the report "):
        write_report(report)
    if report.missing:
        raise RunsFailedError(
            f"{len(report.missing)} run(s) failed (the others finished; report.md lists what is missing): "
            + "; ".join(report.missing)
            + ". Run the same command again to retry them: finished runs are reused"
        )
    return report


def _say_run(console, label: str, test: ResultTable, val: ResultTable, summary: dict[str, Any], reused: bool) -> None:
    _say(
        console,
        f"    {label}: {test.metric} average {test.average()[test.metric]:.2f} (test), "
        f"{val.average()[val.metric]:.2f} (val), {summary['train_seconds']:.1f} s"
        + (" (reused: finished earlier with this configuration)" if reused else ""),
    )


def _run_serially(
    bench: BenchmarkConfig,
    methods: list[BenchmarkMethod],
    first_seed: int,
    out_dir: Path,
    bundle: DataBundle,
    report: BenchmarkReport,
    overwrite: bool,
    reads: Reads,
    console,
) -> None:
    total = len(methods) * bench.seeds
    done = 0
    start = time.perf_counter()
    for k in range(bench.seeds):
        for method in methods:
            cfg = method_config(bench, method, seed=first_seed + k)
            if bench.share_teachers:
                cfg = share_teacher(cfg, out_dir / BENCHMARK_TEACHERS, bundle, overwrite)
            done += 1
            _say(console, f"[{done}/{total}] {method.display} seed {cfg.seed} ({time.perf_counter() - start:.0f} s)")
            run_dir = out_dir / method.display / f"seed_{cfg.seed}"
            found = finished_run(cfg, run_dir, bundle)  # (read once: reused as it is, else trained)
            test, val, summary = found if found is not None else run_or_reuse(cfg, run_dir, bundle, overwrite, reads)
            report.runs[method.display].append(MethodRun(method.display, cfg.seed, test, val, summary))
            _say_run(console, method.display, test, val, summary, found is not None)


def _run_in_parallel(
    bench: BenchmarkConfig,
    methods: list[BenchmarkMethod],
    first_seed: int,
    out_dir: Path,
    bundle: DataBundle,
    report: BenchmarkReport,
    overwrite: bool,
    pool: LocalExecutor | RayExecutor,
    console,
) -> None:
    """The grid on the executor's workers (mmanet.parallel): every distinct shared teacher once, each run as soon
    as its teacher is there; the runs without a teacher from the start."""
    teachers_dir = out_dir.resolve() / BENCHMARK_TEACHERS  # (absolute: a worker may start elsewhere)
    logs = out_dir.resolve() / WORKER_LOGS
    cwd = str(Path.cwd())
    seeds = [first_seed + k for k in range(bench.seeds)]
    teacher_jobs: dict[Path, Job] = {}
    run_jobs_: list[Job] = []
    planned = []
    for seed in seeds:
        for method in methods:
            cfg = method_config(bench, method, seed=seed)
            name = f"{method.display} seed {cfg.seed}"
            run_dir = out_dir / method.display / f"seed_{cfg.seed}"
            after = None
            if bench.share_teachers and cfg.stage == "mmanet" and not cfg.teacher.checkpoint:
                place = shared_teacher_dir(cfg, teachers_dir)
                if place not in teacher_jobs:
                    teacher_jobs[place] = Job(
                        f"teacher {place.name}", cfg.model_dump(mode="json"), place, logs / f"teacher_{place.name}.log",
                        overwrite, kind="teacher", teachers_dir=teachers_dir, cwd=cwd,
                    )  # fmt: skip
                after = teacher_jobs[place].name
            log = logs / f"{method.display}_seed{cfg.seed}.log"
            job = Job(name, cfg.model_dump(mode="json"), run_dir.resolve(), log, overwrite, after=after, cwd=cwd)
            run_jobs_.append(job)
            planned.append((method, cfg, run_dir))

    def pointed_at_teacher(job: Job) -> Job:  # (the teacher is trained: share_teacher only points at it)
        cfg = share_teacher(resolve_run_config(job.config, source=job.name), teachers_dir, bundle, overwrite)
        return replace(job, config=cfg.model_dump(mode="json"))

    failed = run_jobs([*teacher_jobs.values(), *run_jobs_], pool, lambda m: _say(console, m), pointed_at_teacher)
    for method, cfg, run_dir in planned:
        if bench.share_teachers and cfg.stage == "mmanet" and not cfg.teacher.checkpoint:
            cfg = _planned(bench, method, cfg.seed, out_dir)
        name = f"{method.display} seed {cfg.seed}"
        found = finished_run(cfg, run_dir, bundle) if name not in failed else None
        if found is None:
            report.missing.append(f"{name}: {failed.get(name, 'did not finish')}")
            continue
        test, val, summary = found
        report.runs[method.display].append(MethodRun(method.display, cfg.seed, test, val, summary))


def _say(console, message: str) -> None:
    if console is not None:
        console.print(message, highlight=False)
    else:
        print(message, flush=True)


def weak_sets(report: BenchmarkReport) -> dict[int, list[str]]:
    """Per seed, the weak set mined by the first method that has a miner."""
    found: dict[int, list[str]] = {}
    for runs in report.runs.values():
        for r in runs:
            weak = weak_set_of(r.summary)
            if weak and r.seed not in found:
                found[r.seed] = weak
    return found


def describe_weak_set(names: list[str], spec) -> str:
    """Short description: 'the 31 combinations without fac' when W is 'every combination lacking S'."""
    from mmanet.modality import all_combinations

    members = {m for n in names for m in n.split("+")}
    strong = [m for m in spec.names if m not in members]
    lacking = [c.name for c in all_combinations(spec) if not any(c.contains(s) for s in strong)]
    if strong and sorted(lacking) == sorted(names):
        plural = "s" if len(names) != 1 else ""
        return f"the {len(names)} combination{plural} without {'+'.join(strong)}"
    return "{" + ", ".join(names) + "}"


def write_report(report: BenchmarkReport) -> None:
    bench, out = report.config, report.out_dir
    labels = report.labels
    ref = bench.reference_label if bench.reference_label in report.runs else labels[0]
    first = report.runs[labels[0]][0].table
    metric, spec = first.metric, first.spec
    combos: list[Combination] = [c for c, _ in first.rows]
    lower = not higher_is_better(metric)

    # worst combinations, chosen by the reference method's VALIDATION results (no test-set selection)
    ref_val = {c.name: statistics.fmean(r.val_table.value(c) for r in report.runs[ref]) for c in combos}
    worst = sorted(ref_val, key=lambda name: ref_val[name], reverse=lower)[:WORST_K]
    mined = weak_sets(report)

    def per_seed(label: str, fn) -> list[float]:
        return [fn(r) for r in report.runs[label]]

    def weak_mean(r: MethodRun) -> float:
        names = mined.get(r.seed) or (next(iter(mined.values())) if mined else [])
        return _subset_mean(r.table, names)

    # table.csv: one row per combination + Average, per method the formatted cell and its mean and std as numbers
    header = [*spec.names, "combination", *labels]
    cells: list[tuple[str, str, Callable[[MethodRun], float]]] = [(c.render(), c.name, _value_of(c)) for c in combos]
    cells.append(("", AVERAGE, lambda r: r.table.average()[metric]))  # (no ●/○ marks)
    csv_header = [*spec.names, "combination", *(f"{lb}{part}" for lb in labels for part in ("", " mean", " std"))]
    rows, csv_rows = [], []
    for marks, name, fn in cells:
        keys = [*(marks or [""] * len(spec.names)), name]
        values = {lb: per_seed(lb, fn) for lb in labels}
        rows.append([*keys, *(fmt_mean_std(values[lb]) for lb in labels)])
        numbers = {lb: [_num(x) for x in _mean_std(values[lb])] for lb in labels}
        csv_rows.append([*keys, *(x for lb in labels for x in (fmt_mean_std(values[lb]), *numbers[lb]))])
    _write_csv(out / "table.csv", csv_header, csv_rows)
    report.table_rows = (header, rows)
    _write_long_csv(out / "results_long.csv", report)

    # headline summary with paired differences to the reference method
    ref_avgs = per_seed(ref, lambda r: r.table.average()[metric])
    summary_rows = []
    for lb in labels:
        avgs = per_seed(lb, lambda r: r.table.average()[metric])
        paired = [a - b for a, b in zip(avgs, ref_avgs, strict=False)]
        summary_rows.append(
            [
                lb,
                fmt_mean_std(avgs),
                fmt_mean_std(per_seed(lb, lambda r: _subset_mean(r.table, worst))),
                fmt_mean_std(per_seed(lb, weak_mean)) if mined else "–",
                "–" if lb == ref else fmt_mean_std(paired),
            ]
        )
    report.rows = summary_rows

    # ablation.csv (paper Table 6): columns = the configured ablation labels
    if bench.ablation:
        columns = [(col, lb) for col, lb in bench.ablation.items() if lb in report.runs]
        present = [lb for _, lb in columns]
        abl_rows = [
            [
                f"{AVERAGE} ({metric})",
                *(fmt_mean_std(per_seed(lb, lambda r: r.table.average()[metric])) for lb in present),
            ],
            [
                f"worst-{WORST_K} mean",
                *(fmt_mean_std(per_seed(lb, lambda r: _subset_mean(r.table, worst))) for lb in present),
            ],
        ]
        if mined:
            abl_rows.append(["weak-set mean", *(fmt_mean_std(per_seed(lb, weak_mean)) for lb in present)])
        _write_csv(out / "ablation.csv", ["row", *(col for col, _ in columns)], abl_rows)

    # costs
    cost_rows = [
        [
            lb,
            f"{report.runs[lb][0].summary['num_parameters']:,}",
            fmt_mean_std(per_seed(lb, lambda r: float(r.summary["train_seconds"]))),
        ]
        for lb in labels
    ]

    # plots (and the deployment analysis)
    order = [m.display for m in bench.methods]  # a method's colour follows its place in the benchmark file
    plot_per_combination({lb: report.tables(lb) for lb in labels}, out / "per_combination", reference=ref, order=order)
    _plot_deltas(report, ref, combos, out / "delta_heatmap")
    deployment_notes = _write_deployment(report, ref, order)
    mar_plots = []
    for lb in labels:
        for r in report.runs[lb]:
            recorded = mining_history(r.summary)
            if recorded is not None:
                history, weak, strong = recorded
                name = f"mar_discrepancy_{lb}_seed{r.seed}.png"
                title = f"{lb}, seed {r.seed}: weak set = {describe_weak_set(weak, spec)}"
                plot_mar_discrepancy(history, weak, strong, out / name, title=title)
                mar_plots.append(name)

    md = [f"# Benchmark `{bench.name}`", ""]
    base_cfg = method_config(bench, bench.methods[0])
    md.append(
        f"Data: `{base_cfg.data.name}` {base_cfg.data.options or ''} (split seed {base_cfg.data.split_seed}); "
        f"{bench.seeds} seed(s); metric: {metric} (%), {'lower' if lower else 'higher'} is better; reported on "
        f"the {base_cfg.evaluate.split} split, checkpoints and worst combinations chosen on validation."
    )
    md += ["", "## Summary", "", report.summary_markdown(), ""]
    md.append(f"Worst-{WORST_K} combinations (by {ref} on validation): {', '.join(worst)}.")
    if mined:
        md.append(
            "Mined weak sets: " + "; ".join(f"seed {s}: {describe_weak_set(w, spec)}" for s, w in sorted(mined.items()))
        )
    md += [
        "",
        f"Δ = paired per-seed difference of the Average to {ref}. Every ± is the population standard deviation "
        "over seeds (ddof = 0).",
        "",
    ]
    if bench.ablation:
        md += ["## Ablation (paper Table 6)", "", _csv_to_md(out / "ablation.csv"), ""]
    if report.missing:
        md += ["## Missing runs", "", "These cells failed; the tables above are without them:", ""]
        md += [f"* {cell}" for cell in report.missing] + [""]
    md += ["## Cost", "", markdown_table(["method", "parameters (deployed)", "train seconds"], cost_rows), ""]
    md += ["## Per combination (mean ± std over seeds)", "", markdown_table(header, rows), ""]
    md += ["## Which model to deploy", "", *deployment_notes, ""]
    md += ["## Plots", "", "![per combination](per_combination.png)", "", "![paired difference](delta_heatmap.png)", ""]
    md += ["![availability sweep](availability_sweep.png)", "", "![Shapley values](shapley.png)", ""]
    md += [f"![MAR mining]({p})" for p in mar_plots]
    (out / "report.md").write_text("\n".join(md) + "\n")
    (out / "summary.json").write_text(
        json.dumps(
            {
                "metric": metric,
                "reference": ref,
                "worst": worst,
                "weak_sets": mined,
                "methods": {
                    lb: {
                        "average": per_seed(lb, lambda r: r.table.average()[metric]),
                        "seeds": [r.seed for r in report.runs[lb]],
                    }
                    for lb in labels
                },
            },
            indent=2,
        )
    )


def _value_of(combination: Combination) -> Callable[[MethodRun], float]:
    return lambda r: r.table.value(combination)


def _num(value: float) -> str:
    """A number for a CSV cell (empty when undefined, so pandas reads NaN)."""
    return "" if math.isnan(value) else f"{float(value):.10g}"


def _write_long_csv(path: Path, report: BenchmarkReport) -> None:
    """results_long.csv: one row per (method, seed, split, combination, metric) with a 0/1 column per modality."""
    spec = next(iter(report.runs.values()))[0].table.spec
    split = method_config(report.config, report.config.methods[0]).evaluate.split
    header = ["method", "seed", "split", "combination", *spec.names, "metric", "value"]
    rows = []
    for label, runs in report.runs.items():
        for r in runs:
            tables = [(split, r.table)] + ([("val", r.val_table)] if split != "val" else [])
            for name, table in tables:
                for combo, values in table.rows:
                    bits = [str(int(combo.contains(m))) for m in spec.names]
                    rows += [[label, str(r.seed), name, combo.name, *bits, k, _num(v)] for k, v in values.items()]
    _write_csv(path, header, rows)


def _plot_deltas(report: BenchmarkReport, ref: str, combos: list[Combination], path: Path) -> None:
    """The Δ heatmap of every method against the reference (paired over their common seeds)."""
    first = report.runs[ref][0].table
    others = [lb for lb in report.labels if lb != ref]
    if not others:
        return
    columns: list[Any] = [*combos, None]  # None: the Average

    def value(r: MethodRun, c: Combination | None) -> float:
        return r.table.average()[first.metric] if c is None else r.table.value(c)

    deltas: dict[str, list[float]] = {}
    p_values: dict[str, list[float]] = {}
    ref_by_seed = {r.seed: r for r in report.runs[ref]}
    for lb in others:
        pairs = [(r, ref_by_seed[r.seed]) for r in report.runs[lb] if r.seed in ref_by_seed]
        deltas[lb], p_values[lb] = [], []
        for c in columns:
            a, b = [value(x, c) for x, _ in pairs], [value(y, c) for _, y in pairs]
            deltas[lb].append(statistics.fmean(x - y for x, y in zip(a, b, strict=True)) if pairs else math.nan)
            p_values[lb].append(paired_p_value(a, b))
    adjusted = adjusted_p_values([p for lb in others for p in p_values[lb]])  # over every cell at once
    width = len(columns)
    marked = {lb: [q < ALPHA for q in adjusted[k * width : (k + 1) * width]] for k, lb in enumerate(others)}
    plot_delta_heatmap(deltas, marked, combos, first.spec, first.metric, ref, path)


def _write_deployment(report: BenchmarkReport, ref: str, order: list[str]) -> list[str]:
    """deployment.json, deployment.md and the sweep and Shapley figures; returns report.md's lines about them."""
    out = report.out_dir
    runs = {lb: [SeedTable(r.seed, r.table, r.val_table) for r in report.runs[lb]] for lb in report.labels}
    spec = next(iter(runs.values()))[0].table.spec
    result = analyse(runs, spec, ref, report.availability, report.empty_metric)
    report.deployment = result
    (out / "deployment.json").write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    (out / "deployment.md").write_text(deployment_markdown(result, spec) + "\n")
    metric = result["metric"]
    methods = result["methods"]
    panels = ["all", *spec.names]
    curves = {
        lb: {p: (e["sweep"][p]["mean"], e["sweep"][p]["std"]) for p in panels}
        for lb, e in methods.items()
        if "all" in e["sweep"]
    }
    if curves:
        plot_availability_sweep(result["sweep_levels"], curves, panels, metric, out / "availability_sweep", order)
    shapley = {
        lb: {m: (e["shapley"][m]["mean"], e["shapley"][m]["std"]) for m in spec.names}
        for lb, e in methods.items()
        if "shapley" in e
    }
    if shapley:
        plot_shapley(shapley, list(spec.names), metric, out / "shapley", order)
    lines = []
    if "recommendation" in result:
        lines.append(recommendation_sentence(result) + " Details: [deployment.md](deployment.md).")
    else:
        lines.append(
            "No availability given: pass --availability rgb=0.9,… (or the key availability:) for the expected "
            "metric and a recommendation. Shapley values and the availability sweep: [deployment.md](deployment.md)."
        )
    return lines


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _csv_to_md(path: Path) -> str:
    with path.open() as fh:
        records = list(csv.reader(fh))
    return markdown_table(records[0], records[1:])
