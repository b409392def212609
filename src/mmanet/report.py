"""Result tables (Markdown/CSV, one row per combination with ●/○ columns, plus Average)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmanet.modality import Combination, ModalitySpec, all_combinations

AVERAGE = "Average"
LOWER_IS_BETTER = {"error": True, "acer": True, "apcer": True, "bpcer": True, "miou": False}


@dataclass
class ResultTable:
    """Per-combination metric values of ONE model (one row per combination)."""

    spec: ModalitySpec
    rows: list[tuple[Combination, dict[str, float]]]
    metric: str = "error"

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for _, values in self.rows:
            names += [k for k in values if k not in names]
        # headline metric last, as the paper's tables
        return [n for n in names if n != self.metric] + [self.metric]

    def average(self) -> dict[str, float]:
        return {name: _nanmean([values.get(name, math.nan) for _, values in self.rows]) for name in self.metric_names}

    def value(self, combination: Combination | str, metric: str | None = None) -> float:
        name = combination if isinstance(combination, str) else combination.name
        for combo, values in self.rows:
            if combo.name == name:
                return values[metric or self.metric]
        raise KeyError(f"combination {name!r} is not in the table")

    def worst(self, k: int = 1) -> list[tuple[Combination, float]]:
        lower = LOWER_IS_BETTER.get(self.metric, True)
        ranked = sorted(((c, v[self.metric]) for c, v in self.rows), key=lambda cv: cv[1], reverse=lower)
        return ranked[:k]

    def best(self, k: int = 1) -> list[tuple[Combination, float]]:
        lower = LOWER_IS_BETTER.get(self.metric, True)
        ranked = sorted(((c, v[self.metric]) for c, v in self.rows), key=lambda cv: cv[1], reverse=not lower)
        return ranked[:k]

    def header(self) -> list[str]:
        return [*self.spec.names, "combination", *self.metric_names]

    def records(self) -> list[list[str]]:
        out = []
        for combo, values in self.rows:
            marks = list(combo.render())
            out.append([*marks, combo.name, *(_fmt(values.get(n, math.nan)) for n in self.metric_names)])
        avg = self.average()
        out.append(["" for _ in self.spec.names] + [AVERAGE, *(_fmt(avg[n]) for n in self.metric_names)])
        return out

    def to_markdown(self) -> str:
        return markdown_table(self.header(), self.records())

    def write(self, directory: str | Path, stem: str = "per_combination") -> tuple[Path, Path]:
        """Write ``stem.csv`` and ``stem.md``; returns their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        csv_path, md_path = directory / f"{stem}.csv", directory / f"{stem}.md"
        with csv_path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.header())
            writer.writerows(self.records())
        md_path.write_text(self.to_markdown() + "\n")
        return csv_path, md_path

    @classmethod
    def read_csv(cls, path: str | Path, spec: ModalitySpec, metric: str) -> ResultTable:
        with Path(path).open() as fh:
            reader = csv.DictReader(fh)
            rows = []
            for rec in reader:
                if rec["combination"] == AVERAGE:
                    continue
                combo = spec.combination(rec["combination"])
                values = {k: float(v) for k, v in rec.items() if k not in spec.names and k != "combination"}
                rows.append((combo, values))
        return cls(spec, rows, metric)

    def ordered_like(self, combos: Sequence[Combination] | None = None) -> ResultTable:
        combos = list(combos) if combos is not None else all_combinations(self.spec)
        by_name = {c.name: v for c, v in self.rows}
        return ResultTable(self.spec, [(c, by_name[c.name]) for c in combos if c.name in by_name], self.metric)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


# ---------------------------------------------------------------------------------------- plots
def plot_per_combination(
    tables: dict[str, list[ResultTable]], path: str | Path, reference: str | None = None, title: str = ""
) -> Path:
    """Per-combination metric of each method (mean over seeds, ±std band), combinations sorted by
    the reference method's value so the hard combinations are on one side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    first = next(iter(tables.values()))[0]
    combos = [c for c, _ in first.rows]
    metric = first.metric

    def stats(label: str) -> tuple[np.ndarray, np.ndarray]:
        values = np.array([[t.value(c) for c in combos] for t in tables[label]])
        return values.mean(0), values.std(0)

    ref = reference if reference in tables else next(iter(tables))
    order = np.argsort(-stats(ref)[0]) if LOWER_IS_BETTER.get(metric, True) else np.argsort(stats(ref)[0])
    fig, ax = plt.subplots(figsize=(max(8, 0.22 * len(combos)), 4.8))
    x = np.arange(len(combos))
    for label in tables:
        mean, std = stats(label)
        ax.plot(x, mean[order], marker="o", markersize=3, linewidth=1.2, label=label)
        ax.fill_between(x, (mean - std)[order], (mean + std)[order], alpha=0.15)
    ax.set_xticks(x)
    ax.set_xticklabels(
        [combos[i].name if len(combos) <= 16 else combos[i].render() for i in order], rotation=90, fontsize=7
    )
    if len(combos) > 16:
        ax.set_xlabel(f"combination (● present, ○ missing; top to bottom: {', '.join(first.spec.names)})")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title or f"{metric} per modality combination (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_mar_discrepancy(
    history: dict[int, dict[str, float]],
    weak_set: Sequence[str],
    strong: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """MAR discrepancy KL(q_full ‖ q_c) of each leave-one-out candidate per warm-up epoch, with the
    memory-bank mean; the candidates that define the weak set (the strong modality removed) are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = sorted(history)
    candidates = list(history[epochs[0]])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for cand in candidates:
        values = [history[e][cand] for e in epochs]
        marked = any(s not in cand.split("+") for s in strong)
        ax.plot(
            epochs,
            values,
            marker="*" if marked else "o",
            markersize=9 if marked else 4,
            linewidth=2.2 if marked else 1.0,
            label=f"{cand}{'  ← strong removed' if marked else ''}",
        )
    ax.set_yscale("log")
    ax.set_xticks(epochs)
    ax.set_xlabel("warm-up epoch")
    ax.set_ylabel("KL(q_full ‖ q_c)")
    ax.set_title(title or f"MAR mining; weak set: {', '.join(weak_set)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
