"""What a model needs to know about its data (:class:`TaskInfo`), shared by training and deployment.

Lightning-free: :mod:`mmanet.deploy` rebuilds a network from a checkpoint with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmanet.metrics import PerCombinationEvaluator, primary_metric
from mmanet.modality import Combination, ModalitySpec
from mmanet.results import monitor_mode


@dataclass(frozen=True)
class TaskInfo:
    """Modalities, classes, per-sample input shapes and label conventions of a dataset."""

    spec: ModalitySpec
    num_classes: int
    input_shapes: dict[str, tuple[int, ...]]
    task: str = "classification"
    bona_fide_class: int | None = None
    ignore_index: int | None = None

    @property
    def metric(self) -> str:
        """The headline metric: ``acer``, ``miou`` or ``error``."""
        return primary_metric(self.task, self.bona_fide_class)

    def monitor(self) -> tuple[str, str]:
        """(logged validation key, 'min'|'max') used for best-checkpoint selection."""
        return f"val/avg_{self.metric}", monitor_mode(self.metric)

    def to_dict(self) -> dict[str, Any]:
        return {
            "modalities": list(self.spec.names),
            "num_classes": self.num_classes,
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "task": self.task,
            "bona_fide_class": self.bona_fide_class,
            "ignore_index": self.ignore_index,
        }

    def evaluator(self, combinations: list[Combination] | None = None) -> PerCombinationEvaluator:
        """A per-combination evaluator with this task's metric (all combinations by default)."""
        return PerCombinationEvaluator(
            self.spec,
            self.num_classes,
            combinations,
            task=self.task,
            bona_fide_class=self.bona_fide_class,
            ignore_index=self.ignore_index,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskInfo:
        return cls(
            spec=ModalitySpec(tuple(d["modalities"])),
            num_classes=int(d["num_classes"]),
            input_shapes={k: tuple(v) for k, v in d["input_shapes"].items()},
            task=d.get("task", "classification"),
            bona_fide_class=d.get("bona_fide_class"),
            ignore_index=d.get("ignore_index"),
        )
