"""What a model needs to know about its data (:class:`TaskInfo`), shared by training and deployment.

Lightning-free: :mod:`mmanet.deploy` rebuilds a network from a checkpoint with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmanet.metrics import PerCombinationEvaluator
from mmanet.modality import Combination, ModalitySpec
from mmanet.normalization import Normalization, normalizations_from_dict, normalizations_to_dict
from mmanet.reducers import monitor_mode, primary_metric


@dataclass(frozen=True)
class TaskInfo:
    """Modalities, classes, per-sample input shapes, label conventions and input normalisation of a dataset."""

    spec: ModalitySpec
    num_classes: int
    input_shapes: dict[str, tuple[int, ...]]
    task: str = "classification"
    bona_fide_class: int | None = None
    ignore_index: int | None = None
    #: class index → name (empty: the indices)
    class_names: tuple[str, ...] = ()
    #: per modality, the ``(x − mean) / std`` the data was standardised with (None: inputs used as they are)
    normalization: Mapping[str, Normalization] | None = None

    @property
    def names_of_classes(self) -> list[str]:
        """Class names, falling back to ``"0"``, ``"1"`` … where none were given."""
        if len(self.class_names) == self.num_classes:
            return list(self.class_names)
        return [str(k) for k in range(self.num_classes)]

    @property
    def metric(self) -> str:
        """The default headline metric: ``acer``, ``miou`` or ``error``."""
        return primary_metric(self.task, self.bona_fide_class)

    def headline(self, metric: str = "auto") -> str:
        """``evaluate.metric`` resolved for this data (``auto``: :attr:`metric`); an anti-spoofing metric
        on data without a bona fide class is a :class:`~mmanet.config.ConfigError`."""
        if metric == "auto":
            return self.metric
        from mmanet.config import ConfigError
        from mmanet.reducers import metric as registered

        if registered(metric).needs_bona_fide and self.bona_fide_class is None:
            raise ConfigError(f"evaluate.metric: {metric!r} needs a bona fide class, which this data has not")
        return metric

    def monitor(self, metric: str = "auto") -> tuple[str, str]:
        """(logged validation key, 'min'|'max') used for best-checkpoint selection."""
        name = self.headline(metric)
        return f"val/avg_{name}", monitor_mode(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "modalities": list(self.spec.names),
            "num_classes": self.num_classes,
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "task": self.task,
            "bona_fide_class": self.bona_fide_class,
            "ignore_index": self.ignore_index,
            "class_names": list(self.class_names),
            "normalization": normalizations_to_dict(self.normalization),
        }

    def evaluator(
        self, combinations: list[Combination] | None = None, metric: str = "auto"
    ) -> PerCombinationEvaluator:
        """A per-combination evaluator with the headline ``metric`` (all combinations by default)."""
        return PerCombinationEvaluator(
            self.spec,
            self.num_classes,
            combinations,
            task=self.task,
            bona_fide_class=self.bona_fide_class,
            ignore_index=self.ignore_index,
            metric=self.headline(metric),
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
            class_names=tuple(str(n) for n in d.get("class_names") or ()),
            normalization=normalizations_from_dict(d.get("normalization")),
        )
