"""Per-combination result tables (docs/design.md §5): one row per combination, written as CSV and Markdown.

Which way a metric improves is its registration's (:mod:`mmanet.reducers`); the ``worst``/``best``
rankings, the checkpoint monitor and the plots all ask :func:`higher_is_better`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmanet.modality import Combination, ModalitySpec, all_combinations
from mmanet.reducers import higher_is_better, monitor_mode

__all__ = ["AVERAGE", "SAMPLES", "ResultTable", "higher_is_better", "markdown_table", "monitor_mode"]

AVERAGE = "Average"
#: the column of a per-combination table that counts the samples a row scored (not a metric)
SAMPLES = "samples"
@dataclass
class ResultTable:
    """Per-combination metric values of ONE model (one row per combination).

    ``samples``: per combination name, how many samples that row scored (a sample whose data lacks every
    modality of a combination is skipped for it). ``complete_full``: the full combination's metrics on
    the samples whose data has every modality only (the full row also scores samples that lack some),
    with ``complete_samples`` their number.
    """

    spec: ModalitySpec
    rows: list[tuple[Combination, dict[str, float]]]
    metric: str = "error"
    samples: dict[str, int] = field(default_factory=dict)
    complete_full: dict[str, float] | None = None
    complete_samples: int | None = None

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
        lower = not higher_is_better(self.metric)
        ranked = sorted(((c, v[self.metric]) for c, v in self.rows), key=lambda cv: cv[1], reverse=lower)
        return ranked[:k]

    def best(self, k: int = 1) -> list[tuple[Combination, float]]:
        lower = not higher_is_better(self.metric)
        ranked = sorted(((c, v[self.metric]) for c, v in self.rows), key=lambda cv: cv[1], reverse=not lower)
        return ranked[:k]

    def header(self) -> list[str]:
        counted = [SAMPLES] if self.samples else []
        return [*self.spec.names, "combination", *counted, *self.metric_names]

    def records(self) -> list[list[str]]:
        out = []
        for combo, values in self.rows:
            marks = list(combo.render())
            counted = [str(self.samples.get(combo.name, ""))] if self.samples else []
            out.append([*marks, combo.name, *counted, *(_fmt(values.get(n, math.nan)) for n in self.metric_names)])
        avg = self.average()
        counted = [""] if self.samples else []
        out.append(["" for _ in self.spec.names] + [AVERAGE, *counted, *(_fmt(avg[n]) for n in self.metric_names)])
        return out

    def complete_note(self) -> str | None:
        """One sentence on the full combination over the complete samples (None when not evaluated)."""
        if self.complete_full is None or self.complete_samples is None:
            return None
        full = self.spec.full.name
        scored = self.samples.get(full)
        value = _fmt(self.complete_full.get(self.metric, math.nan))
        if scored is not None and scored == self.complete_samples:
            return f"Every sample the {full} row scored has every modality ({scored} samples)."
        of = f" of the {scored} it scores" if scored is not None else ""
        return (
            f"{full} on the {self.complete_samples} samples{of} whose data has every modality: "
            f"{self.metric} {value} (the {full} row also scores samples that lack a modality)."
        )

    def to_markdown(self) -> str:
        note = self.complete_note()
        return markdown_table(self.header(), self.records()) + (f"\n\n{note}" if note else "")

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
        """A table written by :meth:`write` (tables written before the ``samples`` column read too)."""
        with Path(path).open() as fh:
            reader = csv.DictReader(fh)
            rows, samples = [], {}
            for rec in reader:
                if rec["combination"] == AVERAGE:
                    continue
                combo = spec.combination(rec["combination"])
                skip = {*spec.names, "combination", SAMPLES}
                values = {k: float(v) for k, v in rec.items() if k not in skip}
                if rec.get(SAMPLES):
                    samples[combo.name] = int(rec[SAMPLES])
                rows.append((combo, values))
        return cls(spec, rows, metric, samples)

    def ordered_like(self, combos: Sequence[Combination] | None = None) -> ResultTable:
        combos = list(combos) if combos is not None else all_combinations(self.spec)
        by_name = {c.name: v for c, v in self.rows}
        rows = [(c, by_name[c.name]) for c in combos if c.name in by_name]
        return ResultTable(self.spec, rows, self.metric, dict(self.samples), self.complete_full, self.complete_samples)

    @classmethod
    def merged(cls, tables: Sequence[ResultTable]) -> ResultTable:
        """One table from the rows of several (the customized models, one combination each), in canonical order."""
        if not tables:
            raise ValueError("no table to merge")
        rows, samples = [], {}
        complete = next((t for t in tables if t.complete_full is not None), None)
        for table in tables:
            rows += table.rows
            samples.update(table.samples)
        merged = cls(tables[0].spec, rows, tables[0].metric, samples)
        if complete is not None:
            merged.complete_full, merged.complete_samples = complete.complete_full, complete.complete_samples
        return merged.ordered_like()


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
