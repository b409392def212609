"""Figures of the deployment analysis (:mod:`mmanet.analysis.deployment`).

* :func:`plot_availability_sweep` — each method's expected metric as availability drops from 1 to 0.5:
  the first panel lowers every modality together (at 0.5 for all, every combination is equally likely:
  the plain Average), each further panel one modality (the others at 1); up to 4 panels a row.
  A curve is a function of one continuous availability, so it is drawn as a line; the band is ± std over
  seeds.
* :func:`plot_shapley` — each modality's exact Shapley value per method (bars, ± std over seeds): the
  share of ``metric(full) − metric(∅)`` the modality accounts for (negative = it lowers the error).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmanet.figures.style import method_styles, save_figure, use_agg

__all__ = ["plot_availability_sweep", "plot_shapley"]


def plot_availability_sweep(
    levels: Sequence[float],
    curves: dict[str, dict[str, tuple[list[float], list[float]]]],
    panels: Sequence[str],
    metric: str,
    path: str | Path,
    order: Sequence[str] | None = None,
) -> list[Path]:
    """``curves[label][panel] = (means, stds)`` over ``levels``; ``panels``: ``"all"`` then the modalities."""
    use_agg()
    import matplotlib.pyplot as plt

    styles = method_styles(list(order or curves))
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.6 * cols + 0.6, 2.5 * rows + 0.5), sharey=True, squeeze=False, layout="constrained"
    )
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    x = np.asarray(levels)
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        for label, by_panel in curves.items():
            mean, std = (np.asarray(v) for v in by_panel[panel])
            style: dict[str, Any] = styles.get(label, {})
            ax.plot(x, mean, linewidth=1.2, markersize=3, label=label, **style)
            ax.fill_between(x, mean - std, mean + std, color=style.get("color"), alpha=0.12, linewidth=0)
        ax.set_xlim(1.0, min(levels))  # availability falls to the right
        ax.set_title("every modality" if panel == "all" else f"{panel} only", fontsize=8)
        ax.set_xlabel("availability p", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel(f"expected {metric} (%)", fontsize=7)
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"Expected {metric} as modalities become unavailable (mean ± std over seeds)", fontsize=9)
    return save_figure(fig, path)


def plot_shapley(
    values: dict[str, dict[str, tuple[float, float]]],
    modalities: Sequence[str],
    metric: str,
    path: str | Path,
    order: Sequence[str] | None = None,
) -> list[Path]:
    """``values[label][modality] = (mean, std)`` of the Shapley value."""
    use_agg()
    import matplotlib.pyplot as plt

    styles = method_styles(list(order or values))
    labels = list(values)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.5 * len(modalities) * max(1, len(labels)) ** 0.5 + 2), 3.2))
    x = np.arange(len(modalities))
    width = 0.8 / max(1, len(labels))
    for k, label in enumerate(labels):
        mean = [values[label][m][0] for m in modalities]
        std = [values[label][m][1] for m in modalities]
        ax.bar(
            x - 0.4 + width * (k + 0.5), mean, width, yerr=std, capsize=1.5, label=label,
            color=styles[label]["color"], error_kw={"elinewidth": 0.7},
        )  # fmt: skip
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(list(modalities), fontsize=8)
    ax.set_ylabel(f"Shapley value, {metric} (%)", fontsize=8)
    ax.set_title(f"Each modality's contribution to {metric} (sums to full − no modality)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=6, ncol=2 if len(labels) > 6 else 1)
    return save_figure(fig, path)
