"""The fusion interface shared by SF concatenation and the unified baselines (docs/baselines.md)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.registry import Registry

#: ``loss_fn(logits, target) -> scalar``: the task loss, used by fusions with auxiliary heads.
TaskLoss = Callable[[Tensor, Tensor], Tensor]

#: constructor arguments every fusion takes from the network (not options of a config's ``model.fusion``)
BUILT_BY_NETWORK = ("num_modalities", "channels", "num_classes", "spatial")


@dataclass
class FusionOutput:
    """What :meth:`Fusion.forward` returns: the fused feature and what the fusion's auxiliary losses need.

    ``aux`` holds tensors the forward computed anyway (e.g. LCR's cross-modal part ``r``, ShaSpec's
    shared and specific features, the presence mask), kept by a training forward only
    (:meth:`Fusion.keeps_aux`); in evaluation and ONNX export it is empty and nothing extra is computed.
    """

    fused: Tensor  # (B, out_channels, *S)
    aux: dict[str, Tensor] = field(default_factory=dict)

    @property
    def spatial(self) -> tuple[int, ...]:
        """``S``: ``()`` for vectors, ``(H, W)`` for maps."""
        return tuple(self.fused.shape[2:])


def exporting() -> bool:
    """Whether the module is being traced (TorchScript / ONNX export)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


class Fusion(nn.Module):
    """Fuse per-modality features ``x: (B, M, C, *S)`` under a per-sample ``mask: (B, M)``.

    ``S`` is ``()`` for vector features and ``(H, W)`` for feature maps.
    ``forward(x, mask) -> FusionOutput``: the fused ``(B, out_channels, *S)`` and, in a training
    forward, the tensors the auxiliary losses need (``aux``). A missing modality must not influence
    the output, and every parameter must take part in every training step (DDP, docs/design.md §3).
    ``auxiliary_losses(out, target, loss_fn) -> {name: scalar}`` computes the fusion's extra
    training losses from ``out.aux`` only (no second pass over the fusion); ``{}`` without them.

    Constructor arguments (all fusions, given by the network): ``num_modalities``, ``channels`` (C),
    ``num_classes`` (for auxiliary heads), ``spatial`` (True for feature maps); further keyword
    arguments are the fusion's options (``model.fusion: {type: name, <option>: value}``).
    """

    out_channels: int
    #: True when ``forward(x, mask).fused`` is exactly ``zero_missing(x, mask).flatten(1, 2)`` — the
    #: concatenation of the masked features, with no parameters and nothing else — so that a head's
    #: linear prefix can be split per modality (:meth:`mmanet.models.heads.Head.split_prefix`).
    #: A subclass that changes ``forward`` must set it back to False.
    masked_concat: ClassVar[bool] = False

    def __init__(self, num_modalities: int, channels: int, num_classes: int, spatial: bool = False) -> None:
        super().__init__()
        self.num_modalities = num_modalities
        self.channels = channels
        self.num_classes = num_classes
        self.spatial = spatial

    def forward(self, features: Tensor, mask: Tensor) -> FusionOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def keeps_aux(self) -> bool:
        """Whether this forward keeps what the auxiliary losses need: in training, never while exporting."""
        return self.training and not exporting()

    def auxiliary_losses(self, out: FusionOutput, target: Tensor, loss_fn: TaskLoss) -> dict[str, Tensor]:
        """Extra training losses of this fusion from its training forward's ``out`` (e.g. RFNet's
        per-modality heads). Default: none. A fusion with losses returns ``{}`` when ``out.aux`` is empty."""
        return {}


FUSIONS: Registry[type[Fusion]] = Registry("fusion")
register_fusion = FUSIONS.register


def fusion_options(name: str) -> list[str]:
    """The options of the registered fusion ``name`` (its constructor's keyword arguments beyond the network's)."""
    parameters = inspect.signature(FUSIONS.get(name).__init__).parameters
    return [p for p in parameters if p != "self" and p not in BUILT_BY_NETWORK]


def grouped_uniform_(weight: Tensor, bias: Tensor, fan_in: int) -> None:
    """``nn.Linear``'s default initialisation for a stack of independent linear layers (weight, then bias)."""
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


def mask_like(mask: Tensor, features: Tensor) -> Tensor:
    """Broadcast a ``(B, M)`` mask to ``features``' shape ``(B, M, …)`` as float."""
    view = mask.shape + (1,) * (features.dim() - 2)
    return mask.reshape(view).to(features.dtype)


def zero_missing(features: Tensor, mask: Tensor) -> Tensor:
    """Select missing entries away: ``features: (B, M, …)`` is 0 where ``mask: (B, M)`` is False.

    A selection (``torch.where``), not ``0 · x``: inf/NaN content cannot leak, neither into the
    value nor into the gradient.
    """
    present = mask_like(mask, features).bool().expand_as(features)
    return torch.where(present, features, torch.zeros((), dtype=features.dtype, device=features.device))


def to_tokens(features: Tensor) -> Tensor:
    """``(B, M, C, *S) -> (B, M, P, C)`` channel-last, ``P = prod(S)`` (1 for vectors)."""
    b, m, c = features.shape[:3]
    return features.reshape(b, m, c, -1).transpose(2, 3)


def task_logits(logits: Tensor, spatial: tuple[int, ...], target: Tensor) -> Tensor:
    """Per-position logits ``(N, P, K)`` shaped for the task loss.

    A dense target ``(N, *S')`` (segmentation, one more dim than a class label per spatial
    axis) gets logit maps ``(N, K, *S')``, bilinearly resized when ``S' != S``; any other
    target (class indices ``(N,)``, soft labels ``(N, K)``) gets position-pooled ``(N, K)``.
    """
    if spatial and target.dim() == 1 + len(spatial):
        n, _, k = logits.shape
        maps = logits.transpose(1, 2).reshape(n, k, *spatial)
        if tuple(maps.shape[2:]) != tuple(target.shape[1:]):
            maps = F.interpolate(maps, size=tuple(target.shape[1:]), mode="bilinear", align_corners=False)
        return maps
    return logits.mean(dim=1)


def per_modality_task_loss(
    head: nn.Module, tokens: Tensor, mask: Tensor, spatial: tuple[int, ...], target: Tensor, loss_fn: TaskLoss
) -> Tensor:
    """Task loss of a shared ``head`` (``C -> K`` per position) on each PRESENT modality's own tokens.

    ``tokens: (B, M, P, C)``. The present (sample, modality) pairs are selected, so the
    loss is ``loss_fn``'s reduction (a mean for the usual task losses) over those pairs
    only; missing modalities influence neither value nor gradient.
    """
    b, m = mask.shape
    logits = head(tokens[mask])  # (n_present, P, K)
    pair_target = target.unsqueeze(1).expand(b, m, *target.shape[1:])[mask]
    return loss_fn(task_logits(logits, spatial, pair_target), pair_target)
