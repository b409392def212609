"""The Lightning module for every training stage (DESIGN §4.3).

Stages:
* ``teacher``    — complete modalities (δ = present), L_task.
* ``customized`` — SF: one fixed combination for the whole run, L_task.
* ``unified``    — SF-MD and the fusion baselines: modality dropout, L_task (+ fusion aux losses).
* ``mmanet``     — modality dropout, L = L_task + α·L_MAD + β·L_MAR (Eq. 1) against a frozen teacher.

The training step only wires pure loss functions; every term is logged under ``train/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.config import RunConfig
from mmanet.metrics import PerCombinationEvaluator
from mmanet.modality import Combination, ModalityDropout, ModalitySpec, all_combinations
from mmanet.models.network import MultimodalNet
from mmanet.training.teacher import FrozenTeacher

LOWER_IS_BETTER = {"error": True, "acer": True, "miou": False}


@dataclass(frozen=True)
class TaskInfo:
    """What the module needs to know about the data (from :class:`~mmanet.data.DataBundle`)."""

    spec: ModalitySpec
    num_classes: int
    input_shapes: dict[str, tuple[int, ...]]
    task: str = "classification"
    bona_fide_class: int | None = None
    ignore_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "modalities": list(self.spec.names),
            "num_classes": self.num_classes,
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "task": self.task,
            "bona_fide_class": self.bona_fide_class,
            "ignore_index": self.ignore_index,
        }

    def evaluator(self, combinations: list[Combination] | None = None) -> PerCombinationEvaluator:
        """A per-combination evaluator with this task's metric (all combinations by default)."""
        return PerCombinationEvaluator(
            self.spec,
            self.num_classes,
            combinations,
            task=self.task,
            bona_fide_class=self.bona_fide_class,
            ignore_index=self.ignore_index,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskInfo:
        return cls(
            spec=ModalitySpec(tuple(d["modalities"])),
            num_classes=int(d["num_classes"]),
            input_shapes={k: tuple(v) for k, v in d["input_shapes"].items()},
            task=d.get("task", "classification"),
            bona_fide_class=d.get("bona_fide_class"),
            ignore_index=d.get("ignore_index"),
        )


def monitor_name(info: TaskInfo) -> tuple[str, str]:
    """(logged validation key, 'min'|'max') used for best-checkpoint selection."""
    from mmanet.metrics import primary_metric

    metric = primary_metric(info.task, info.bona_fide_class)
    return f"val/avg_{metric}", "min" if LOWER_IS_BETTER[metric] else "max"


class MultimodalModule(L.LightningModule):
    def __init__(
        self,
        net: MultimodalNet,
        config: RunConfig,
        info: TaskInfo,
        combination: Combination | None = None,
        teacher: FrozenTeacher | None = None,
        mining_loader_factory=None,
    ) -> None:
        super().__init__()
        self.net = net
        self.config = config
        self.info = info
        self.stage = config.stage
        self.combination = combination
        if self.stage == "customized" and combination is None:
            raise ValueError("the customized stage needs a combination")
        if self.stage == "mmanet" and teacher is None:
            raise ValueError("the mmanet stage needs a teacher")
        self._teacher = [teacher] if teacher is not None else []  # a list: not a submodule, not in DDP
        self.dropout = ModalityDropout(
            info.spec, mode=config.dropout.mode, p=config.dropout.p, never_drop=config.dropout.never_drop
        )
        self._mining_loader_factory = mining_loader_factory
        self.miner = None
        self.weak_set = None
        self.reg_head: nn.Module | None = None
        if self.stage == "mmanet":
            self._setup_mar()
        if self.stage == "customized":
            eval_combos = [combination]
        elif self.stage == "teacher":
            eval_combos = [info.spec.full]
        else:
            eval_combos = all_combinations(info.spec)
        self.val_evaluator = info.evaluator(eval_combos)
        self.monitor, self.monitor_mode = monitor_name(info)

    # ------------------------------------------------------------------ MMANet parts
    @property
    def teacher(self) -> FrozenTeacher | None:
        return self._teacher[0] if self._teacher else None

    def _setup_mar(self) -> None:
        from mmanet.losses import FixedWeakSet, WeakCombinationMiner, single_modality_weak_set

        mode = self.config.mar.mode
        if mode == "off":
            return
        self.reg_head = self.net.new_head()
        if mode == "single":
            self.weak_set = FixedWeakSet(single_modality_weak_set(self.info.spec))
        else:
            self.miner = WeakCombinationMiner(
                self.info.spec, num_strong=self.config.mar.num_strong, ignore_index=self._ignore_index
            )

    @property
    def _ignore_index(self) -> int:
        """The void label of the task (-100, PyTorch's "none", when the data has no void label)."""
        return -100 if self.info.ignore_index is None else self.info.ignore_index

    def _mar_active(self) -> bool:
        return self.reg_head is not None and self.current_epoch >= self.config.mar.warmup_epochs

    def _weak_mask(self, keep: Tensor) -> Tensor:
        if self.weak_set is None:
            return torch.zeros(keep.shape[0], dtype=torch.bool, device=keep.device)
        return self.weak_set.weak_mask(keep)

    def on_train_epoch_start(self) -> None:
        if self.miner is not None and self.current_epoch >= self.config.mar.warmup_epochs and self.weak_set is None:
            self.miner.select()
            self.weak_set = self.miner
            self.print(
                f"MAR: strong modalities {list(self.miner.strong_modalities)}; weak set = the "
                f"{len(self.miner.weak_set)} combinations without them"
            )

    def on_train_epoch_end(self) -> None:
        if self.miner is not None and self.current_epoch < self.config.mar.warmup_epochs:
            if self._mining_loader_factory is None:
                raise RuntimeError("MAR mining needs a mining data loader")
            discrepancies = self.miner.mine_and_record(self.net, self._mining_loader_factory(), self.current_epoch)
            for name, value in discrepancies.items():
                self.log(f"mar/kl_{name}", float(value), on_epoch=True, sync_dist=False)

    # ------------------------------------------------------------------ training
    def task_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.info.task == "segmentation":
            return F.cross_entropy(logits, target, ignore_index=self._ignore_index)
        return F.cross_entropy(logits, target)

    def training_mask(self, present: Tensor) -> Tensor:
        if self.stage == "teacher":
            return present
        if self.stage == "customized":
            assert self.combination is not None
            return present & self.combination.mask(present.device)
        return self.dropout(present)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        inputs, present, target = batch
        mask = self.training_mask(present)
        keep = mask.any(dim=1)
        if not bool(keep.all()):  # customized stage on data with genuinely missing modalities
            inputs = {k: v[keep] for k, v in inputs.items()}
            mask, present, target = mask[keep], present[keep], target[keep]
        features = self.net.encode(inputs)
        out = self.net.fuse_predict(features, mask)
        losses: dict[str, Tensor] = {"task": self.task_loss(out.logits, target)}
        aux = self.net.fusion.auxiliary_losses(features, mask, target, self.task_loss)
        for name, value in aux.items():
            losses[name] = self.config.train.aux_weight * value
        if self.stage == "mmanet":
            losses.update(self._mmanet_losses(inputs, present, mask, target, out))
        total = torch.stack(list(losses.values())).sum()
        batch_size = target.shape[0]
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), on_step=False, on_epoch=True, batch_size=batch_size)
        self.log("train/loss", total.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size)
        return total

    def _mmanet_losses(self, inputs, present, mask, target, out) -> dict[str, Tensor]:
        from mmanet.losses import mad_loss, mar_loss

        losses: dict[str, Tensor] = {}
        cfg = self.config
        if cfg.mad.variant != "off" and cfg.mad.alpha > 0:
            teacher_out = self.teacher.forward_all(inputs, present)
            feature = cfg.mad.feature
            student_f = out.embedding if feature == "embedding" else out.fused
            teacher_f = teacher_out.embedding if feature == "embedding" else teacher_out.fused
            weight = cfg.mad.alpha if self.current_epoch >= cfg.mad.start_epoch else 0.0
            losses["mad"] = weight * mad_loss(student_f, teacher_f, teacher_out.logits, variant=cfg.mad.variant)
        if self.reg_head is not None:
            # The regularization head runs every step (zero weight before ω) so DDP sees all parameters.
            _, reg_logits = self.reg_head(out.fused)
            weak = self._weak_mask(mask) if self._mar_active() else torch.zeros_like(target, dtype=torch.bool)
            losses["mar"] = cfg.mar.beta * mar_loss(reg_logits, target, weak, ignore_index=self._ignore_index)
            self.log("train/weak_fraction", weak.float().mean(), on_step=False, on_epoch=True)
        return losses

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self.val_evaluator.to(self.device)
        self.val_evaluator.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        inputs, present, target = batch
        self.val_evaluator.update(self.net, inputs, present, target)

    def on_validation_epoch_end(self) -> None:
        table = self.val_evaluator.compute()
        avg = table.average()
        self.log(self.monitor, avg[table.metric], prog_bar=True, sync_dist=False)
        if len(table.rows) > 1:
            worst = table.worst(1)[0]
            self.log(f"val/worst_{table.metric}", worst[1], sync_dist=False)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        cfg = self.config.train
        params = [p for p in self.parameters() if p.requires_grad]
        if cfg.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        if cfg.scheduler == "none":
            return optimizer
        max_epochs = self.trainer.max_epochs if self.trainer is not None else cfg.max_epochs
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(max_epochs)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------ checkpoints
    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta: dict[str, Any] = {
            "config": self.config.model_dump(mode="json"),
            "info": self.info.to_dict(),
            "stage": self.stage,
            "combination": self.combination.name if self.combination is not None else None,
        }
        if self.teacher is not None:
            meta["teacher"] = self.teacher.reference()
        if self.miner is not None:
            meta["miner"] = self.miner.state_dict()
        checkpoint["mmanet"] = meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("mmanet", {})
        if self.miner is not None and "miner" in meta:
            self.miner.load_state_dict(meta["miner"])
            if self.miner.weak_set is not None:
                self.weak_set = self.miner
