"""Training stages as strategies (DESIGN §4.3), registered by name in :data:`STAGES`.

A stage decides three things for the shared Lightning module (:mod:`mmanet.training.module`):
which modalities a training sample keeps (:meth:`Stage.training_mask`), which combinations
validation evaluates (:meth:`Stage.eval_combinations`), and which loss terms it adds to the
task loss (:meth:`Stage.extra_losses`).

* ``teacher``    — complete modalities (δ = present), L_task.
* ``customized`` — SF: one fixed combination for the whole run, L_task.
* ``unified``    — SF-MD and the fusion baselines: modality dropout, L_task (+ fusion aux losses).
* ``mmanet``     — modality dropout, L = L_task + α·L_MAD + β·L_MAR (Eq. 1) against a frozen teacher,
  plus the optional logit distillation γ·L_KD. Unlabelled samples (label -1) in the batch take part
  in the distillation terms (MAD, SP, KD) only; the task and MAR losses use the labelled rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmanet.data.base import unlabelled_rows
from mmanet.losses import (
    FixedWeakSet,
    WeakCombinationMiner,
    kd_loss,
    mad_loss,
    mar_loss,
    mar_loss_official,
    single_modality_weak_set,
)
from mmanet.modality import Combination, all_combinations
from mmanet.models.heads.base import HeadOutput
from mmanet.models.network import NetOutput
from mmanet.registry import Registry

if TYPE_CHECKING:
    from mmanet.training.module import MultimodalModule


def labels_at(logits: Tensor, target: Tensor) -> Tensor:
    """Segmentation labels at the resolution of ``logits`` (nearest; a decoder's side outputs are coarser)."""
    if logits.dim() == 4 and tuple(logits.shape[2:]) != tuple(target.shape[1:]):
        return F.interpolate(target[:, None].float(), size=logits.shape[2:], mode="nearest")[:, 0].long()
    return target


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


@dataclass
class StepBatch:
    """What one training step has computed, for the stage's extra loss terms."""

    inputs: dict[str, Tensor]
    present: Tensor  # the data's presence mask (complete for the teacher)
    mask: Tensor  # the stage's training mask (after modality dropout)
    target: Tensor
    out: NetOutput


class Stage:
    """Default behaviour: modality dropout, every combination validated, no extra loss."""

    name = ""

    def __init__(self, module: MultimodalModule) -> None:
        self.module = module

    def training_mask(self, present: Tensor) -> Tensor:
        return self.module.dropout(present)

    def eval_combinations(self) -> list[Combination]:
        return all_combinations(self.module.info.spec)

    def extra_losses(self, step: StepBatch) -> dict[str, Tensor]:
        return {}

    def on_train_epoch_start(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


STAGES: Registry[type[Stage]] = Registry("stage")


@STAGES.register("teacher")
class TeacherStage(Stage):
    def training_mask(self, present: Tensor) -> Tensor:
        return present

    def eval_combinations(self) -> list[Combination]:
        return [self.module.info.spec.full]


@STAGES.register("customized")
class CustomizedStage(Stage):
    def __init__(self, module: MultimodalModule) -> None:
        super().__init__(module)
        if module.combination is None:
            raise ValueError("the customized stage needs a combination")
        self.combination = module.combination

    def training_mask(self, present: Tensor) -> Tensor:
        return present & self.combination.mask(present.device)

    def eval_combinations(self) -> list[Combination]:
        return [self.combination]


@STAGES.register("unified")
class UnifiedStage(Stage):
    pass


@STAGES.register("mmanet")
class MMANetStage(Stage):
    """Eq. 1: ``L_task + α·L_MAD + β·L_MAR`` with a frozen teacher and a regularization head.

    The regularization head runs every step (zero weight before ω) so DDP sees every
    parameter. The MAR mining data pass is :class:`~mmanet.training.mining.MARMiningCallback`.
    """

    def __init__(self, module: MultimodalModule) -> None:
        super().__init__(module)
        if module.teacher is None:
            raise ValueError("the mmanet stage needs a teacher")
        cfg = module.config.mar
        self.miner: WeakCombinationMiner | None = None
        self.weak_set: FixedWeakSet | WeakCombinationMiner | None = None
        if cfg.mode != "off":
            module.reg_head = module.net.new_head()
            if cfg.mode == "single":
                self.weak_set = FixedWeakSet(single_modality_weak_set(module.info.spec))
            else:
                self.miner = WeakCombinationMiner(
                    module.info.spec, num_strong=cfg.num_strong, ignore_index=module.ignore_index
                )

    def mar_active(self) -> bool:
        return self.module.reg_head is not None and self.module.current_epoch >= self.module.config.mar.warmup_epochs

    def weak_mask(self, keep: Tensor) -> Tensor:
        if self.weak_set is None or not self.mar_active():
            return torch.zeros(keep.shape[0], dtype=torch.bool, device=keep.device)
        return self.weak_set.weak_mask(keep)

    def on_train_epoch_start(self) -> None:
        module = self.module
        if self.miner is not None and module.current_epoch >= module.config.mar.warmup_epochs and self.weak_set is None:
            self.miner.select()
            self.weak_set = self.miner
            n = len(self.miner.weak_set)
            module.print(
                f"MAR: strong modalities {list(self.miner.strong_modalities)}; weak set = the "
                f"{n} combination{'s' if n != 1 else ''} without them"
            )

    def extra_losses(self, step: StepBatch) -> dict[str, Tensor]:
        module, cfg = self.module, self.module.config
        losses: dict[str, Tensor] = {}
        if cfg.mad_active or cfg.kd_active:
            losses.update(self.distillation_terms(step))
        if module.reg_head is not None:
            weak = self.weak_mask(step.mask)
            losses["mar"] = cfg.mar.beta * self.mar_term(step, weak)
            module.log("train/weak_fraction", weak.float().mean(), on_step=False, on_epoch=True)
        return losses

    def distillation_terms(self, step: StepBatch) -> dict[str, Tensor]:
        """``α·L_MAD`` and ``γ·L_KD`` against the frozen teacher, on the rows :meth:`distillation_rows` picks."""
        module, cfg = self.module, self.module.config
        names = [n for n, on in (("mad", cfg.mad_active), ("kd", cfg.kd_active)) if on]
        rows = self.distillation_rows(step.present)
        if rows is not None and rows.numel() == 0:  # no complete sample in this batch: nothing to distil
            return {name: step.out.logits.sum() * 0.0 for name in names}
        student, inputs, present = step.out, step.inputs, step.present
        if rows is not None:
            student = _select_rows(step.out, rows)
            inputs, present = {k: v[rows] for k, v in inputs.items()}, present[rows]
        teacher_out = module.teacher.forward_all(inputs, present)  # the data's own (complete) modalities
        losses: dict[str, Tensor] = {}
        if cfg.mad_active:
            weight = cfg.mad.alpha if module.current_epoch >= cfg.mad.start_epoch else 0.0
            losses["mad"] = weight * self.mad_term(student, teacher_out)
        if cfg.kd_active:
            losses["kd"] = cfg.kd.gamma * kd_loss(student.logits, teacher_out.logits, temperature=cfg.kd.temperature)
        return losses

    def distillation_rows(self, present: Tensor) -> Tensor | None:
        """The rows the distillation terms use (``teacher.distill_samples``): with ``complete``, the rows whose
        data has every modality (the teacher was trained on such samples only); None = every row."""
        if self.module.config.teacher.distill_samples == "all":
            return None
        complete = present.all(dim=1)
        return None if bool(complete.all()) else complete.nonzero().flatten()

    def mar_term(self, step: StepBatch, weak: Tensor) -> Tensor:
        """``L_MAR`` (unweighted) of ``mar.variant`` over the labelled rows (unlabelled ones carry no label).

        ``paper``: ``(1/B) Σ_i m_i CE(p^r_i, y_i)`` (DESIGN §4.2); ``official``: the authors' code
        (:func:`~mmanet.losses.mar.mar_loss_official`; segmentation: with the side outputs and class
        weights, as their loss). The regularization head runs on every row of the batch — weak or not,
        labelled or not — so that its BatchNorm layers (the SF trunk, ESANet's decoder) always see the
        whole batch, whatever the number of weak rows (0, 1, some or all), and every parameter stays
        in the graph (DDP); the cross-entropy is masked to the weak labelled rows afterwards.
        """
        module = self.module
        reg = module.reg_head(step.out.fused)
        labelled = ~unlabelled_rows(step.target)
        target = step.target
        if not bool(labelled.all()):
            if not bool(labelled.any()):
                return reg.logits.sum() * 0.0
            keep = labelled.nonzero().flatten()
            reg = HeadOutput(reg.logits[keep], reg.features, [a[keep] for a in reg.aux_logits])
            target, weak = target[keep], weak[keep]
        ignore = module.ignore_index
        if module.config.mar.variant == "paper":
            # the formula reads the head's prediction; its training-only side outputs stay in the graph at
            # zero weight (every parameter must take part in every step under DDP)
            unused = sum((side.sum() * 0.0 for side in reg.aux_logits), reg.logits.new_zeros(()))
            return mar_loss(reg.logits, target, weak, ignore_index=ignore) + unused
        weight = module.class_weights.to(reg.logits.device) if module.class_weights is not None else None
        scales = [reg.logits, *reg.aux_logits] if reg.logits.dim() > 2 else [reg.logits]
        return sum(
            mar_loss_official(logits, labels_at(logits, target), weak, ignore_index=ignore, weight=weight)
            for logits in scales
        )

    def mad_term(self, student: NetOutput, teacher: NetOutput) -> Tensor:
        """``L_MAD`` (DESIGN §4.1) of the configured feature(s), variant and reduction (unweighted).

        Several features (``mad.feature`` as a list): their terms are summed, as the authors' segmentation
        code sums its three encoder-side levels. Segmentation: every pixel of a feature map is a sample,
        after average pooling to at most ``mad.pool_size``.
        """
        cfg = self.module.config.mad
        per_pixel = self.module.info.task == "segmentation"
        terms = []
        for name in cfg.features:
            student_f, teacher_f = student.feature(name), teacher.feature(name)
            if student_f.shape[0] < 2:  # no relation between samples to distil
                terms.append(student_f.sum() * 0.0)
                continue
            options = {
                "variant": cfg.variant,
                "reduction": cfg.reduction,
                "row_normalization": cfg.row_normalization,
                "weighting": cfg.weighting,
            }
            if per_pixel and student_f.dim() == 4:
                student_f, teacher_f = pool_at_most(student_f, cfg.pool_size), pool_at_most(teacher_f, cfg.pool_size)
                terms.append(mad_loss(student_f, teacher_f, teacher.logits, per_pixel=True, **options))
            else:
                logits = teacher.logits
                if logits.dim() > 2:  # a per-sample feature of a segmentation network: one weight per sample
                    logits = logits.flatten(2).mean(dim=2)
                terms.append(mad_loss(student_f, teacher_f, logits, **options))
        return torch.stack(terms).sum() if len(terms) > 1 else terms[0]

    def state_dict(self) -> dict[str, Any]:
        return {"miner": self.miner.state_dict()} if self.miner is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.miner is not None and "miner" in state:
            self.miner.load_state_dict(state["miner"])
            if self.miner.weak_set is not None:
                self.weak_set = self.miner
