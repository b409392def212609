"""The head contract (docs/design.md §2): the fused pyramid → logits and named features.

A head is built as ``Head(fused_info, num_classes, **options)`` where ``fused_info`` lists the
:class:`~mmanet.models.encoders.FeatureInfo` of the fused levels it receives (fine → coarse).
It declares

* ``levels``: ``"last"`` (it needs only the coarsest level: classification) or ``"all"``
  (a decoder that takes the whole fused pyramid: segmentation);
* ``feature_names``: the named features it exposes besides the logits (for MAD, e.g.
  ``"embedding"``), and returns them in :class:`HeadOutput`.

Optionally, a head whose first operation on the fused feature is LINEAR in it (a Linear layer,
convolutions without bias, global pooling before them) implements the **split prefix**:
``split_prefix(features)`` maps the per-modality features of the last level ``(B, M, C, *S)`` to
per-modality partials ``(B, M, *P)`` such that, for the concatenation ``x = concat_m(f_m)``,
``prefix(x) = Σ_m partials[:, m] + constant``, and ``forward_from_partials(summed)`` runs the
rest of the head (constant included) on such a sum, in eval mode. With a fusion that declares
``masked_concat``, :meth:`~mmanet.models.MultimodalNet.predict_combinations` then computes the
partials once per batch and, per combination, only sums the present modalities' partials
(``Σ_m m_m · partials[:, m]``) before running the rest of the head. Only heads with
``levels = "last"`` (one fused level) can offer it; ``split_prefix`` returns None where this
head has no such prefix (the default).

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

    def split_prefix(self, features: Tensor) -> Tensor | None:
        """Per-modality partials ``(B, M, *P)`` of the head's linear prefix (module docstring), or None."""
        return None

    def forward_from_partials(self, summed: Tensor) -> HeadOutput:  # pragma: no cover - interface
        """The head after its linear prefix, from the summed partials ``(N, *P)`` (eval mode only)."""
        raise NotImplementedError(f"{type(self).__name__} has no split prefix")


HEADS: Registry[type[Head]] = Registry("head")
register_head = HEADS.register


def as_feature_info(value: list[FeatureInfo] | int) -> list[FeatureInfo]:
    """A channel count stands for one global level (convenience for vector heads)."""
    return [FeatureInfo(int(value), None)] if isinstance(value, int) else list(value)
