"""A user fusion, registered from your own file — no change to the mmanet package.

    mmanet train configs/mfeat/sf_md.yaml --import examples/plugins/gated_mean_fusion.py \
        --set model.fusion=gated_mean --out runs/gated
    mmanet evaluate runs/gated            # the run recorded the file: evaluate, export and predict import it
    mmanet export runs/gated
    mmanet list fusions                   # with --import …: the registered fusions, yours among them

or in a config: ``imports: [examples/plugins/gated_mean_fusion.py]`` (a relative path is read from the
config file's directory) and ``model.fusion: {type: gated_mean, temperature: 1.0}``.

The fusion: a learned scalar gate per modality and feature, softmax-normalised over the modalities that
are present, then the weighted mean — ``(B, M, C, *S) -> (B, C, *S)``. A missing modality gets weight 0
(never −inf arithmetic on its value), so it cannot influence the output; every parameter takes part in
every step. The contract is :class:`mmanet.models.fusion.Fusion`'s.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmanet.models.fusion import Fusion, FusionOutput, mask_like, register_fusion, zero_missing


@register_fusion("gated_mean")
class GatedMeanFusion(Fusion):
    """Softmax-gated mean of the present modalities' features (example plug-in)."""

    def __init__(
        self, num_modalities: int, channels: int, num_classes: int, spatial: bool = False, temperature: float = 1.0
    ) -> None:
        super().__init__(num_modalities, channels, num_classes, spatial)
        self.out_channels = channels
        self.temperature = temperature
        self.gate = nn.Linear(channels, 1)

    def forward(self, features: Tensor, mask: Tensor) -> FusionOutput:
        x = zero_missing(features, mask)  # (B, M, C, *S)
        tokens = x.movedim(2, -1)  # (B, M, *S, C)
        scores = self.gate(tokens).squeeze(-1) / self.temperature  # (B, M, *S)
        present = mask_like(mask, scores).bool()
        scores = torch.where(present, scores, torch.full((), -1e9, dtype=scores.dtype))
        weights = torch.softmax(scores, dim=1) * present.to(scores.dtype)  # exactly 0 where missing
        fused = (weights.unsqueeze(2) * x).sum(dim=1)  # (B, C, *S)
        return FusionOutput(fused)
