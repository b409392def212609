"""Metrics (DESIGN §5) as torchmetrics ``Metric`` s, and the per-combination evaluator.

Per-combination evaluation keeps ONE confusion matrix over (combination × true × predicted
class) (:class:`CombinationConfusion`); error, APCER/BPCER/ACER and mIoU are computed from
it (:func:`metrics_from_confusion`). The network's batched pass
(:meth:`~mmanet.models.MultimodalNet.predict_all`) produces every combination's logits at once.

* :class:`ErrorRate` — 100 − accuracy (%), multi-class.
* :class:`PresentationAttackErrors` — APCER, BPCER, ACER (%) with ISO/IEC 30107-3 names:
  APCER = attacks classified as bona fide / attacks; BPCER = bona fide classified as attack /
  bona fide; ACER = (APCER + BPCER) / 2. Decision: argmax; ``bona_fide_class`` configurable.
* mIoU — torchmetrics ``MulticlassJaccardIndex(average="macro", ignore_index=…)`` (%).

States are sums, so torchmetrics reduces them across DDP processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassJaccardIndex

from mmanet.modality import Combination, ModalitySpec, all_combinations
from mmanet.results import ResultTable


def _predictions(preds: Tensor) -> Tensor:
    """Class indices from logits ``(B, K, …)`` or already-decided labels ``(B, …)``."""
    return preds.argmax(dim=1) if preds.is_floating_point() else preds


class ErrorRate(Metric):
    """Classification error in percent: 100 · (wrong / total)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("wrong", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        labels = _predictions(preds)
        if labels.shape != target.shape:
            raise ValueError(f"predictions {tuple(labels.shape)} and targets {tuple(target.shape)} differ in shape")
        self.wrong += (labels != target).sum()
        self.total += target.numel()

    def compute(self) -> Tensor:
        if self.total == 0:
            return torch.tensor(float("nan"))
        return 100.0 * self.wrong.double() / self.total.double()


class PresentationAttackErrors(Metric):
    """APCER, BPCER and ACER in percent (ISO/IEC 30107-3), argmax decision.

    A sample is decided bona fide when the argmax is ``bona_fide_class``; every other class
    is an attack (multi-class attack labels are supported).
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, bona_fide_class: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bona_fide_class = bona_fide_class
        for name in ("attacks", "attacks_accepted", "bona_fide", "bona_fide_rejected"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        decided_bona_fide = _predictions(preds) == self.bona_fide_class
        is_bona_fide = target == self.bona_fide_class
        self.attacks += (~is_bona_fide).sum()
        self.attacks_accepted += (~is_bona_fide & decided_bona_fide).sum()
        self.bona_fide += is_bona_fide.sum()
        self.bona_fide_rejected += (is_bona_fide & ~decided_bona_fide).sum()

    def compute(self) -> dict[str, Tensor]:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        apcer = 100.0 * self.attacks_accepted.double() / self.attacks.double() if self.attacks > 0 else nan
        bpcer = 100.0 * self.bona_fide_rejected.double() / self.bona_fide.double() if self.bona_fide > 0 else nan
        return {"apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2}


class MeanIoU(Metric):
    """mIoU in percent from a dataset-level confusion matrix, macro over classes, void ignored."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.jaccard = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index)

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.jaccard.update(_predictions(preds), target)

    def compute(self) -> Tensor:
        return 100.0 * self.jaccard.compute()

    def reset(self) -> None:
        super().reset()
        self.jaccard.reset()


def primary_metric(task: str, bona_fide_class: int | None) -> str:
    """The table's headline metric: ``acer`` (anti-spoofing), ``miou`` (segmentation), ``error``."""
    if task == "segmentation":
        return "miou"
    return "acer" if bona_fide_class is not None else "error"


# ------------------------------------------------------------------------------ from a confusion matrix


def metrics_from_confusion(confusion: Tensor, metric: str, bona_fide_class: int | None = None) -> dict[str, float]:
    """The metric values (%) of one confusion matrix ``(K, K)`` (rows: true class, columns: predicted).

    * ``error``: 100 · (1 − trace / total).
    * ``acer``: APCER = attacks decided bona fide / attacks, BPCER = bona fide decided attack /
      bona fide, ACER = their mean (ISO/IEC 30107-3); every class but ``bona_fide_class`` is an attack.
    * ``miou``: IoU_k = TP / (TP + FP + FN) averaged over the classes that occur in the target or
      the predictions (union > 0), as torchmetrics' macro Jaccard; ``pixel_acc`` = trace / total.
      Void pixels never enter the matrix.
    NaN where a ratio has no denominator.
    """
    c = confusion.double()
    total = c.sum()
    nan = float("nan")
    if metric == "error":
        return {"error": float(100.0 * (1 - c.trace() / total)) if total > 0 else nan}
    if metric == "acer":
        if bona_fide_class is None:
            raise ValueError("ACER needs the bona fide class")
        bona = c[bona_fide_class]
        attacks = torch.cat([c[:bona_fide_class], c[bona_fide_class + 1 :]])
        n_bona, n_attack = bona.sum(), attacks.sum()
        apcer = float(100.0 * attacks[:, bona_fide_class].sum() / n_attack) if n_attack > 0 else nan
        bpcer = float(100.0 * (n_bona - bona[bona_fide_class]) / n_bona) if n_bona > 0 else nan
        return {"apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2}
    if metric == "miou":
        tp = c.diagonal()
        union = c.sum(0) + c.sum(1) - tp
        seen = union > 0
        miou = float(100.0 * (tp[seen] / union[seen]).mean()) if bool(seen.any()) else nan
        return {"pixel_acc": float(100.0 * tp.sum() / total) if total > 0 else nan, "miou": miou}
    raise ValueError(f"unknown metric {metric!r}; valid: ['acer', 'error', 'miou']")


class CombinationConfusion(Metric):
    """One confusion matrix per combination, as a single ``(n_c, K, K)`` count state (DDP: summed).

    :meth:`update` takes the batched logits of every combination ``(n_c, B, K, …)`` with their
    validity ``(n_c, B)`` (from :meth:`~mmanet.models.MultimodalNet.predict_all`) and the
    targets ``(B, …)``; invalid rows and ``ignore_index`` targets are not counted.
    """

    full_state_update = False

    def __init__(self, num_combinations: int, num_classes: int, ignore_index: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_combinations = num_combinations
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        shape = (num_combinations, num_classes, num_classes)
        self.add_state("confusion", default=torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped", default=torch.zeros(num_combinations, dtype=torch.long), dist_reduce_fx="sum")
        #: per combination, the samples scored (valid rows)
        self.add_state("scored", default=torch.zeros(num_combinations, dtype=torch.long), dist_reduce_fx="sum")
        #: the confusion of the rows given as ``complete`` (:meth:`update`): a full combination on the samples
        #: whose data has every modality, and how many there were
        square = (num_classes, num_classes)
        self.add_state("complete_confusion", default=torch.zeros(square, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("complete_scored", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self, logits: Tensor, valid: Tensor, target: Tensor, complete: tuple[int, Tensor] | None = None
    ) -> None:
        """``complete = (c, rows)``: also count combination c on the rows ``rows`` (``BoolTensor[B]``) alone."""
        n_c, k = self.num_combinations, self.num_classes
        if logits.shape[:2] != valid.shape or logits.shape[0] != n_c:
            raise ValueError(
                f"logits {tuple(logits.shape)} and validity {tuple(valid.shape)} do not match {n_c} combinations"
            )
        preds = logits.argmax(dim=2)  # (n_c, B, …)
        target = target.to(preds.device).long()
        if preds.shape[1:] != target.shape:
            raise ValueError(f"predictions {tuple(preds.shape[1:])} and targets {tuple(target.shape)} differ in shape")
        counted = valid.reshape(valid.shape + (1,) * (preds.dim() - 2)).expand_as(preds)
        labelled = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            labelled = target != self.ignore_index
        counted = counted & labelled.unsqueeze(0)
        if bool(((target < 0) | (target >= k))[labelled].any()):
            raise ValueError(f"targets outside 0..{k - 1} (and not the void label {self.ignore_index})")
        combo = torch.arange(n_c, device=preds.device).reshape((n_c,) + (1,) * (preds.dim() - 1))
        index = (combo * k + target.unsqueeze(0)) * k + preds
        self.confusion += torch.bincount(index[counted], minlength=n_c * k * k).reshape(n_c, k, k)
        self.skipped += (~valid).sum(dim=1)
        self.scored += valid.sum(dim=1)
        if complete is not None:
            c, rows = complete
            rows = rows.to(preds.device) & valid[c]
            chosen = counted[c] & rows.reshape(rows.shape + (1,) * (preds.dim() - 2))
            pair = target * k + preds[c]
            self.complete_confusion += torch.bincount(pair[chosen], minlength=k * k).reshape(k, k)
            self.complete_scored += rows.sum()

    def compute(self) -> Tensor:
        return self.confusion


class PerCombinationEvaluator:
    """Evaluate a :class:`~mmanet.models.MultimodalNet` on every combination at once.

    Each batch goes through the network's batched pass once (encode once, every combination
    fused and predicted in one call) with mask = combination ∧ present; one confusion matrix
    per combination is updated from the result. A sample whose data lacks every modality of
    a combination is skipped for that combination (counted in ``skipped``).
    """

    def __init__(
        self,
        spec: ModalitySpec,
        num_classes: int,
        combinations: Sequence[Combination] | None = None,
        task: str = "classification",
        bona_fide_class: int | None = None,
        ignore_index: int | None = None,
    ) -> None:
        self.spec = spec
        self.combinations = list(combinations) if combinations is not None else all_combinations(spec)
        if not self.combinations:
            raise ValueError("no combination to evaluate")
        self.task = task
        self.metric = primary_metric(task, bona_fide_class)
        self.bona_fide_class = bona_fide_class
        self.confusion = CombinationConfusion(len(self.combinations), num_classes, ignore_index)
        self._masks = torch.stack([c.mask() for c in self.combinations])
        #: index of the full combination among those evaluated (scored again on the complete samples)
        self._full = next((i for i, c in enumerate(self.combinations) if c == spec.full), None)

    @property
    def skipped(self) -> list[int]:
        return [int(s) for s in self.confusion.skipped.tolist()]

    def to(self, device: torch.device | str) -> PerCombinationEvaluator:
        self.confusion = self.confusion.to(device)
        self._masks = self._masks.to(device)
        return self

    def reset(self) -> None:
        self.confusion.reset()

    @torch.no_grad()
    def update(self, net, inputs: dict[str, Tensor], present: Tensor, target: Tensor) -> None:
        present = present.to(self._masks.device)
        out = net.predict_all(inputs, present, self._masks)
        complete = None if self._full is None else (self._full, present.bool().all(dim=1))
        self.confusion.update(out.logits, out.valid, target, complete)

    def compute(self) -> ResultTable:
        confusion = self.confusion.compute()
        rows = [
            (combo, metrics_from_confusion(confusion[k], self.metric, self.bona_fide_class))
            for k, combo in enumerate(self.combinations)
        ]
        samples = {c.name: int(n) for c, n in zip(self.combinations, self.confusion.scored.tolist(), strict=True)}
        table = ResultTable(self.spec, rows, metric=self.metric, samples=samples)
        if self._full is not None:
            table.complete_full = metrics_from_confusion(
                self.confusion.complete_confusion, self.metric, self.bona_fide_class
            )
            table.complete_samples = int(self.confusion.complete_scored)
        return table

    @torch.no_grad()
    def evaluate(self, net, loader, device: torch.device | str | None = None) -> ResultTable:
        """Run over a loader of ``(inputs, present, target)`` batches; restores the train mode."""
        was_training = net.training
        net.eval()
        device = device or next(net.parameters()).device
        self.to(device)
        self.reset()
        try:
            for inputs, present, target in loader:
                inputs = {k: v.to(device) for k, v in inputs.items()}
                self.update(net, inputs, present.to(device), target.to(device))
        finally:
            net.train(was_training)
        return self.compute()
