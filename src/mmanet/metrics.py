"""The per-combination evaluator (docs/design.md §5): one confusion matrix per combination, the metrics from it.

Per-combination evaluation keeps ONE confusion matrix over (combination × true × predicted
class) (:class:`CombinationConfusion`, a torchmetrics state: sums, all-reduced across DDP
processes); every metric is a reducer of that matrix (:mod:`mmanet.reducers`: error,
APCER/BPCER/ACER, mIoU, each with its direction). The network's batched pass
(:meth:`~mmanet.models.MultimodalNet.predict_all`) produces every combination's logits at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from mmanet.calibration import CombinationCalibration, PixelCalibration
from mmanet.data.base import DataError
from mmanet.modality import Combination, ModalitySpec, all_combinations
from mmanet.reducers import metrics_from_confusion, primary_metric
from mmanet.results import ResultTable


class CombinationConfusion(Metric):
    """One confusion matrix per combination, as a single ``(n_c, K, K)`` count state (DDP: summed).

    :meth:`update` takes the batched logits of every combination ``(n_c, B, K, …)`` with their
    validity ``(n_c, B)`` (from :meth:`~mmanet.models.MultimodalNet.predict_all`) and the
    targets ``(B, …)``; invalid rows and ``ignore_index`` targets are not counted.
    """

    full_state_update = False
    # the states registered by add_state (typed here: torch.nn.Module's attribute lookup is untyped)
    confusion: Tensor
    skipped: Tensor
    scored: Tensor
    complete_confusion: Tensor
    complete_scored: Tensor

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

    def update(self, logits: Tensor, valid: Tensor, target: Tensor, complete: tuple[int, Tensor] | None = None) -> None:
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
            raise DataError(
                f"the data has labels outside 0..{k - 1} (the {k} classes) that are not its void label "
                f"{self.ignore_index}"
            )
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
        metric: str | None = None,
    ) -> None:
        self.spec = spec
        self.combinations = list(combinations) if combinations is not None else all_combinations(spec)
        if not self.combinations:
            raise ValueError("no combination to evaluate")
        self.task = task
        #: the table's headline metric (with its companions, :mod:`mmanet.reducers`); default by the task
        self.metric = metric or primary_metric(task, bona_fide_class)
        self.bona_fide_class = bona_fide_class
        self.confusion = CombinationConfusion(len(self.combinations), num_classes, ignore_index)
        #: ECE and mean confidence per combination (:mod:`mmanet.calibration`): over the samples, or the pixels
        self.calibration: CombinationCalibration | PixelCalibration | None = None
        if task == "classification":
            self.calibration = CombinationCalibration(len(self.combinations), num_classes)
        elif task == "segmentation":
            self.calibration = PixelCalibration(len(self.combinations), ignore_index)
        self._masks = torch.stack([c.mask() for c in self.combinations])
        #: index of the full combination among those evaluated (scored again on the complete samples)
        self._full = next((i for i, c in enumerate(self.combinations) if c == spec.full), None)

    @property
    def skipped(self) -> list[int]:
        return [int(s) for s in self.confusion.skipped.tolist()]

    def to(self, device: torch.device | str) -> PerCombinationEvaluator:
        self.confusion = self.confusion.to(device)
        if self.calibration is not None:
            self.calibration = self.calibration.to(device)
        self._masks = self._masks.to(device)
        return self

    def reset(self) -> None:
        self.confusion.reset()
        if self.calibration is not None:
            self.calibration.reset()

    @torch.no_grad()
    def update(self, net, inputs: dict[str, Tensor], present: Tensor, target: Tensor) -> None:
        present = present.to(self._masks.device)
        out = net.predict_all(inputs, present, self._masks)
        complete = None if self._full is None else (self._full, present.bool().all(dim=1))
        self.confusion.update(out.logits, out.valid, target, complete)
        if self.calibration is not None:
            self.calibration.update(out.logits, out.valid, target.to(out.logits.device))

    def compute(self) -> ResultTable:
        confusion = self.confusion.compute()
        calibration = self.calibration.compute() if self.calibration is not None else None
        rows = [
            (
                combo,
                {
                    **(calibration[k] if calibration is not None else {}),
                    **metrics_from_confusion(confusion[k], self.metric, self.bona_fide_class),
                },
            )
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
