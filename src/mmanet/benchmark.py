"""``mmanet benchmark``: several methods × several seeds → report.md, table.csv, ablation.csv, plots.

Protocol (DESIGN §6): the data split is fixed (``data.split_seed``); seed k trains every
method with training seed ``base.seed + k``. Reported: per combination mean ± std over seeds,
the Average over all combinations, the mean of the 5 worst combinations (by the reference
method), the mean over the mined weak set, and the paired per-seed difference of every
method to the reference method. Model selection uses the validation split only.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmanet.config import BenchmarkConfig, BenchmarkMethod, RunConfig, method_config
from mmanet.data import DataBundle
from mmanet.modality import Combination
from mmanet.report import plot_mar_discrepancy, plot_per_combination
from mmanet.results import AVERAGE, ResultTable, higher_is_better, markdown_table
from mmanet.training.factory import load_bundle
from mmanet.training.run_dir import RunDirectoryError
from mmanet.training.runner import run
from mmanet.training.shared_teacher import BENCHMARK_TEACHERS, share_teacher

WORST_K = 5


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
    #: the per-combination table (header, rows) as written to table.csv
    table_rows: tuple[list[str], list[list[str]]] = field(default_factory=lambda: ([], []))

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


def run_or_reuse(cfg: RunConfig, run_dir: Path, bundle: DataBundle) -> tuple[ResultTable, ResultTable, dict[str, Any]]:
    """Run (or reuse a finished run in ``run_dir`` with the same config) and return its tables."""
    done = run_dir / "results.json"
    if done.exists() and (run_dir / "per_combination.csv").exists():
        try:
            if yaml.safe_load((run_dir / "config.yaml").read_text()) == cfg.model_dump(mode="json"):
                summary = json.loads(done.read_text())
                metric = summary[cfg.evaluate.split]["metric"]
                test = ResultTable.read_csv(run_dir / "per_combination.csv", bundle.spec, metric)
                if cfg.evaluate.split == "val":  # per_combination.csv IS the validation table
                    return test, test, summary
                val = ResultTable.read_csv(run_dir / "per_combination_val.csv", bundle.spec, metric)
                return test, val, summary
        except (OSError, KeyError, ValueError, TypeError, yaml.YAMLError):
            pass  # incomplete, damaged or foreign: run it again below
    try:
        result = run(cfg, run_dir, bundle=bundle)
    except RunDirectoryError:
        result = run(cfg, run_dir, overwrite=True, bundle=bundle)
    summary = json.loads((run_dir / "results.json").read_text())
    return result.tables[cfg.evaluate.split], result.tables["val"], summary


def run_benchmark(
    bench: BenchmarkConfig, out_dir: str | Path, only: list[str] | None = None, console=None
) -> BenchmarkReport:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods: list[BenchmarkMethod] = bench.methods
    if only:
        labels = [m.display for m in methods]
        unknown = [o for o in only if o not in labels]
        if unknown:
            raise ValueError(f"--only {unknown[0]!r} is not a method label of this benchmark; labels: {labels}")
        methods = [m for m in methods if m.display in only]
    first_cfg = method_config(bench, methods[0])
    bundle = load_bundle(first_cfg)  # every method shares the data and its split
    report = BenchmarkReport(bench, out_dir, {m.display: [] for m in methods})
    total = len(methods) * bench.seeds
    done = 0
    start = time.perf_counter()
    for k in range(bench.seeds):
        for method in methods:
            cfg = method_config(bench, method, seed=first_cfg.seed + k)
            if bench.share_teachers:
                cfg = share_teacher(cfg, out_dir / BENCHMARK_TEACHERS, bundle)
            done += 1
            _say(console, f"[{done}/{total}] {method.display} seed {cfg.seed} ({time.perf_counter() - start:.0f} s)")
            test, val, summary = run_or_reuse(cfg, out_dir / method.display / f"seed_{cfg.seed}", bundle)
            report.runs[method.display].append(MethodRun(method.display, cfg.seed, test, val, summary))
            _say(
                console,
                f"    {method.display}: {test.metric} average {test.average()[test.metric]:.2f} (test), "
                f"{val.average()[val.metric]:.2f} (val), {summary['train_seconds']:.1f} s",
            )
    write_report(report)
    return report


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
            miner = r.summary.get("miner")
            if miner and miner.get("weak_set") and r.seed not in found:
                found[r.seed] = list(miner["weak_set"])
    return found


def describe_weak_set(names: list[str], spec) -> str:
    """Short description: 'the 31 combinations without fac' when W is 'every combination lacking S'."""
    from mmanet.modality import all_combinations

    members = {m for n in names for m in n.split("+")}
    strong = [m for m in spec.names if m not in members]
    lacking = [c.name for c in all_combinations(spec) if not any(c.contains(s) for s in strong)]
    if strong and sorted(lacking) == sorted(names):
        return f"the {len(names)} combinations without {'+'.join(strong)}"
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
    worst = sorted(ref_val, key=ref_val.get, reverse=lower)[:WORST_K]
    mined = weak_sets(report)

    def per_seed(label: str, fn) -> list[float]:
        return [fn(r) for r in report.runs[label]]

    def weak_mean(r: MethodRun) -> float:
        names = mined.get(r.seed) or (next(iter(mined.values())) if mined else [])
        return _subset_mean(r.table, names)

    # table.csv: one row per combination + Average (+ worst-5, weak set), one column per method
    header = [*spec.names, "combination", *labels]
    rows = []
    for c in combos:
        rows.append(
            [*c.render(), c.name, *(fmt_mean_std(per_seed(lb, lambda r, c=c: r.table.value(c))) for lb in labels)]
        )
    avg_row = ["" for _ in spec.names] + [AVERAGE]
    avg_row += [fmt_mean_std(per_seed(lb, lambda r: r.table.average()[metric])) for lb in labels]
    rows.append(avg_row)
    _write_csv(out / "table.csv", header, rows)
    report.table_rows = (header, rows)

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

    # plots
    plot_per_combination({lb: report.tables(lb) for lb in labels}, out / "per_combination.png", reference=ref)
    mar_plots = []
    for lb in labels:
        for r in report.runs[lb]:
            miner = r.summary.get("miner")
            if miner and miner.get("memory_bank") and miner.get("weak_set"):
                history = {int(e): v for e, v in miner["memory_bank"].items()}
                name = f"mar_discrepancy_{lb}_seed{r.seed}.png"
                plot_mar_discrepancy(
                    history,
                    miner["weak_set"],
                    miner.get("strong_modalities", []),
                    out / name,
                    title=f"{lb}, seed {r.seed}: weak set = {describe_weak_set(miner['weak_set'], spec)}",
                )
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
    md += ["## Cost", "", markdown_table(["method", "parameters (deployed)", "train seconds"], cost_rows), ""]
    md += ["## Per combination (mean ± std over seeds)", "", markdown_table(header, rows), ""]
    md += ["## Plots", "", "![per combination](per_combination.png)", ""]
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


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _csv_to_md(path: Path) -> str:
    with path.open() as fh:
        records = list(csv.reader(fh))
    return markdown_table(records[0], records[1:])
