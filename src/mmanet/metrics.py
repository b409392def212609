"""Metrics (DESIGN §5) as torchmetrics ``Metric`` s, and the per-combination evaluator.

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
from mmanet.report import ResultTable


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


class PerCombinationEvaluator:
    """Evaluate a :class:`~mmanet.models.MultimodalNet` on every combination at once.

    Each batch is encoded ONCE; the encoded features are fused and predicted once per
    combination with mask = combination ∧ present. A sample whose data lacks every
    modality of a combination is skipped for that combination (counted in ``skipped``).
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

        def make() -> Metric:
            if task == "segmentation":
                return MeanIoU(num_classes, ignore_index=ignore_index)
            if bona_fide_class is not None:
                return PresentationAttackErrors(bona_fide_class)
            return ErrorRate()

        self.metrics = [make() for _ in self.combinations]
        self.skipped = [0 for _ in self.combinations]
        self._masks = torch.stack([c.mask() for c in self.combinations])

    def to(self, device: torch.device | str) -> PerCombinationEvaluator:
        self.metrics = [m.to(device) for m in self.metrics]
        self._masks = self._masks.to(device)
        return self

    def reset(self) -> None:
        for m in self.metrics:
            m.reset()
        self.skipped = [0 for _ in self.combinations]

    @torch.no_grad()
    def update(self, net, inputs: dict[str, Tensor], present: Tensor, target: Tensor) -> None:
        features = net.encode(inputs)
        for k, combo_mask in enumerate(self._masks):
            mask = present & combo_mask
            keep = mask.any(dim=1)
            if not bool(keep.all()):
                self.skipped[k] += int((~keep).sum())
                if not bool(keep.any()):
                    continue
                logits = net.fuse_predict(features[keep], mask[keep]).logits
                self.metrics[k].update(logits, target[keep])
            else:
                self.metrics[k].update(net.fuse_predict(features, mask).logits, target)

    def compute(self) -> ResultTable:
        rows = []
        for combo, metric in zip(self.combinations, self.metrics, strict=True):
            value = metric.compute()
            values = {k: float(v) for k, v in value.items()} if isinstance(value, dict) else {self.metric: float(value)}
            rows.append((combo, values))
        return ResultTable(self.spec, rows, metric=self.metric)

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
