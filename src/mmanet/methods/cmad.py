"""CMAD (Zhuang et al., ICCV 2025): MMANet's successor — a frozen teacher trained on complete data, then
one deployment network trained under modality dropout with

    L = Σ_i w_c(i) · CE_i / B  +  δ · L_CAFD  +  γ · Σ_i w_c(i) · kd_i / B          (losses/cmad.py)

``c(i)`` is the combination sample ``i`` is trained under this step. The weights ``w_c`` (CMAD's
modality-aware regularization) are 1 until ``cmad.begin_epoch``; from then on
``w_c = scale · (d̄_c / max d̄)²``, where ``d̄_c`` averages ``max(0, CE^student_i − CE^teacher_i)`` over the
samples trained under ``c`` in the epochs before (``update: once``, the authors' code) or in the epoch
before (``update: every_epoch``). Hard combinations — where the student trails the teacher most — weigh
most; a combination where the student already matches the teacher gets weight 0.

The teacher terms (CAFD, KD and the teacher's CE for the weights) use the rows whose data is complete
(``teacher.distill_samples``), as for the MMANet family; the task term uses every labelled row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmanet.data import DataError
from mmanet.data.base import UNLABELLED
from mmanet.distributed import all_reduce_sum
from mmanet.losses.cmad import cafd_loss, combination_weights, per_sample_kd
from mmanet.methods.base import EpochEndHook, Method, StepContext, labels_at, no_void_label, register_method
from mmanet.methods.mmanet import MMANet, _select_rows
from mmanet.methods.supervised import fusion_preset
from mmanet.modality import all_combinations

if TYPE_CHECKING:
    from mmanet.config import RunConfig
    from mmanet.data import DataBundle
    from mmanet.models.network import MultimodalNet
    from mmanet.task import TaskInfo

_OFF = {"mad": {"variant": "off"}, "mar": {"mode": "off"}, "kd": {"gamma": 0.0}}


@register_method("cmad", {**fusion_preset("concat"), **_OFF, "cmad": {}}, "CMAD: CAFD + combination-weighted CE and KD")
class CMAD(MMANet):
    """CMAD against a frozen teacher (module docstring); MMANet's MAD, MAR and KD are off."""

    def __init__(self, config: RunConfig, info: TaskInfo, net: MultimodalNet, **kwargs: Any) -> None:
        super().__init__(config, info, net, **kwargs)  # the teacher, the task loss (MAD, MAR, KD are off)
        self.combinations = all_combinations(info.spec)
        lookup = torch.full((2 ** len(info.spec),), -1, dtype=torch.long)
        for k, combo in enumerate(self.combinations):
            lookup[combo.bits()] = k
        self._lookup = lookup
        count = len(self.combinations)
        #: Σ max(0, CE^d − CE^t) and sample counts per combination, gathered since the last update
        self.gap_sums = torch.zeros(count, dtype=torch.float64)
        self.counts = torch.zeros(count, dtype=torch.float64)
        #: w_c (None: all 1, before cmad.begin_epoch)
        self.weights: Tensor | None = None
        self.ignore_index = no_void_label(info.ignore_index)

    @classmethod
    def feature_keys(cls, config: RunConfig) -> dict[str, list[str]]:
        return {"cmad.feature": [config.cmad.feature]}

    # ------------------------------------------------------------------ the loss
    def combination_index(self, mask: Tensor) -> Tensor:
        """``(B,)``: the index in :func:`all_combinations` order of each row's training combination."""
        bits = (mask.long() * (2 ** torch.arange(mask.shape[1], device=mask.device))).sum(dim=1)
        return self._lookup.to(mask.device)[bits]

    def per_sample_ce(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``(CE_i, labelled_i)``: each sample's cross-entropy (segmentation: the class-weighted mean over its
        labelled pixels) and whether it has a label (an unlabelled or all-void sample has CE 0)."""
        weight = self.task_loss.class_weights
        if logits.dim() == 2:
            labelled = target != UNLABELLED
            return F.cross_entropy(logits, target.clamp(min=0), reduction="none") * labelled, labelled
        target = labels_at(logits, target)
        weight = weight.to(logits.device) if weight is not None else None
        pixels = F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        pixel_weight = valid.float() if weight is None else weight[torch.where(valid, target, 0)] * valid
        denominator = pixel_weight.flatten(1).sum(dim=1)
        labelled = denominator > 0
        return pixels.flatten(1).sum(dim=1) / denominator.clamp(min=1e-12), labelled

    def combination_weight_of(self, index: Tensor) -> Tensor:
        if self.weights is None:
            return torch.ones(index.shape[0], device=index.device)
        return self.weights.to(index.device, torch.float32)[index]

    def task_term(self, ctx: StepContext) -> Tensor:
        """``Σ_i w_c(i) · CE_i / n_labelled``."""
        ce, labelled = self.per_sample_ce(ctx.out.logits, ctx.target)
        return (self.combination_weight_of(self.combination_index(ctx.mask)) * ce).sum() / labelled.sum().clamp(min=1)

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        # Method's terms, not MMANet's: a config's mad/mar/kd sections (a benchmark base) never add MMANet's
        # terms to CMAD; the task term is :meth:`task_term`; deep supervision and fusion terms stay
        terms = Method.loss_terms(self, ctx)
        cfg = self.config.cmad
        index = self.combination_index(ctx.mask)
        w = self.combination_weight_of(index)
        rows = self.distillation_rows(ctx.present)
        if rows is not None and rows.numel() == 0:  # no complete sample in this batch: nothing to distil
            terms["cafd"] = ctx.out.logits.sum() * 0.0
            terms["kd"] = ctx.out.logits.sum() * 0.0
            return terms
        student, inputs, present = ctx.out, ctx.inputs, ctx.present
        if rows is not None:
            student = _select_rows(ctx.out, rows)
            inputs, present = {k: v[rows] for k, v in inputs.items()}, present[rows]
            index, w = index[rows], w[rows]
        assert self.teacher is not None
        teacher = self.teacher.forward_all(inputs, present)
        kd = per_sample_kd(student.logits, teacher.logits, temperature=cfg.temperature)
        terms["kd"] = cfg.gamma * (w * kd).mean()
        s_feature, t_feature = student.feature(cfg.feature), teacher.feature(cfg.feature)
        if s_feature.shape[0] >= 2:
            terms["cafd"] = cfg.delta * cafd_loss(_per_sample(s_feature), _per_sample(t_feature), tau=cfg.tau)
        else:  # no correlation between samples to align
            terms["cafd"] = s_feature.sum() * 0.0
        self._gather(ctx.epoch, index, student.logits, teacher.logits, ctx.target if rows is None else ctx.target[rows])
        return terms

    @torch.no_grad()
    def _gather(
        self, epoch: int, index: Tensor, student_logits: Tensor, teacher_logits: Tensor, target: Tensor
    ) -> None:
        """Add this step's ``max(0, CE^d − CE^t)`` per combination to the statistics the next update reads."""
        if self.config.cmad.update == "once" and epoch >= self.config.cmad.begin_epoch:
            return  # the weights are fixed
        ce, labelled = self.per_sample_ce(student_logits.detach().float(), target)
        teacher_ce, _ = self.per_sample_ce(teacher_logits.detach().float(), target)
        gap = torch.relu(ce - teacher_ce)[labelled]
        where = index[labelled]
        self.gap_sums = self.gap_sums.to(gap.device).index_add(0, where, gap.double())
        self.counts = self.counts.to(gap.device).index_add(0, where, torch.ones_like(gap, dtype=torch.float64))

    # ------------------------------------------------------------------ the weights
    def update_weights(self, epoch: int, log: Callable[[str, float], None]) -> None:
        """After epoch ``epoch``: the weights the next epoch trains with (module docstring)."""
        cfg = self.config.cmad
        due = epoch + 1 == cfg.begin_epoch or (cfg.update == "every_epoch" and epoch + 1 > cfg.begin_epoch)
        if not due:
            return
        sums, counts = all_reduce_sum(self.gap_sums, self.counts)
        self.weights = combination_weights(sums, counts, scale=cfg.weight_scale).cpu()
        self.gap_sums, self.counts = torch.zeros_like(self.gap_sums), torch.zeros_like(self.counts)
        log("train/cmad_weight_max", float(self.weights.max()))
        log("train/cmad_weight_zero", float((self.weights == 0).float().mean()))

    def epoch_end_hooks(self, net: MultimodalNet, bundle: DataBundle) -> list[EpochEndHook]:
        return [self.update_weights]

    def on_train_epoch_start(self, epoch: int, say: Callable[[str], None]) -> None:
        if epoch == self.config.cmad.begin_epoch and self.weights is not None:
            hardest = sorted(zip(self.weights.tolist(), self.combinations, strict=True), key=lambda p: -p[0])[:3]
            heaviest = ", ".join(f"{c.name} {w:.2f}" for w, c in hardest)
            say(f"CMAD combination weights from now on; the heaviest: {heaviest}")

    # ------------------------------------------------------------------ state and results
    def state_dict(self) -> dict[str, Any]:
        """Plain Python types under ``cmad`` (checkpoints: exact resume of the gathered gaps and the weights)."""
        return {
            "cmad": {
                "combinations": [c.name for c in self.combinations],
                "gap_sums": self.gap_sums.cpu().tolist(),
                "counts": self.counts.cpu().tolist(),
                "weights": None if self.weights is None else self.weights.tolist(),
            }
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "cmad" not in state:
            return
        saved = state["cmad"]
        names = [c.name for c in self.combinations]
        if list(saved.get("combinations", [])) != names:
            raise DataError(f"the checkpoint's CMAD state is for combinations {saved.get('combinations')}, not {names}")
        self.gap_sums = torch.tensor(saved["gap_sums"], dtype=torch.float64)
        self.counts = torch.tensor(saved["counts"], dtype=torch.float64)
        weights = saved.get("weights")
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.float64)

    @classmethod
    def results_of(cls, state: Mapping[str, Any]) -> dict[str, Any]:
        """``cmad_weights``: combination → w_c of the final state (None: the weights never started)."""
        saved = state.get("cmad") or {}
        weights = saved.get("weights")
        if weights is None:
            return {"cmad_weights": None}
        return {"cmad_weights": dict(zip(saved["combinations"], weights, strict=True))}


def _per_sample(feature: Tensor) -> Tensor:
    """``(B, D)``: a per-sample representation as it is; a ``(B, C, *S)`` map averaged over its positions."""
    return feature if feature.dim() == 2 else feature.flatten(2).mean(dim=2)
