"""``MultimodalNet``: encode once, fuse per combination, predict (DESIGN §2).

``encode`` depends only on the inputs; ``fuse`` and ``predict`` depend on the present
mask. Anything that needs many combinations (per-combination evaluation, MAR mining)
encodes a batch once and calls :meth:`MultimodalNet.fuse_predict` once per combination.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmanet.modality import ModalityError, ModalitySpec, check_present
from mmanet.models.encoders import build_encoder, default_encoder_for
from mmanet.models.fusion import Fusion, build_fusion
from mmanet.models.heads import ClassificationHead


@dataclass
class NetOutput:
    """What one forward pass produces, for the losses that need more than logits."""

    features: Tensor  # per-modality features (B, M, C, *S)
    fused: Tensor  # fusion output (B, C_f, *S)
    embedding: Tensor  # predictor trunk output (B, hidden)
    logits: Tensor  # (B, K)


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def lengths_key(modality: str) -> str:
    """Key under which a batch carries the valid lengths of a sequence modality."""
    return f"lengths_{modality}"


class MultimodalNet(nn.Module):
    """Per-modality encoders + mask-aware fusion + predictor."""

    def __init__(self, spec: ModalitySpec, encoders: nn.ModuleDict, fusion: Fusion, head: nn.Module) -> None:
        super().__init__()
        missing = [m for m in spec.names if m not in encoders]
        if missing:
            raise ModalityError(f"no encoder for modalities {missing}")
        self.spec = spec
        self.encoders = encoders
        self.fusion = fusion
        self.head = head

    @property
    def num_modalities(self) -> int:
        return len(self.spec)

    def encode(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Encode every modality (mask-independent): ``(B, M, C, *S)``."""
        unknown = [k for k in inputs if k not in self.spec.names and not k.startswith("lengths_")]
        if unknown:
            raise ModalityError(
                f"unknown modality {unknown[0]!r} in the inputs; the network has {list(self.spec.names)}"
            )
        feats = []
        for name in self.spec.names:
            if name not in inputs:
                raise ModalityError(
                    f"input for modality {name!r} is missing; pass zeros and mark it absent in the present mask"
                )
            feats.append(self.encoders[name](inputs[name], inputs.get(lengths_key(name))))
        shapes = {tuple(int(d) for d in f.shape[1:]) for f in feats}
        if len(shapes) != 1 and not _exporting():
            raise ValueError(
                f"encoders produced different feature shapes {sorted(shapes)}; they must agree to be fused"
            )
        return torch.stack(feats, dim=1)

    def fuse(self, features: Tensor, mask: Tensor) -> Tensor:
        if mask.shape != features.shape[:2]:
            raise ModalityError(
                f"present mask shape {tuple(mask.shape)} does not match features (B, M) = {tuple(features.shape[:2])}"
            )
        if not _exporting():  # data-dependent checks cannot be traced into an ONNX graph
            check_present(mask)
        return self.fusion(features, mask)

    def fuse_predict(self, features: Tensor, mask: Tensor) -> NetOutput:
        fused = self.fuse(features, mask)
        embedding, logits = self.head(fused)
        return NetOutput(features, fused, embedding, logits)

    def forward_all(self, inputs: Mapping[str, Tensor], mask: Tensor) -> NetOutput:
        return self.fuse_predict(self.encode(inputs), mask)

    def forward(self, inputs: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        return self.forward_all(inputs, mask).logits

    def new_head(self) -> nn.Module:
        """A predictor with the same architecture and fresh weights (the MAR regularization head)."""
        head = copy.deepcopy(self.head)
        for module in head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return head


def build_network(
    spec: ModalitySpec,
    input_shapes: Mapping[str, Sequence[int]],
    num_classes: int,
    *,
    channels: int = 64,
    fusion: str = "concat",
    encoder: str = "auto",
    encoder_options: Mapping[str, object] | None = None,
    per_modality_encoder: Mapping[str, str] | None = None,
    head_hidden: int = 128,
    dropout: float = 0.1,
) -> MultimodalNet:
    """Build a :class:`MultimodalNet` from the data's per-sample shapes and the model config."""
    per_modality_encoder = dict(per_modality_encoder or {})
    unknown = [m for m in per_modality_encoder if m not in spec.names]
    if unknown:
        raise ModalityError(f"encoder override for unknown modality {unknown[0]!r}; the data has {list(spec.names)}")
    no_shape = [m for m in spec.names if m not in input_shapes]
    if no_shape:
        raise ModalityError(f"no input shape for modalities {no_shape}; shapes given for {sorted(input_shapes)}")
    encoders = nn.ModuleDict()
    for name in spec.names:
        shape = tuple(input_shapes[name])
        kind = per_modality_encoder.get(name, encoder)
        if kind == "auto":
            kind = default_encoder_for(shape)
        encoders[name] = build_encoder(kind, shape, channels, dropout=dropout, **dict(encoder_options or {}))
    fusion_module = build_fusion(fusion, len(spec), channels, num_classes, spatial=False)
    head = ClassificationHead(fusion_module.out_channels, num_classes, hidden=head_hidden, dropout=dropout)
    return MultimodalNet(spec, encoders, fusion_module, head)
