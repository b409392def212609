"""One look for every benchmark figure: a colour and marker per method, fixed by its position in the benchmark.

The 16 colours are matplotlib's ``tab10`` followed by six that none of them resembles; each method also has
its own marker (8 shapes), so two methods never share both. A method keeps its colour in every figure of a
benchmark because the colour follows its position in the benchmark file, not in the plotted subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["DPI", "MethodStyle", "method_styles", "save_figure"]

DPI = 300
COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#000000", "#e6ab02", "#1b9e77", "#fb9a99", "#00008b", "#a6761d",
)  # fmt: skip
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


class MethodStyle(dict):
    """``{"color": …, "marker": …}`` for matplotlib keyword arguments."""


def method_styles(labels: Sequence[str]) -> dict[str, MethodStyle]:
    """The style of each method, by its position in ``labels`` (the benchmark's method order)."""
    return {
        label: MethodStyle(color=COLOURS[i % len(COLOURS)], marker=MARKERS[i % len(MARKERS)])
        for i, label in enumerate(labels)
    }


def save_figure(fig, path: str | Path) -> list[Path]:
    """Save ``fig`` as ``path`` with the suffixes .png (300 dpi) and .pdf; closes it; returns both paths."""
    import matplotlib.pyplot as plt

    path = Path(path)
    written = []
    for suffix in (".png", ".pdf"):
        target = path.with_suffix(suffix)
        fig.savefig(target, dpi=DPI, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written


def use_agg() -> None:
    import matplotlib

    matplotlib.use("Agg")
