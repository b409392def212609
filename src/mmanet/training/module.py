"""The Lightning module shared by every training stage (DESIGN §4.3).

The training step only wires pure loss functions; what differs between stages (the
training mask, the validated combinations, extra loss terms) is the stage strategy's
(:mod:`mmanet.training.stages`). Every loss term is logged under ``train/``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.config import RunConfig
from mmanet.data.base import unlabelled_rows
from mmanet.modality import Combination, ModalityDropout
from mmanet.models.network import MultimodalNet
from mmanet.task import TaskInfo
from mmanet.training.schedules import LearningRateFactor, make_scheduler
from mmanet.training.stages import STAGES, StepBatch, labels_at
from mmanet.training.teacher import FrozenTeacher

__all__ = ["MultimodalModule", "TaskInfo"]


class MultimodalModule(L.LightningModule):
    def __init__(
        self,
        net: MultimodalNet,
        config: RunConfig,
        info: TaskInfo,
        combination: Combination | None = None,
        teacher: FrozenTeacher | None = None,
        class_weights: Tensor | None = None,
    ) -> None:
        super().__init__()
        #: per-class weights of the segmentation loss (median frequency), or None
        self.class_weights = class_weights
        self.net = net
        self.config = config
        self.info = info
        self.combination = combination
        self._teacher = [teacher] if teacher is not None else []  # a list: not a submodule, not in DDP
        self.dropout = ModalityDropout(
            info.spec, mode=config.dropout.mode, p=config.dropout.p, never_drop=config.dropout.never_drop
        )
        #: the MAR regularization head (mmanet stage); trained, checkpointed, never deployed
        self.reg_head: nn.Module | None = None
        self.stage = STAGES.get(config.stage)(self)
        self.val_evaluator = info.evaluator(self.stage.eval_combinations())
        self.monitor, self.monitor_mode = info.monitor()

    @property
    def teacher(self) -> FrozenTeacher | None:
        return self._teacher[0] if self._teacher else None

    @property
    def miner(self):
        """The MAR miner of the mmanet stage (None otherwise); the mining callback records into it."""
        return getattr(self.stage, "miner", None)

    @property
    def ignore_index(self) -> int:
        """The void label of the task (-100, PyTorch's "none", when the data has no void label)."""
        return -100 if self.info.ignore_index is None else self.info.ignore_index

    # ------------------------------------------------------------------ training
    def task_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy; classification: the mean over the labelled rows (unlabelled samples have label
        -1); segmentation: per pixel, void ignored, optional class weights, and logits at another scale
        than the labels meet nearest-resized labels (side outputs)."""
        if self.info.task == "segmentation":
            target = labels_at(logits, target)
            weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
            return F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)
        unlabelled = unlabelled_rows(target)
        if bool(unlabelled.any()):  # unlabelled samples (label -1) only serve the distillation terms
            if bool(unlabelled.all()):
                return logits.sum() * 0.0  # keeps every parameter in the graph (DDP)
            return F.cross_entropy(logits[~unlabelled], target[~unlabelled])
        return F.cross_entropy(logits, target)

    def on_train_epoch_start(self) -> None:
        self.stage.on_train_epoch_start()

    def training_step(self, batch, batch_idx: int) -> Tensor:
        inputs, present, target = batch
        mask = self.stage.training_mask(present)
        keep = mask.any(dim=1)
        if not bool(keep.all()):  # customized stage on data with genuinely missing modalities
            inputs = {k: v[keep] for k, v in inputs.items()}
            mask, present, target = mask[keep], present[keep], target[keep]
        features = self.net.encode(inputs, mask)
        out = self.net.fuse_predict(features, mask)
        losses: dict[str, Tensor] = {"task": self.task_loss(out.logits, target)}
        if out.aux_logits:  # multi-scale supervision of a decoder's side outputs (ESANet)
            losses["deep_supervision"] = sum(self.task_loss(side, target) for side in out.aux_logits)
        for name, value in self.net.auxiliary_losses(features, mask, target, self.task_loss).items():
            losses[name] = self.config.train.aux_weight * value
        losses.update(self.stage.extra_losses(StepBatch(inputs, present, mask, target, out)))
        total = torch.stack(list(losses.values())).sum()
        batch_size = target.shape[0]
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), on_step=False, on_epoch=True, batch_size=batch_size)
        self.log("train/loss", total.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size)
        return total

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
            optimizer = torch.optim.SGD(
                params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
            )
        if cfg.scheduler == "none" and cfg.warmup_epochs == 0:
            return optimizer
        trainer = self._trainer  # LightningModule.trainer raises when the module is not attached
        max_epochs = trainer.max_epochs if trainer is not None else cfg.max_epochs
        factor = LearningRateFactor(
            cfg.scheduler, int(max_epochs), cfg.warmup_epochs, tuple(cfg.milestones), cfg.lr_gamma
        )
        scheduler = make_scheduler(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------ checkpoints
    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta: dict[str, Any] = {
            "config": self.config.model_dump(mode="json"),
            "info": self.info.to_dict(),
            "stage": self.config.stage,
            "combination": self.combination.name if self.combination is not None else None,
        }
        if self.teacher is not None:
            meta["teacher"] = self.teacher.reference()
        meta.update(self.stage.state_dict())
        checkpoint["mmanet"] = meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.stage.load_state_dict(checkpoint.get("mmanet", {}))
