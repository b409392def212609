"""Which model to deploy (issue 23): ``deployment.json`` and ``deployment.md`` from per-combination tables.

For every method and seed, from that seed's per-combination table (the benchmark's reported split):

* the **expected metric** under the given availability (:mod:`.availability`), its mean ± std over seeds
  (population std, as every benchmark table), the paired Δ to the reference with its paired t-test
  (:mod:`.significance`), and the plain Average over combinations for comparison;
* the **Shapley value** of every modality (:mod:`.shapley`; ``v(∅)`` from :mod:`.baseline`);
* the **availability sweep**: the expected metric with every modality (or one) at availability 1 … 0.5.

The recommendation is the method with the best mean expected metric; when another method is not
distinguishable from it over the seeds (paired p ≥ 0.05, or a single seed) the report says so and lists
every method within that noise (with 3 seeds a paired t-test separates only consistent differences: a
method ranked third may be within the noise while the second is not). The recommendation is a choice,
so it is made on the validation tables when the runs have them (``SeedTable.val``; the benchmark's do);
the expected metric on the reported split is shown beside it, never used to choose.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmanet.analysis.availability import (
    SWEEP_LEVELS,
    AvailabilityError,
    combination_probabilities,
    expected_value,
    sweep,
)
from mmanet.analysis.shapley import ShapleyError, shapley_values
from mmanet.analysis.significance import ALPHA, paired_p_value
from mmanet.modality import ModalitySpec
from mmanet.results import AVERAGE, ResultTable, higher_is_better, markdown_table

__all__ = [
    "SeedTable",
    "analyse",
    "deployment_markdown",
    "is_deployment_json",
    "is_deployment_markdown",
    "recommendation_sentence",
]

TITLE = "# Which model to deploy"


@dataclass(frozen=True)
class SeedTable:
    """One seed's per-combination table on the reported split, and on validation (what a choice may use)."""

    seed: int
    table: ResultTable
    val: ResultTable | None = None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.pstdev(finite) if len(finite) > 1 else 0.0


def _paired(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list[float], list[float]]:
    common = sorted(set(a) & set(b))
    return [a[s] for s in common], [b[s] for s in common]


def _values(table: ResultTable) -> dict[str, float]:
    return {c.name: v[table.metric] for c, v in table.rows}


def analyse(
    runs: Mapping[str, Sequence[SeedTable]],
    spec: ModalitySpec,
    reference: str,
    availability: Mapping[str, float] | None,
    empty: float | None,
    levels: Sequence[float] = SWEEP_LEVELS,
) -> dict[str, Any]:
    """The content of ``deployment.json`` (see the module docstring); ``empty``: v(∅) of the headline metric
    (None: no Shapley values)."""
    labels = list(runs)
    metric = runs[labels[0]][0].table.metric
    lower = not higher_is_better(metric)
    per_seed = {lb: {r.seed: _values(r.table) for r in runs[lb]} for lb in labels}
    ref = reference if reference in runs else labels[0]
    methods: dict[str, dict[str, Any]] = {}
    shapley_note = None
    for lb in labels:
        entry: dict[str, Any] = {"seeds": sorted(per_seed[lb])}
        averages = {s: statistics.fmean(v.values()) for s, v in per_seed[lb].items()}
        entry["average"] = dict(zip(("mean", "std"), _mean_std(list(averages.values())), strict=True))
        if availability is not None:
            entry["expected"] = _expected(per_seed[lb], availability, spec, lb)
            if all(r.val is not None for r in runs[lb]):
                by_seed = {r.seed: _values(r.val) for r in runs[lb] if r.val is not None}
                entry["expected_val"] = _expected(by_seed, availability, spec, lb)
        entry["sweep"] = _sweep(per_seed[lb], spec, levels)
        if empty is not None:
            try:
                phis = [shapley_values(v, empty, spec) for v in per_seed[lb].values()]
                entry["shapley"] = {
                    m: dict(zip(("mean", "std"), _mean_std([p[m] for p in phis]), strict=True)) for m in spec.names
                }
            except ShapleyError as err:
                shapley_note = str(err)
        methods[lb] = entry
    if availability is not None:
        ref_expected = _expected_by_seed(methods[ref])
        for lb in labels:
            if lb == ref:
                continue
            a, b = _paired(_expected_by_seed(methods[lb]), ref_expected)
            diffs = [x - y for x, y in zip(a, b, strict=True)]
            mean, std = _mean_std(diffs)
            methods[lb]["delta_vs_reference"] = {
                "mean": mean,
                "std": std,
                "p": paired_p_value(a, b),
                "seeds": len(diffs),
            }
    out: dict[str, Any] = {
        "metric": metric,
        "higher_is_better": not lower,
        "reference": ref,
        "availability": dict(availability) if availability is not None else None,
        "combination_probabilities": combination_probabilities(availability, spec)
        if availability is not None
        else None,
        "empty_combination": empty,
        "sweep_levels": list(levels),
        "methods": methods,
    }
    if shapley_note:
        out["shapley_note"] = shapley_note
    if availability is not None:
        on_val = all("expected_val" in e for e in methods.values())
        out["recommendation"] = _recommend(methods, lower, "expected_val" if on_val else "expected")
    return out


