"""MMANet (CVPR 2023) and its ablations: a frozen teacher trained on complete data, then the deployment
network with ``L = L_task + α·L_MAD + β·L_MAR`` (Eq. 1), plus the optional logit distillation γ·L_KD.

* ``mmanet``: MAD (margin-aware distillation, docs/design.md §4.1) + MAR on the mined weak set (§4.2).
* ablations (paper Table 6): ``sp`` (relation distillation with uniform weights, no MAR), ``mad``
  (MAD, no MAR), ``sr`` (MAD + regularisation of every single modality, no mining).
* ``kd`` (logit distillation alone) and ``mmanet_kd`` (MMANet + KD).

The distillation terms (MAD, SP, KD) act on the rows whose data is complete
(``teacher.distill_samples``), with the teacher fed those rows' own presence mask; unlabelled samples
(label -1) take part in them only. MAR lives in :mod:`mmanet.methods.mar`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.losses import kd_loss, mad_loss
from mmanet.losses.mad import Variant
from mmanet.methods.base import EpochEndHook, Method, StepContext, no_void_label, register_method
from mmanet.methods.mar import ModalityAwareRegularization
from mmanet.methods.supervised import fusion_preset
from mmanet.models.network import NetOutput

if TYPE_CHECKING:
    from mmanet.config import RunConfig
    from mmanet.data import DataBundle
    from mmanet.modality import Combination
    from mmanet.models.network import MultimodalNet
    from mmanet.task import TaskInfo
    from mmanet.training.teacher import FrozenTeacher

_CONCAT = fusion_preset("concat")


@register_method("mmanet", {**_CONCAT, "mad": {"variant": "paper"}, "mar": {"mode": "mined"}}, "MAD + mined MAR")
@register_method("sp", {**_CONCAT, "mad": {"variant": "sp"}, "mar": {"mode": "off"}}, "ablation: uniform weights")
@register_method("mad", {**_CONCAT, "mad": {"variant": "paper"}, "mar": {"mode": "off"}}, "ablation: MAD, no MAR")
@register_method(
    "sr", {**_CONCAT, "mad": {"variant": "paper"}, "mar": {"mode": "single"}}, "ablation: MAD + every single modality"
)
@register_method(
    "kd", {**_CONCAT, "mad": {"variant": "off"}, "mar": {"mode": "off"}, "kd": {"gamma": 1.0}}, "logit distillation"
)
@register_method(
    "mmanet_kd", {**_CONCAT, "mad": {"variant": "paper"}, "mar": {"mode": "mined"}, "kd": {"gamma": 1.0}}, "MMANet + KD"
)
class MMANet(Method):
    """Eq. 1 against a frozen teacher; the regularization head runs every step (zero weight before ω)."""

    stage = "mmanet"
    plan = "teacher_then_student"

    def __init__(
        self,
        config: RunConfig,
        info: TaskInfo,
        net: MultimodalNet,
        *,
        combination: Combination | None = None,
        teacher: FrozenTeacher | None = None,
        class_weights: Tensor | None = None,
    ) -> None:
        super().__init__(config, info, net, combination=combination, teacher=teacher, class_weights=class_weights)
        if teacher is None:
            raise ValueError("an MMANet-family method needs a teacher")
        #: MAR (None with ``mar.mode: off``); its regularization head is built here, after the network
        self.mar = (
            None
            if config.mar.mode == "off"
            else ModalityAwareRegularization(config, info.spec, net, no_void_label(info.ignore_index))
        )

    @classmethod
    def feature_keys(cls, config: RunConfig) -> dict[str, list[str]]:
        return {"mad.feature": list(config.mad.features)} if config.mad_active else {}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"reg_head": self.mar.head} if self.mar is not None else {}

    # ------------------------------------------------------------------ the loss
    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        terms = super().loss_terms(ctx)
        cfg = self.config
        if cfg.mad_active or cfg.kd_active:
            terms.update(self.distillation_terms(ctx))
        if self.mar is not None:
            weak = self.mar.weak_mask(ctx.mask, ctx.epoch)
            terms["mar"] = cfg.mar.beta * self.mar.term(ctx, weak, self.task_loss.class_weights)
            ctx.log("train/weak_fraction", weak.float().mean())
        return terms

    def distillation_rows(self, present: Tensor) -> Tensor | None:
        """The rows the distillation terms use (``teacher.distill_samples``): with ``complete``, the rows whose
        data has every modality (the teacher was trained on such samples only); None = every row."""
        if self.config.teacher.distill_samples == "all":
            return None
        complete = present.all(dim=1)
        return None if bool(complete.all()) else complete.nonzero().flatten()

    def distillation_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        """``α·L_MAD`` and ``γ·L_KD`` against the frozen teacher, on the rows :meth:`distillation_rows` picks."""
        cfg = self.config
        names = [n for n, on in (("mad", cfg.mad_active), ("kd", cfg.kd_active)) if on]
        rows = self.distillation_rows(ctx.present)
        if rows is not None and rows.numel() == 0:  # no complete sample in this batch: nothing to distil
            return {name: ctx.out.logits.sum() * 0.0 for name in names}
        student, inputs, present = ctx.out, ctx.inputs, ctx.present
        if rows is not None:
            student = _select_rows(ctx.out, rows)
            inputs, present = {k: v[rows] for k, v in inputs.items()}, present[rows]
        assert self.teacher is not None  # checked in __init__
        teacher_out = self.teacher.forward_all(inputs, present)  # the data's own (complete) modalities
        terms: dict[str, Tensor] = {}
        if cfg.mad_active:
            weight = cfg.mad.alpha if ctx.epoch >= cfg.mad.start_epoch else 0.0
            terms["mad"] = weight * self.mad_term(student, teacher_out)
        if cfg.kd_active:
            terms["kd"] = cfg.kd.gamma * kd_loss(student.logits, teacher_out.logits, temperature=cfg.kd.temperature)
        return terms

    def mad_term(self, student: NetOutput, teacher: NetOutput) -> Tensor:
        """``L_MAD`` (docs/design.md §4.1) of the configured feature(s), variant and reduction (unweighted).

        Several features (``mad.feature`` as a list): their terms are summed, as the authors' segmentation
        code sums its three encoder-side levels. Segmentation: every pixel of a feature map is a sample,
        after average pooling to at most ``mad.pool_size``.
        """
        cfg = self.config.mad
        per_pixel = self.info.task == "segmentation"
        terms = []
        for name in cfg.features:
            student_f, teacher_f = student.feature(name), teacher.feature(name)
            if student_f.shape[0] < 2:  # no relation between samples to distil
                terms.append(student_f.sum() * 0.0)
                continue
            variant = cast(Variant, cfg.variant)  # "off" never reaches here (MAD is inactive then)
            pixels = per_pixel and student_f.dim() == 4
            logits = teacher.logits
            if pixels:
                student_f, teacher_f = pool_at_most(student_f, cfg.pool_size), pool_at_most(teacher_f, cfg.pool_size)
            elif logits.dim() > 2:  # a per-sample feature of a segmentation network: one weight per sample
                logits = logits.flatten(2).mean(dim=2)
            terms.append(
                mad_loss(
                    student_f, teacher_f, logits, variant=variant, per_pixel=pixels, reduction=cfg.reduction,
                    row_normalization=cfg.row_normalization, weighting=cfg.weighting,
                )  # fmt: skip
            )
        return torch.stack(terms).sum() if len(terms) > 1 else terms[0]

    # ------------------------------------------------------------------ hooks and state
    def epoch_end_hooks(self, net: MultimodalNet, bundle: DataBundle) -> list[EpochEndHook]:
        return self.mar.epoch_end_hooks(net, bundle) if self.mar is not None else []

    def on_train_epoch_start(self, epoch: int, say: Callable[[str], None]) -> None:
        if self.mar is not None:
            self.mar.on_train_epoch_start(epoch, say)

    def state_dict(self) -> dict[str, Any]:
        return self.mar.state_dict() if self.mar is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.mar is not None:
            self.mar.load_state_dict(state)

    @classmethod
    def results_of(cls, state: Mapping[str, Any]) -> dict[str, Any]:
        return ModalityAwareRegularization.results_of(state)


def pool_at_most(feature_map: Tensor, size: list[int] | None) -> Tensor:
    """Average-pool a ``(B, C, H, W)`` map to at most ``size = [H', W']`` per side (as is when it is smaller)."""
    if not size:
        return feature_map
    h, w = feature_map.shape[2:]
    target = (min(h, size[0]), min(w, size[1]))
    return feature_map if target == (h, w) else F.adaptive_avg_pool2d(feature_map, target)


def _select_rows(out: NetOutput, rows: Tensor) -> NetOutput:
    """The rows ``rows`` of a network output (the tensors the distillation terms read)."""
    named = {k: v[rows] for k, v in out.named.items()}
    return NetOutput([f[rows] for f in out.features], [f[rows] for f in out.fused], out.logits[rows], named)
