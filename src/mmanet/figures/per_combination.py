"""Each method's metric per combination: one dot per method with its ± std over seeds as an error bar.

The combinations are categories, so no line joins them; the methods sit side by side within each
combination (dodged), and the combinations are sorted by the reference method's mean so the hard ones
are on one side. With more than 16 combinations the axis labels become ●/○ columns (modalities top to
bottom, in the dataset's order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmanet.figures.style import method_styles, save_figure, use_agg
from mmanet.results import ResultTable, higher_is_better

__all__ = ["plot_per_combination"]


def plot_per_combination(
    tables: dict[str, list[ResultTable]],
    path: str | Path,
    reference: str | None = None,
    title: str = "",
    order: list[str] | None = None,
) -> list[Path]:
    """``tables``: per method its seeds' tables; ``order``: every method of the benchmark (colours)."""
    use_agg()
    import matplotlib.pyplot as plt

    first = next(iter(tables.values()))[0]
    combos = [c for c, _ in first.rows]
    metric = first.metric
    styles = method_styles(order or list(tables))

    def stats(label: str) -> tuple[np.ndarray, np.ndarray]:
        values = np.array([[t.value(c) for c in combos] for t in tables[label]])
        return values.mean(0), values.std(0)

    ref = reference if reference in tables else next(iter(tables))
    ranked = np.argsort(-stats(ref)[0]) if not higher_is_better(metric) else np.argsort(stats(ref)[0])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(combos) * max(1, len(tables)) ** 0.5), 4.2))
    x = np.arange(len(combos))
    width = min(0.8, 0.12 * len(tables))
    offsets = np.linspace(-width / 2, width / 2, len(tables)) if len(tables) > 1 else np.zeros(1)
    for offset, label in zip(offsets, tables, strict=True):
        mean, std = stats(label)
        ax.errorbar(
            x + offset, mean[ranked], yerr=std[ranked], linestyle="none", markersize=4, capsize=1.5,
            elinewidth=0.8, label=label, **styles.get(label, {}),
        )  # fmt: skip
    ax.set_xticks(x)
    many = len(combos) > 16
    ax.set_xticklabels(
        ["\n".join(combos[i].render()) if many else combos[i].name for i in ranked],
        rotation=0 if many else 90,
        fontsize=5 if many else 7,
        linespacing=0.8,
    )
    if many:
        ax.set_xlabel(f"combination (● present, ○ missing; top to bottom: {', '.join(first.spec.names)})")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title or f"{metric} per modality combination (mean ± std over seeds)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(tables) > 6 else 1)
    return save_figure(fig, path)
