"""Plots of benchmark results (PNG). The tables themselves live in :mod:`mmanet.results`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mmanet.results import AVERAGE, ResultTable, higher_is_better, markdown_table

__all__ = ["AVERAGE", "ResultTable", "markdown_table", "plot_mar_discrepancy", "plot_per_combination"]

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
    order = np.argsort(-stats(ref)[0]) if not higher_is_better(metric) else np.argsort(stats(ref)[0])
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
