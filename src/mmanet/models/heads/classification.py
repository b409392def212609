"""Classification head (the predictor P of docs/design.md §2): fused feature → embedding → class logits."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from mmanet.models.encoders.base import FeatureInfo
from mmanet.models.heads.base import Head, HeadOutput, as_feature_info, register_head


@register_head("classification")
class ClassificationHead(Head):
    """Last fused level ``(B, C_f)`` or ``(B, C_f, H, W)`` → embedding ``(B, hidden)`` → logits ``(B, K)``.

    Feature maps are global-average pooled first. The trunk is Linear → GELU → Dropout (no
    BatchNorm: its batch statistics would depend on the modality-dropout mix). The
    embedding is the GELU's output, before the Dropout — the penultimate feature MAD can distil
    (``"embedding"``), free of dropout noise, so that the relations between samples it carries
    are the network's and not the dropout mask's; the classifier reads the dropped-out embedding.

    Split prefix (:meth:`Head.split_prefix`): pooling and the trunk's Linear are linear in the
    concatenation, so each modality's pooled feature times its block of the weight is one partial;
    the bias, GELU, Dropout and the classifier run on their sum.
    """

    levels = "last"
    feature_names = ("embedding",)
    task = "classification"

    def __init__(
        self, fused_info: list[FeatureInfo] | int, num_classes: int, hidden: int = 128, dropout: float = 0.1
    ) -> None:
        super().__init__()
        in_channels = as_feature_info(fused_info)[-1].channels
        self.trunk = nn.Sequential(nn.Linear(in_channels, hidden), nn.GELU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(hidden, num_classes)
        self.in_channels = in_channels
        self.hidden = hidden
        self.num_classes = num_classes

    def forward(self, fused: list[Tensor]) -> HeadOutput:
        x = fused[-1]
        if x.dim() > 2:
            x = x.flatten(2).mean(dim=2)
        return self._output(self.trunk[1](self.trunk[0](x)))

    def split_prefix(self, features: Tensor) -> Tensor:
        """``(B, M, C, *S)`` → ``(B, M, hidden)``: ``W_m · pool(f_m)``, without the bias."""
        if features.dim() > 3:
            features = features.flatten(3).mean(dim=3)
        first = cast(nn.Linear, self.trunk[0])
        weight = first.weight.view(first.out_features, features.shape[1], features.shape[2])
        # one batched matmul over the modalities: (M, B, C) @ (M, C, hidden) (einsum's parsing costs more here)
        return torch.bmm(features.transpose(0, 1), weight.permute(1, 2, 0)).transpose(0, 1)

    def forward_from_partials(self, summed: Tensor) -> HeadOutput:
        return self._output(self.trunk[1](summed + cast(nn.Linear, self.trunk[0]).bias))

    def _output(self, embedding: Tensor) -> HeadOutput:
        """Logits from the dropped-out embedding; the named ``embedding`` is taken before the Dropout."""
        return HeadOutput(self.classifier(self.trunk[2](embedding)), {"embedding": embedding})
