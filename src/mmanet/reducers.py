"""Metrics as a functional core: one reducer per metric, from a confusion matrix (docs/design.md §5).

Every metric is a registered :class:`MetricReducer`: a pure function of one ``(K, K)`` confusion
matrix (rows: true class, columns: predicted; void pixels never enter it) returning a value in
percent, and the direction in which it improves — stated here and nowhere else. A table reports a
headline metric with its companions (ACER with APCER and BPCER; mIoU with pixel accuracy).

* ``error``: 100 · (1 − trace / total).
* ``apcer`` / ``bpcer`` / ``acer`` (ISO/IEC 30107-3): APCER = attacks decided bona fide / attacks,
  BPCER = bona fide decided attack / bona fide, ACER = their mean; every class but the bona fide one
  is an attack. Decision: argmax.
* ``miou``: IoU_k = TP / (TP + FP + FN) averaged over the classes that occur in the target or the
  predictions (union > 0), as torchmetrics' macro Jaccard; ``pixel_acc`` = trace / total.

NaN where a ratio has no denominator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mmanet.registry import Registry

NAN = float("nan")


@dataclass(frozen=True)
class MetricReducer:
    """A metric: its reducer, the direction in which it improves, and the companions a table shows."""

    name: str
    higher_is_better: bool
    reduce: Callable[[Tensor, int | None], float]
    #: the metrics a table lists with this one as headline, in column order (the headline last)
    family: tuple[str, ...]
    #: True when the metric needs the bona fide class (anti-spoofing)
    needs_bona_fide: bool = False


METRICS: Registry[MetricReducer] = Registry("metric")


def _register(
    name: str, higher_is_better: bool, family: tuple[str, ...] | None = None, needs_bona_fide: bool = False
) -> Callable[[Callable[[Tensor, int | None], float]], Callable[[Tensor, int | None], float]]:
    def decorator(fn: Callable[[Tensor, int | None], float]) -> Callable[[Tensor, int | None], float]:
        METRICS.register(name)(MetricReducer(name, higher_is_better, fn, family or (name,), needs_bona_fide))
        return fn

    return decorator


@_register("error", higher_is_better=False)
def error_rate(confusion: Tensor, bona_fide_class: int | None = None) -> float:
    c = confusion.double()
    total = c.sum()
    return float(100.0 * (1 - c.trace() / total)) if total > 0 else NAN


def _bona_fide_split(confusion: Tensor, bona_fide_class: int | None) -> tuple[Tensor, Tensor]:
    if bona_fide_class is None:
        raise ValueError("APCER, BPCER and ACER need the bona fide class")
    c = confusion.double()
    return c[bona_fide_class], torch.cat([c[:bona_fide_class], c[bona_fide_class + 1 :]])


@_register("apcer", higher_is_better=False, needs_bona_fide=True)
def apcer(confusion: Tensor, bona_fide_class: int | None = None) -> float:
    """Attacks classified as bona fide / attacks (%)."""
    _, attacks = _bona_fide_split(confusion, bona_fide_class)
    n_attack = attacks.sum()
    return float(100.0 * attacks[:, bona_fide_class].sum() / n_attack) if n_attack > 0 else NAN


@_register("bpcer", higher_is_better=False, needs_bona_fide=True)
def bpcer(confusion: Tensor, bona_fide_class: int | None = None) -> float:
    """Bona fide classified as an attack / bona fide (%)."""
    bona, _ = _bona_fide_split(confusion, bona_fide_class)
    n_bona = bona.sum()
    return float(100.0 * (n_bona - bona[bona_fide_class]) / n_bona) if n_bona > 0 else NAN


@_register("acer", higher_is_better=False, family=("apcer", "bpcer", "acer"), needs_bona_fide=True)
def acer(confusion: Tensor, bona_fide_class: int | None = None) -> float:
    """(APCER + BPCER) / 2 (%)."""
    return (apcer(confusion, bona_fide_class) + bpcer(confusion, bona_fide_class)) / 2


@_register("pixel_acc", higher_is_better=True)
def pixel_accuracy(confusion: Tensor, bona_fide_class: int | None = None) -> float:
    c = confusion.double()
    total = c.sum()
    return float(100.0 * c.diagonal().sum() / total) if total > 0 else NAN


@_register("miou", higher_is_better=True, family=("pixel_acc", "miou"))
def mean_iou(confusion: Tensor, bona_fide_class: int | None = None) -> float:
    c = confusion.double()
    tp = c.diagonal()
    union = c.sum(0) + c.sum(1) - tp
    seen = union > 0
    return float(100.0 * (tp[seen] / union[seen]).mean()) if bool(seen.any()) else NAN


def metric(name: str) -> MetricReducer:
    """The registered metric ``name`` (an unknown name lists the valid ones)."""
    return METRICS.get(name)


def higher_is_better(name: str) -> bool:
    """The direction of a metric — defined by its registration only."""
    return metric(name).higher_is_better


def monitor_mode(name: str) -> str:
    """``'max'`` or ``'min'``: how a checkpoint callback compares values of ``name``."""
    return "max" if higher_is_better(name) else "min"


def metrics_from_confusion(confusion: Tensor, headline: str, bona_fide_class: int | None = None) -> dict[str, float]:
    """The values (%) of ``headline`` and its companions from one confusion matrix ``(K, K)``."""
    return {name: metric(name).reduce(confusion, bona_fide_class) for name in metric(headline).family}


def primary_metric(task: str, bona_fide_class: int | None) -> str:
    """The default headline metric: ``acer`` (anti-spoofing), ``miou`` (segmentation), else ``error``."""
    if task == "segmentation":
        return "miou"
    return "acer" if bona_fide_class is not None else "error"
