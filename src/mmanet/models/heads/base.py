"""The head contract (DESIGN §2): the fused pyramid → logits and named features.

A head is built as ``Head(fused_info, num_classes, **options)`` where ``fused_info`` lists the
:class:`~mmanet.models.encoders.FeatureInfo` of the fused levels it receives (fine → coarse).
It declares

* ``levels``: ``"last"`` (it needs only the coarsest level: classification) or ``"all"``
  (a decoder that takes the whole fused pyramid: segmentation);
* ``feature_names``: the named features it exposes besides the logits (for MAD, e.g.
  ``"embedding"``), and returns them in :class:`HeadOutput`.

The MAR regularization head is a second instance of the same class with fresh weights
(:meth:`~mmanet.models.MultimodalNet.new_head`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from torch import Tensor, nn

from mmanet.models.encoders.base import FeatureInfo
from mmanet.registry import Registry


@dataclass
class HeadOutput:
    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    #: extra predictions supervised in training only (e.g. a decoder's side outputs at coarser scales)
    aux_logits: list[Tensor] = field(default_factory=list)


class Head(nn.Module):
    levels: ClassVar[Literal["last", "all"]] = "last"
    feature_names: ClassVar[tuple[str, ...]] = ()
    #: the task the head predicts for
    task: ClassVar[str] = "classification"
    num_classes: int

    def forward(self, fused: list[Tensor]) -> HeadOutput:  # pragma: no cover - interface
        raise NotImplementedError


HEADS: Registry[type[Head]] = Registry("head")
register_head = HEADS.register


def as_feature_info(value: list[FeatureInfo] | int) -> list[FeatureInfo]:
    """A channel count stands for one global level (convenience for vector heads)."""
    return [FeatureInfo(int(value), None)] if isinstance(value, int) else list(value)
