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
from mmanet.losses import FixedWeakSet, WeakCombinationMiner, kd_loss, mad_loss, mar_loss, single_modality_weak_set
from mmanet.modality import Combination, all_combinations
from mmanet.models.network import NetOutput
from mmanet.registry import Registry

if TYPE_CHECKING:
    from mmanet.training.module import MultimodalModule


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
            module.print(
                f"MAR: strong modalities {list(self.miner.strong_modalities)}; weak set = the "
                f"{len(self.miner.weak_set)} combinations without them"
            )

    def extra_losses(self, step: StepBatch) -> dict[str, Tensor]:
        module, cfg = self.module, self.module.config
        losses: dict[str, Tensor] = {}
        if cfg.mad_active or cfg.kd_active:
            teacher_out = module.teacher.forward_all(step.inputs, step.present)  # complete modalities
            if cfg.mad_active:
                weight = cfg.mad.alpha if module.current_epoch >= cfg.mad.start_epoch else 0.0
                losses["mad"] = weight * self.mad_term(step.out, teacher_out)
            if cfg.kd_active:
                losses["kd"] = cfg.kd.gamma * kd_loss(
                    step.out.logits, teacher_out.logits, temperature=cfg.kd.temperature
                )
        if module.reg_head is not None:
            weak = self.weak_mask(step.mask)
            losses["mar"] = cfg.mar.beta * self.mar_term(step, weak)
            module.log("train/weak_fraction", weak.float().mean(), on_step=False, on_epoch=True)
        return losses

    def mar_term(self, step: StepBatch, weak: Tensor) -> Tensor:
        """``L_MAR = (1/B) Σ_i m_i CE(p^r_i, y_i)`` over the B labelled rows (unweighted).

        The regularization head runs on the weak labelled rows only — the only rows with a non-zero
        term — so its cost follows the weak fraction. Before ω (or with no weak row) it runs on two
        rows at zero weight: every parameter stays in the graph, as DDP needs.
        """
        head, fused = self.module.reg_head, step.out.fused
        labelled = ~unlabelled_rows(step.target)  # MAR is a supervised loss: labelled rows only
        rows = (weak & labelled).nonzero().flatten()
        if rows.numel() == 0:
            probe = [f[: min(2, f.shape[0])] for f in fused]
            return head(probe).logits.sum() * 0.0
        reg_logits = head([f[rows] for f in fused]).logits
        every = torch.ones(rows.numel(), dtype=torch.bool, device=rows.device)
        mean_over_weak = mar_loss(reg_logits, step.target[rows], every, ignore_index=self.module.ignore_index)
        return mean_over_weak * (rows.numel() / labelled.sum().clamp_min(1))

    def mad_term(self, student: NetOutput, teacher: NetOutput) -> Tensor:
        """``L_MAD`` (DESIGN §4.1) of the configured feature, variant and reduction (unweighted)."""
        cfg = self.module.config.mad
        student_f, teacher_f = student.feature(cfg.feature), teacher.feature(cfg.feature)
        if self.module.info.task == "segmentation":  # every pixel of the pooled map is a sample
            size = tuple(cfg.pool_size) if cfg.pool_size else tuple(student_f.shape[2:])
            student_f, teacher_f = F.adaptive_avg_pool2d(student_f, size), F.adaptive_avg_pool2d(teacher_f, size)
            return mad_loss(
                student_f, teacher_f, teacher.logits, variant=cfg.variant, per_pixel=True, reduction=cfg.reduction
            )
        return mad_loss(student_f, teacher_f, teacher.logits, variant=cfg.variant, reduction=cfg.reduction)

    def state_dict(self) -> dict[str, Any]:
        return {"miner": self.miner.state_dict()} if self.miner is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.miner is not None and "miner" in state:
            self.miner.load_state_dict(state["miner"])
            if self.miner.weak_set is not None:
                self.weak_set = self.miner
