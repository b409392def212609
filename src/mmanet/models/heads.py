"""Prediction heads (the "predictor" P of DESIGN §2): trunk → embedding → class logits."""

from __future__ import annotations

from torch import Tensor, nn


class ClassificationHead(nn.Module):
    """Fused feature ``(B, C_f)`` or ``(B, C_f, H, W)`` → (embedding ``(B, hidden)``, logits ``(B, K)``).

    Feature maps are global-average pooled first. The trunk is Linear → GELU → Dropout (no
    BatchNorm: its batch statistics would depend on the modality-dropout mix). The
    embedding is the trunk's output, the penultimate feature that MAD can distil.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(in_channels, hidden), nn.GELU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(hidden, num_classes)
        self.in_channels = in_channels
        self.hidden = hidden
        self.num_classes = num_classes

    def forward(self, fused: Tensor) -> tuple[Tensor, Tensor]:
        if fused.dim() > 2:
            fused = fused.flatten(2).mean(dim=2)
        embedding = self.trunk(fused)
        return embedding, self.classifier(embedding)