def _expected(
    values_by_seed: Mapping[int, Mapping[str, float]], availability: Mapping[str, float], spec: ModalitySpec, label: str
) -> dict[str, Any]:
    expected = {s: expected_value(v, availability, spec, f"the table of {label!r}") for s, v in values_by_seed.items()}
    mean, std = _mean_std(list(expected.values()))
    return {"mean": mean, "std": std, "per_seed": [expected[s] for s in sorted(expected)]}


def _expected_by_seed(entry: Mapping[str, Any], key: str = "expected") -> dict[int, float]:
    return dict(zip(entry["seeds"], entry[key]["per_seed"], strict=True))


def _sweep(
    values_by_seed: Mapping[int, Mapping[str, float]], spec: ModalitySpec, levels: Sequence[float]
) -> dict[str, Any]:
    try:
        curves = [sweep(v, spec, levels) for v in values_by_seed.values()]
    except AvailabilityError as err:  # a table without every combination: no sweep
        return {"note": str(err)}
    out = {}
    for panel in curves[0]:
        stats = [_mean_std([c[panel][i] for c in curves]) for i in range(len(levels))]
        out[panel] = {"mean": [m for m, _ in stats], "std": [s for _, s in stats]}
    return out


def _recommend(methods: Mapping[str, Mapping[str, Any]], lower: bool, key: str) -> dict[str, Any]:
    """The best method by ``methods[·][key]`` (``expected_val``: chosen on validation), and every method a
    paired t-test over the seeds does not separate from it on that same split."""
    ranked = sorted(methods, key=lambda lb: methods[lb][key]["mean"], reverse=not lower)
    best = ranked[0]
    best_seeds = _expected_by_seed(methods[best], key)
    tied = []
    for lb in ranked[1:]:
        a, b = _paired(_expected_by_seed(methods[lb], key), best_seeds)
        p = paired_p_value(a, b)
        if math.isnan(p) or p >= ALPHA:
            delta = statistics.fmean(x - y for x, y in zip(a, b, strict=True)) if a else math.nan
            tied.append({"method": lb, "p": p, "delta": delta})
    return {
        "best": best,
        "chosen_on": "val" if key == "expected_val" else "reported split",
        "ranking": ranked,
        "within_seed_noise": bool(tied),  # some method is not separated from the best over the seeds
        "not_distinguishable_from_best": tied,
    }


