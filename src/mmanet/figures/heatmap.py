"""The paired Δ to the reference method: methods × combinations, over a ●/○ matrix of the modalities.

Each cell is the mean over seeds of ``metric(method, seed) − metric(reference, seed)`` on one combination
(the last column: the Average over combinations). The colours diverge around 0 with the same scale on
both sides and blue always means better than the reference (less error, more mIoU). A ``*`` marks a cell
whose paired t-test over the seeds gives p < 0.05 after the Benjamini–Hochberg adjustment over every cell
of the figure (:mod:`mmanet.analysis.significance`; unadjusted, one cell in twenty would be marked by chance). Under the
heatmap, one row per modality (its name as the row label) shows which modalities each column has:
● present, ○ missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmanet.figures.style import save_figure, use_agg
from mmanet.modality import Combination, ModalitySpec
from mmanet.results import AVERAGE, higher_is_better

__all__ = ["plot_delta_heatmap"]


def plot_delta_heatmap(
    deltas: dict[str, list[float]],
    marked: dict[str, list[bool]],
    combos: Sequence[Combination],
    spec: ModalitySpec,
    metric: str,
    reference: str,
    path: str | Path,
) -> list[Path]:
    """``deltas[label]``: the mean paired Δ per column (``combos`` then the Average); ``marked``: p < 0.05."""
    use_agg()
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    labels = list(deltas)
    values = np.array([deltas[lb] for lb in labels], dtype=float)
    columns = [c.name for c in combos] + [AVERAGE]
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    limit = limit if limit > 0 else 1.0
    better_low = not higher_is_better(metric)
    cmap = "RdBu_r" if better_low else "RdBu"
    n_cols, n_rows, n_mod = len(columns), len(labels), len(spec)
    cell = 0.32 if n_cols <= 40 else 0.18
    fig = plt.figure(figsize=(max(5.0, 2.2 + cell * n_cols), 1.2 + cell * (n_rows + n_mod)))
    grid = fig.add_gridspec(2, 2, height_ratios=[max(n_rows, 1), n_mod], width_ratios=[40, 1], hspace=0.05)
    ax = fig.add_subplot(grid[0, 0])
    image = ax.imshow(values, cmap=cmap, norm=TwoSlopeNorm(0.0, -limit, limit), aspect="auto")
    for i, label in enumerate(labels):
        for j in range(n_cols):
            if marked[label][j] and not math.isnan(values[i, j]):
                ax.text(j, i, "*", ha="center", va="center", fontsize=8, color="black")
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels([])
    ax.axvline(n_cols - 1.5, color="black", linewidth=0.8)
    ax.set_title(f"Δ {metric} vs {reference} (mean over seeds; * paired t-test, BH-adjusted p < 0.05)", fontsize=9)
    bar = fig.colorbar(image, cax=fig.add_subplot(grid[0, 1]))
    bar.set_label(f"Δ {metric} (%), blue = better", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    matrix = fig.add_subplot(grid[1, 0], sharex=ax)
    for j, combo in enumerate(combos):
        for i, m in enumerate(spec.names):
            on = combo.contains(m)
            matrix.plot(j, i, "o", markersize=4, color="black" if on else "white", markeredgecolor="black")
    matrix.text(n_cols - 1, (n_mod - 1) / 2, "avg", ha="center", va="center", fontsize=7)
    matrix.set_ylim(n_mod - 0.5, -0.5)
    matrix.set_yticks(range(n_mod))
    matrix.set_yticklabels(list(spec.names), fontsize=7)
    matrix.set_xticks(range(n_cols))
    matrix.set_xticklabels([])
    matrix.tick_params(length=0)
    for side in ("top", "right", "bottom", "left"):
        matrix.spines[side].set_visible(False)
    return save_figure(fig, path)
