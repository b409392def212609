"""PASSION (Shi et al., ACM MM 2024) as a plug-in on a fusion baseline (RFNet by default; mmFormer with
``model.fusion: mmformer``), for training data whose modalities are missing at imbalanced rates:

    L = L_task + (the fusion's auxiliary losses) + λ_kl · Σ_m β_m · KL_m + λ_proto · Σ_m [rp_m > 0] · proto_m

``KL_m`` distils the multimodal prediction into the single-modality path of modality ``m`` (the same fusion
and head run with ``m`` alone), ``proto_m`` aligns that path's class-prototype similarities with the
multimodal ones; both are means over the samples that have ``m`` this step, so a rarely available modality
weighs as much as a common one (their inverse-frequency ``modal_weight``). The preference ``rp_m`` (does
``m`` lag the others in this batch?) gates ``proto_m``; the weights ``β`` follow each epoch's mean
distances (:func:`mmanet.losses.passion.updated_betas`). Terms and updates start at ``passion.start_epoch``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mmanet.distributed import all_reduce_sum
from mmanet.losses.passion import authors_kl, per_sample_kd, preference, prototype_terms, updated_betas
from mmanet.methods.base import EpochEndHook, Method, StepContext, no_void_label, register_method
from mmanet.methods.supervised import fusion_preset

if TYPE_CHECKING:
    from mmanet.config import RunConfig
    from mmanet.data import DataBundle
    from mmanet.models.network import MultimodalNet
    from mmanet.task import TaskInfo


@register_method("passion", {**fusion_preset("rfnet"), "passion": {}}, "PASSION on RFNet (mmFormer by option)")
class Passion(Method):
    """PASSION's self-distillation and preference-aware regularization (module docstring)."""

    def __init__(self, config: RunConfig, info: TaskInfo, net: MultimodalNet, **kwargs: Any) -> None:
        super().__init__(config, info, net, **kwargs)
        count = len(info.spec)
        self.beta = torch.ones(count, dtype=torch.float64)
        self.eta = config.passion.eta
        #: Σ dist and counts per modality over the current epoch (the β update reads their means)
        self.dist_sums = torch.zeros(count, dtype=torch.float64)
        self.dist_counts = torch.zeros(count, dtype=torch.float64)
        self.ignore = -1 if info.task == "classification" else no_void_label(info.ignore_index)

    @classmethod
    def feature_keys(cls, config: RunConfig) -> dict[str, list[str]]:
        return {"passion.feature": [config.passion.feature]}

    def training_mask(self, present: Tensor, dropout: Callable[[Tensor], Tensor]) -> Tensor:
        """``idt``: the data's own masks (the missing rates do the dropping); ``idt_moddrop``: dropout on top."""
        return present if self.config.passion.mask == "idt" else dropout(present)

    # ------------------------------------------------------------------ the loss
    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        terms = super().loss_terms(ctx)
        cfg = self.config.passion
        if ctx.epoch < cfg.start_epoch:
            zero = ctx.out.logits.sum() * 0.0
            return {**terms, "passion_kl": zero, "passion_proto": zero}
        b, count = ctx.mask.shape
        kl_terms, proto_terms = [], []
        dist = torch.zeros(b, count, device=ctx.mask.device)
        teacher_feature = ctx.out.feature(cfg.feature)
        for m in range(count):
            rows = ctx.mask[:, m]
            if not bool(rows.any()):
                kl_terms.append(ctx.out.logits.sum() * 0.0)
                proto_terms.append(ctx.out.logits.sum() * 0.0)
                continue
            alone = torch.zeros_like(ctx.mask)
            alone[:, m] = True  # every row, as the authors' code: the rows without m are read by nothing
            single = ctx.net.fuse_predict(ctx.features, alone)
            distil = authors_kl if cfg.kl_form == "authors" else per_sample_kd
            kd = distil(single.logits[rows], ctx.out.logits[rows], temperature=cfg.temperature)
            proto, distance = prototype_terms(
                single.feature(cfg.feature)[rows], teacher_feature[rows], ctx.target[rows], ignore=self.ignore
            )
            kl_terms.append(kd.mean())
            proto_terms.append(proto.mean())
            dist[rows, m] = distance
        lagging = (preference(dist, ctx.mask) > 0).float()
        beta = self.beta.to(ctx.mask.device, torch.float32)
        terms["passion_kl"] = cfg.kl_weight * (beta * torch.stack(kl_terms)).sum()
        terms["passion_proto"] = cfg.proto_weight * (lagging * torch.stack(proto_terms)).sum()
        self._gather(dist, ctx.mask)
        return terms

    @torch.no_grad()
    def _gather(self, dist: Tensor, available: Tensor) -> None:
        self.dist_sums = self.dist_sums.to(dist.device) + (dist * available).sum(dim=0).double()
        self.dist_counts = self.dist_counts.to(dist.device) + available.sum(dim=0).double()

    # ------------------------------------------------------------------ the epoch update of β
    def update_betas(self, epoch: int, log: Callable[[str, float], None]) -> None:
        cfg = self.config.passion
        sums, counts = all_reduce_sum(self.dist_sums, self.dist_counts)
        self.dist_sums, self.dist_counts = torch.zeros_like(self.dist_sums), torch.zeros_like(self.dist_counts)
        if epoch < cfg.start_epoch:
            return
        if epoch % cfg.eta_every == 0:
            self.eta *= cfg.eta_growth
        mean_dist = torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros_like(sums)).cpu()
        self.beta = updated_betas(self.beta, mean_dist, self.eta)
        for m, name in enumerate(self.info.spec.names):
            log(f"train/passion_beta_{name}", float(self.beta[m]))

    def epoch_end_hooks(self, net: MultimodalNet, bundle: DataBundle) -> list[EpochEndHook]:
        return [self.update_betas]

    # ------------------------------------------------------------------ state and results
    def state_dict(self) -> dict[str, Any]:
        return {
            "passion": {
                "modalities": list(self.info.spec.names),
                "beta": self.beta.tolist(),
                "eta": self.eta,
                "dist_sums": self.dist_sums.cpu().tolist(),
                "dist_counts": self.dist_counts.cpu().tolist(),
            }
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "passion" not in state:
            return
        saved = state["passion"]
        self.beta = torch.tensor(saved["beta"], dtype=torch.float64)
        self.eta = float(saved["eta"])
        self.dist_sums = torch.tensor(saved["dist_sums"], dtype=torch.float64)
        self.dist_counts = torch.tensor(saved["dist_counts"], dtype=torch.float64)

    @classmethod
    def results_of(cls, state: Mapping[str, Any]) -> dict[str, Any]:
        saved = state.get("passion") or {}
        if "beta" not in saved:
            return {}
        return {"passion_beta": dict(zip(saved["modalities"], saved["beta"], strict=True))}