def _fmt(mean: float, std: float) -> str:
    return "nan" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def deployment_markdown(result: Mapping[str, Any], spec: ModalitySpec) -> str:
    """``deployment.md``: the availability, the expected metric per method, the recommendation, the Shapley table."""
    metric, ref = result["metric"], result["reference"]
    methods = result["methods"]
    lines = [TITLE, ""]
    availability = result["availability"]
    if availability is not None:
        lines.append(
            "Availability (each modality arrives independently with this probability; a sample with none is not "
            "served): " + ", ".join(f"{m} = {p:g}" for m, p in availability.items()) + "."
        )
        probs = result["combination_probabilities"]
        top = sorted(probs.items(), key=lambda kv: -kv[1])[:5]
        lines += ["", "Most frequent combinations: " + ", ".join(f"{c} ({100 * p:.1f} %)" for c, p in top) + ".", ""]
        on_val = result["recommendation"]["chosen_on"] == "val"
        header = ["method", *([f"expected {metric} (val)"] if on_val else []), f"expected {metric}", f"Δ vs {ref}"]
        header += ["paired p", f"{AVERAGE} (uniform)"]
        rows = []
        for lb in result["recommendation"]["ranking"]:
            e, d = methods[lb]["expected"], methods[lb].get("delta_vs_reference")
            chosen = [_fmt(methods[lb]["expected_val"]["mean"], methods[lb]["expected_val"]["std"])] if on_val else []
            rows.append(
                [
                    lb,
                    *chosen,
                    _fmt(e["mean"], e["std"]),
                    "–" if d is None else _fmt(d["mean"], d["std"]),
                    "–" if d is None or math.isnan(d["p"]) else f"{d['p']:.3f}",
                    _fmt(methods[lb]["average"]["mean"], methods[lb]["average"]["std"]),
                ]
            )
        lines += [markdown_table(header, rows), "", recommendation_sentence(result), ""]
    else:
        lines += ["No availability given (--availability or the benchmark key availability:): no expected metric.", ""]
    if any("shapley" in e for e in methods.values()):
        lines += [
            f"## Each modality's contribution (exact Shapley values, {metric} %)",
            "",
            f"v(∅) = {result['empty_combination']:.2f} (always the training majority class); the values of a "
            f"method add up to its {metric}(full) − v(∅).",
            "",
        ]
        rows = [
            [lb, *(_fmt(**methods[lb]["shapley"][m]) for m in spec.names)] for lb in methods if "shapley" in methods[lb]
        ]
        lines += [markdown_table(["method", *spec.names], rows), ""]
    if result.get("shapley_note"):
        lines += [f"No Shapley values: {result['shapley_note']}.", ""]
    return "\n".join(lines)


def recommendation_sentence(result: Mapping[str, Any]) -> str:
    rec, metric = result["recommendation"], result["metric"]
    best = rec["best"]
    e = result["methods"][best]["expected"]
    n = len(e["per_seed"])
    if rec.get("chosen_on") == "val":
        v = result["methods"][best]["expected_val"]
        sentence = (
            f"**Deploy {best}**: the best expected {metric} on validation ({_fmt(v['mean'], v['std'])}, {n} seed(s)); "
            f"on the reported split {_fmt(e['mean'], e['std'])}."
        )
    else:
        sentence = f"**Deploy {best}**: expected {metric} {_fmt(e['mean'], e['std'])} over {n} seed(s)."
    if rec["within_seed_noise"]:
        tied = ", ".join(
            f"{t['method']} (Δ {t['delta']:+.2f}"
            + (f", p = {t['p']:.2f})" if not math.isnan(t["p"]) else ", one seed)")
            for t in rec["not_distinguishable_from_best"]
        )
        sentence += (
            f" Within seed noise: a paired t-test over the seeds (on the split of the choice) does not separate it "
            f"from {tied}; "
            "choose among these on cost, or run more seeds."
        )
    return sentence


def is_deployment_json(path: Path) -> bool:
    """``path`` is a deployment.json written by mmanet (what a rerun may replace)."""
    try:
        if path.stat().st_size > 1 << 24:
            return False
        found = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(found, dict) and {"metric", "methods", "sweep_levels"} <= found.keys()


def is_deployment_markdown(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            first = fh.readline(256)
    except OSError:
        return False
    return first.decode("utf-8", "replace").strip() == TITLE
