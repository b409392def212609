"""The MAR mining plot of a benchmark (PNG and PDF); the other figures live in :mod:`mmanet.figures`, the
tables in :mod:`mmanet.results` (both re-exported here, their former home)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mmanet.figures.per_combination import plot_per_combination
from mmanet.results import AVERAGE, ResultTable, markdown_table

__all__ = ["AVERAGE", "ResultTable", "markdown_table", "plot_mar_discrepancy", "plot_per_combination"]


def plot_mar_discrepancy(
    history: dict[int, dict[str, float]],
    weak_set: Sequence[str],
    strong: Sequence[str],
    path: str | Path,
    title: str = "",
) -> list[Path]:
    """MAR mining (paper Eqs. 9–11) as it chose: left, ``D_c = KL(q_full ‖ q_c)`` of each leave-one-out
    candidate per warm-up epoch; right, the selection criterion — ``D̄_c``, the mean over the warm-up
    epochs — as bars, the largest (the strong modality removed) highlighted. A candidate is named by what
    it lacks ("without pix"); PNG (300 dpi) and PDF."""
    from mmanet.figures.style import method_styles, save_figure, use_agg

    use_agg()
    import matplotlib.pyplot as plt

    epochs = sorted(history)
    candidates = list(history[epochs[0]])
    everything = {m for cand in candidates for m in cand.split("+")}

    def lacking(cand: str) -> list[str]:
        return sorted(everything - set(cand.split("+")))

    names = {cand: "without " + "+".join(lacking(cand)) for cand in candidates}
    chosen = {cand for cand in candidates if any(s in lacking(cand) for s in strong)}
    styles = method_styles(candidates)
    means = {cand: sum(history[e][cand] for e in epochs) / len(epochs) for cand in candidates}
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(9.5, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for cand in candidates:
        picked = cand in chosen
        ax.plot(
            epochs,
            [history[e][cand] for e in epochs],
            linewidth=2.2 if picked else 1.0,
            markersize=7 if picked else 4,
            label=names[cand] + ("  (chosen)" if picked else ""),
            **styles[cand],
        )
    ax.set_yscale("log")
    ax.set_xticks(epochs)
    ax.set_xlabel("warm-up epoch")
    ax.set_ylabel("D_c = KL(q_full ‖ q_c)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    ranked = sorted(candidates, key=lambda c: means[c])
    bars.barh(
        [names[c] for c in ranked],
        [means[c] for c in ranked],
        color=[styles[c]["color"] for c in ranked],
        edgecolor=["black" if c in chosen else "none" for c in ranked],
        linewidth=1.5,
    )
    bars.set_xscale("log")
    bars.set_xlabel("selection criterion: mean D_c over the warm-up")
    bars.tick_params(axis="y", labelsize=7)
    bars.grid(axis="x", alpha=0.3)
    fig.suptitle(title or f"MAR mining; weak set: {', '.join(weak_set)}", fontsize=9)
    return save_figure(fig, Path(path))
