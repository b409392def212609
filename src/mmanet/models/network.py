"""``MultimodalNet``: encode once, fuse per level, predict — for one mask or, batched, for many (docs/design.md §2).

``encode`` depends only on the inputs (rows of modalities that are absent are excluded from
encoders with batch statistics, see :mod:`mmanet.models.encoders.base`); ``fuse`` and the head
depend on the present mask. Anything that needs many combinations (per-combination
evaluation, MAR mining) calls :meth:`MultimodalNet.predict_combinations`: the batch is encoded
ONCE and every requested combination is fused and predicted in one batched call (features
repeated along the batch axis, in chunks of bounded memory) — the project's main
performance lever.

Levels: every encoder declares its pyramid (:class:`~mmanet.models.encoders.FeatureInfo`).
The head says which levels it needs (``"last"``: the coarsest of every encoder;
``"all"``: the whole pyramid, which must have the same number of levels for every
modality). At each fused level the modalities must agree on channels; when some modality's
level is a global vector and another's a map, the maps are global-average pooled so the
level is fused as vectors. One fusion module per fused level.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn

from mmanet.modality import ModalityError, ModalitySpec, check_present
from mmanet.models.encoders import Encoder, FeatureInfo
from mmanet.models.fusion import Fusion, FusionOutput
from mmanet.models.fusion.base import TaskLoss, exporting, zero_missing
from mmanet.models.heads import Head

#: default bound on the elements of the repeated features of one batched-combination chunk (64 MiB fp32)
DEFAULT_CHUNK_ELEMENTS = 1 << 24


class _Resettable(Protocol):
    """A layer with fresh-weight initialisation (``nn.Linear``, ``nn.Conv2d``, norms …)."""

    def reset_parameters(self) -> None: ...


@dataclass
class NetOutput:
    """What one fuse + predict pass produces, for the losses that need more than logits."""

    features: list[Tensor]  # per fused level: stacked per-modality features (B, M, C_l, *S_l)
    fused: list[Tensor]  # per fused level: the fusion output (B, C_f, *S_l)
    logits: Tensor  # (B, K) or (B, K, H, W)
    named: dict[str, Tensor] = field(default_factory=dict)  # "fused" + the head's named features
    aux_logits: list[Tensor] = field(default_factory=list)  # the head's training-only side outputs
    #: per fused level: what the fusion returned (``fused[l]`` and, in training, what its auxiliary losses need)
    fusion_outputs: list[FusionOutput] = field(default_factory=list)

    def feature(self, name: str) -> Tensor:
        """A named feature (``"fused"``, ``"embedding"``, …) — what ``mad.feature`` selects."""
        try:
            return self.named[name]
        except KeyError:
            raise KeyError(f"unknown feature {name!r}; this network exposes {sorted(self.named)}") from None

    @property
    def embedding(self) -> Tensor:
        return self.feature("embedding")


@dataclass
class CombinationLogits:
    """Logits of many combinations for one batch: ``logits (n_c, B, K, …)``, ``valid (n_c, B)``.

    ``valid[c, i]`` is False where sample i has no modality of combination c (its logits are
    meaningless and must be skipped)."""

    logits: Tensor
    valid: Tensor


@dataclass(frozen=True)
class LevelPlan:
    """Which encoder level of every modality forms one fused level, and whether maps are pooled."""

    indices: tuple[int, ...]  # per modality, index into its encoder's levels
    pooled: tuple[bool, ...]  # per modality, True when its map is pooled to a vector here
    info: FeatureInfo  # the aligned level (channels, stride or None)


@contextmanager
def running_batch_statistics(module: nn.Module) -> Iterator[None]:
    """Within the block, the BatchNorm layers of ``module`` normalise with their running statistics (and
    leave them unchanged) while the rest of the module keeps its training mode (dropout, gradients)."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for layer in layers:
        layer.train(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.train(True)


def lengths_key(modality: str) -> str:
    """Key under which a batch carries the valid lengths of a sequence modality."""
    return f"lengths_{modality}"


def plan_levels(spec: ModalitySpec, infos: Mapping[str, Sequence[FeatureInfo]], which: str) -> list[LevelPlan]:
    """Align the modalities' declared pyramids into the fused levels a head needs (module docstring)."""
    if which == "last":
        picks = [tuple(len(infos[m]) - 1 for m in spec.names)]
    elif which == "all":
        counts = {m: len(infos[m]) for m in spec.names}
        if len(set(counts.values())) != 1:
            raise ValueError(
                f"a head that takes every level needs equally deep pyramids; levels per modality: {counts}"
            )
        picks = [tuple(level for _ in spec.names) for level in range(next(iter(counts.values())))]
    else:
        raise ValueError(f"a head's levels must be 'last' or 'all', got {which!r}")
    plans = []
    for pick in picks:
        level_infos = [infos[m][i] for m, i in zip(spec.names, pick, strict=True)]
        channels = {m: info.channels for m, info in zip(spec.names, level_infos, strict=True)}
        if len(set(channels.values())) != 1:
            raise ValueError(
                f"the modalities' features at a fused level must have equal channels to be fused, got {channels}; "
                "give every encoder the same out_channels (model.channels)"
            )
        strides = {info.stride for info in level_infos}
        if None in strides:
            info = FeatureInfo(level_infos[0].channels, None)
        elif len(strides) == 1:
            info = level_infos[0]
        else:
            raise ValueError(
                f"feature maps at a fused level have different strides "
                f"{ {m: i.stride for m, i in zip(spec.names, level_infos, strict=True)} }"
            )
        pooled = tuple(info.is_global and not li.is_global for li in level_infos)
        plans.append(LevelPlan(pick, pooled, info))
    return plans


class MultimodalNet(nn.Module):
    """Per-modality encoders + one mask-aware fusion per fused level + a head."""

    def __init__(
        self,
        spec: ModalitySpec,
        encoders: nn.ModuleDict,
        fusions: Sequence[Fusion] | Fusion,
        head: Head,
        plans: Sequence[LevelPlan] | None = None,
    ) -> None:
        super().__init__()
        missing = [m for m in spec.names if m not in encoders]
        if missing:
            raise ModalityError(f"no encoder for modalities {missing}")
        self.spec = spec
        self.encoders = encoders
        self.fusions = nn.ModuleList([fusions] if isinstance(fusions, Fusion) else list(fusions))
        self.head = head
        infos = {m: cast(Encoder, encoders[m]).feature_info for m in spec.names}
        self.plans = list(plans) if plans is not None else plan_levels(spec, infos, head.levels)
        if len(self.plans) != len(self.fusions):
            raise ValueError(f"{len(self.plans)} fused level(s) but {len(self.fusions)} fusion module(s)")

    # ------------------------------------------------------------------ description
    @property
    def num_modalities(self) -> int:
        return len(self.spec)

    @property
    def fusion(self) -> Fusion:
        """The fusion of the coarsest fused level (the only one for classification heads)."""
        return cast(Fusion, self.fusions[-1])

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names :meth:`NetOutput.feature` accepts (``mad.feature`` picks one)."""
        return ("fused", *self.head.feature_names)

    @property
    def fused_info(self) -> list[FeatureInfo]:
        fusions = [cast(Fusion, f) for f in self.fusions]
        return [FeatureInfo(f.out_channels, p.info.stride) for f, p in zip(fusions, self.plans, strict=True)]

    # ------------------------------------------------------------------ encode
    def encode(self, inputs: Mapping[str, Tensor], present: Tensor | None = None) -> list[Tensor]:
        """Encode every modality: one stacked tensor ``(B, M, C_l, *S_l)`` per fused level.

        ``present`` (``(B, M)`` bool, optional) lets encoders with batch statistics run on the
        rows where their modality is present only (in training mode); other encoders ignore it.
        """
        unknown = [k for k in inputs if k not in self.spec.names and not k.startswith("lengths_")]
        if unknown:
            raise ModalityError(
                f"unknown modality {unknown[0]!r} in the inputs; the network has {list(self.spec.names)}"
            )
        for name in self.spec.names:
            if name not in inputs:
                raise ModalityError(
                    f"input for modality {name!r} is missing; pass zeros and mark it absent in the present mask"
                )
        if present is not None:
            b, m = inputs[self.spec.names[0]].shape[0], len(self.spec)
            if tuple(present.shape) != (b, m):
                raise ModalityError(
                    f"present mask shape {tuple(present.shape)} does not match features (B, M) = {(b, m)}"
                )
        per_modality = []
        for i, name in enumerate(self.spec.names):
            rows = present[:, i] if present is not None else None
            per_modality.append(
                self._encode_one(cast(Encoder, self.encoders[name]), inputs[name], inputs.get(lengths_key(name)), rows)
            )
        levels = []
        for plan in self.plans:
            feats = []
            for m, (index, pooled) in enumerate(zip(plan.indices, plan.pooled, strict=True)):
                f = per_modality[m][index]
                feats.append(f.flatten(2).mean(dim=2) if pooled else f)
            shapes = {tuple(int(d) for d in f.shape[1:]) for f in feats}
            if len(shapes) != 1 and not exporting():
                raise ValueError(
                    f"encoders produced different feature shapes {sorted(shapes)} at a fused level; "
                    "they must agree to be fused (same input size for every image modality?)"
                )
            levels.append(torch.stack(feats, dim=1))
        return levels

    @staticmethod
    def _encode_one(encoder: Encoder, x: Tensor, lengths: Tensor | None, rows: Tensor | None) -> list[Tensor]:
        if rows is None or encoder.row_independent or not encoder.training or exporting() or bool(rows.all()):
            return encoder(x, lengths)
        # batch statistics must not see absent rows: run on the present rows, scatter into zeros
        index = rows.nonzero().flatten()
        if index.numel() == 0:  # keep every parameter in the graph (DDP) without mixing absent rows in
            n = min(2, x.shape[0])  # two rows: BatchNorm cannot normalise a single value per channel
            out = encoder(x[:n], None if lengths is None else lengths[:n])
            return [
                torch.zeros((x.shape[0], *o.shape[1:]), dtype=o.dtype, device=o.device) + 0.0 * o.sum() for o in out
            ]
        if index.numel() == 1:
            # One present row: batch statistics of one sample are degenerate (a 1×1 map has one value per
            # channel: an error, or — duplicated — a zero variance whose gradient explodes); its BatchNorm
            # layers use their running statistics for this row, as in evaluation, and do not update them.
            with running_batch_statistics(encoder):
                out = encoder(x[index], None if lengths is None else lengths[index])
        else:
            out = encoder(x[index], None if lengths is None else lengths[index])
        full = []
        for o in out:
            z = torch.zeros((x.shape[0], *o.shape[1:]), dtype=o.dtype, device=o.device)
            full.append(z.index_copy(0, index, o))
        return full

    # ------------------------------------------------------------------ fuse + predict
    def fuse(self, features: Sequence[Tensor], mask: Tensor) -> list[Tensor]:
        """Fuse every level under one per-sample mask ``(B, M)``: the fused features."""
        return [out.fused for out in self.fuse_levels(features, mask)]

    def fuse_levels(self, features: Sequence[Tensor], mask: Tensor) -> list[FusionOutput]:
        """Fuse every level under one per-sample mask ``(B, M)``: each fusion's :class:`FusionOutput`."""
        b, m = features[0].shape[:2]
        if mask.shape != (b, m):
            raise ModalityError(f"present mask shape {tuple(mask.shape)} does not match features (B, M) = {(b, m)}")
        if not exporting():  # data-dependent checks cannot be traced into an ONNX graph
            check_present(mask)
        return [fusion(level, mask) for fusion, level in zip(self.fusions, features, strict=True)]

    def fuse_predict(self, features: Sequence[Tensor], mask: Tensor) -> NetOutput:
        levels = self.fuse_levels(features, mask)
        fused = [out.fused for out in levels]
        head_out = self.head(fused)
        named = {"fused": fused[-1], **head_out.features}
        return NetOutput(list(features), fused, head_out.logits, named, head_out.aux_logits, levels)

    def forward_all(self, inputs: Mapping[str, Tensor], mask: Tensor) -> NetOutput:
        return self.fuse_predict(self.encode(inputs, mask), mask)

    def forward(self, inputs: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        return self.forward_all(inputs, mask).logits

    def auxiliary_losses(self, out: NetOutput, target: Tensor, loss_fn: TaskLoss) -> dict[str, Tensor]:
        """The fusions' auxiliary training losses (RFNet, LCR, mmFormer …) of the training pass ``out``, from
        what each fusion's forward kept (no second pass); named per level when several. Empty for an
        evaluation pass."""
        losses: dict[str, Tensor] = {}
        several = len(self.fusions) > 1
        for level, (fusion, fused) in enumerate(zip(self.fusions, out.fusion_outputs, strict=True)):
            for name, value in cast(Fusion, fusion).auxiliary_losses(fused, target, loss_fn).items():
                losses[f"{name}@{level}" if several else name] = value
        return losses

    # ------------------------------------------------------------------ many combinations, batched
    def predict_combinations(
        self,
        features: Sequence[Tensor],
        present: Tensor,
        combinations: Tensor,
        max_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ) -> CombinationLogits:
        """Logits of every combination for an encoded batch, in batched chunks (no per-combination loop).

        ``combinations``: ``(n_c, M)`` bool. Combination c of sample i uses the mask
        ``present_i ∧ c``; where that is empty, ``valid[c, i]`` is False (the row is computed with
        the sample's present mask as a placeholder and must be ignored). The features are
        repeated along the batch axis for as many combinations at once as keep the repeated
        features under ``max_elements``. Rows are independent in eval mode, so the result equals
        fusing each combination separately.

        Split prefix: in eval mode, when the fusion declares ``masked_concat`` and the head has a
        split prefix (:meth:`~mmanet.models.heads.Head.split_prefix`), the head's linear prefix runs
        once per batch on the per-modality features and each combination only sums the present
        modalities' partials (``max_elements`` then bounds the summed partials of one chunk); the
        logits are those of fusing each combination (up to float rounding). A single combination
        takes the fused path (nothing to share).
        """
        present = present.bool()
        combinations = combinations.to(present.device).bool()
        b, m = present.shape
        n_c = combinations.shape[0]
        partials = _split_partials(self, features, present) if n_c > 1 else None
        # elements per sample of what one chunk materialises per combination: summed partials or features
        per_row = math.prod(partials.shape[2:]) if partials is not None else sum(f[0].numel() for f in features)
        per_chunk = max(1, min(n_c, max_elements // max(1, per_row * b)))
        logits, valid = [], []
        for start in range(0, n_c, per_chunk):
            chunk = combinations[start : start + per_chunk]
            n = chunk.shape[0]
            masks = present.unsqueeze(0) & chunk.unsqueeze(1)  # (n, B, M)
            ok = masks.any(dim=2)
            masks = torch.where(ok.unsqueeze(2), masks, present.unsqueeze(0))
            if partials is None:
                rows = [f.unsqueeze(0).expand(n, *f.shape).reshape(n * b, *f.shape[1:]) for f in features]
                out = self.fuse_predict(rows, masks.reshape(n * b, m)).logits.unflatten(0, (n, b))
            else:  # Σ_m mask_m · partial_m for every (sample, combination), then the rest of the head
                summed = torch.bmm(masks.transpose(0, 1).to(partials.dtype), partials.flatten(2))  # (B, n, P)
                out = self.head.forward_from_partials(summed.reshape(b * n, *partials.shape[2:])).logits
                out = out.unflatten(0, (b, n)).transpose(0, 1)
            logits.append(out)
            valid.append(ok)
        return CombinationLogits(torch.cat(logits), torch.cat(valid))

    def predict_all(
        self,
        inputs: Mapping[str, Tensor],
        present: Tensor,
        combinations: Tensor,
        max_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ) -> CombinationLogits:
        """Encode once, then :meth:`predict_combinations` (evaluation and MAR mining use this)."""
        return self.predict_combinations(self.encode(inputs, present), present, combinations, max_elements)

    # ------------------------------------------------------------------ MAR
    def new_head(self) -> Head:
        """A head with the same architecture and fresh weights (the MAR regularization head)."""
        head = copy.deepcopy(self.head)
        for module in head.modules():
            if hasattr(module, "reset_parameters"):
                cast(_Resettable, module).reset_parameters()
        return head


def _split_partials(net: Any, features: Sequence[Tensor], present: Tensor) -> Tensor | None:
    """The head's per-modality partials ``(B, M, *P)`` when the split-prefix path applies, else None.

    It applies to a :class:`MultimodalNet` in eval mode (BatchNorm and Dropout are affine / the
    identity only there) with one fused level whose fusion declares ``masked_concat`` and a head
    with a split prefix. Absent modalities' features are selected away first (as the fusion does:
    every combination's mask is within ``present``), and non-finite partials fall back to the
    fused path (``0 · inf`` would be NaN where the fusion's selection gives 0).
    """
    if not isinstance(net, MultimodalNet) or len(features) != 1 or not net.fusion.masked_concat:
        return None
    if net.training or any(module.training for module in net.head.modules()):
        return None
    feature = features[0]
    if not bool(present.all()):  # (a complete batch has nothing to select away, nor an empty row)
        check_present(present)  # what fuse() checks on the other path
        feature = zero_missing(feature, present)
    partials = net.head.split_prefix(feature)
    # any inf/NaN element makes the sum non-finite (so does an overflow: then the fused path, conservatively)
    if partials is None or not bool(torch.isfinite(partials.sum())):
        return None
    return partials
