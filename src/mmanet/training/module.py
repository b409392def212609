"""The Lightning module: a thin adapter between Lightning and a training method (docs/design.md §4.3).

Each training step encodes and fuses the batch under the method's training mask and hands the
method a :class:`~mmanet.methods.StepContext`; the method returns its named, weighted loss terms,
which are summed and logged under ``train/``. What differs between recipes (the mask, the validated
combinations, the terms, extra modules such as MAR's head, callbacks, checkpoint state) is the
method's (:mod:`mmanet.methods`); the module holds no recipe logic and the method no reference back.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from mmanet.config import RunConfig
from mmanet.methods import StepContext, build_method
from mmanet.methods.base import no_void_label
from mmanet.modality import Combination, ModalityDropout
from mmanet.models.network import MultimodalNet
from mmanet.task import TaskInfo
from mmanet.training.schedules import LearningRateFactor, make_scheduler
from mmanet.training.teacher import FrozenTeacher
from mmanet.versioning import stamp

__all__ = ["MultimodalModule", "TaskInfo"]


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train.lr": 0.001, …}``: a dumped configuration as flat scalars (lists and None as text)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = str(value)
    return out


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
        #: the MAR regularization head (MMANet family); trained, checkpointed, never deployed
        self.reg_head: nn.Module | None = None
        self.method = build_method(
            config, info, net, combination=combination, teacher=teacher, class_weights=class_weights
        )
        for name, module in self.method.extra_modules().items():  # registered: trained, checkpointed, in DDP
            setattr(self, name, module)
        combinations = self.method.eval_combinations(info.spec, combination)
        self.val_evaluator = info.evaluator(combinations, config.evaluate.metric)
        self.monitor, self.monitor_mode = info.monitor(config.evaluate.metric)
        # the configuration as flat hyper-parameters: TensorBoard's HParams tab and the loggers' hparams.yaml
        self.save_hyperparameters(flat_hparams(config.model_dump(mode="json")))

    @property
    def teacher(self) -> FrozenTeacher | None:
        return self._teacher[0] if self._teacher else None

    @property
    def ignore_index(self) -> int:
        """The void label of the task (-100, PyTorch's "none", when the data has no void label)."""
        return no_void_label(self.info.ignore_index)

    # ------------------------------------------------------------------ training
    def task_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """The method's ``L_task`` (:class:`~mmanet.methods.TaskLoss`)."""
        return self.method.task_loss(logits, target)

    def on_train_epoch_start(self) -> None:
        self.method.on_train_epoch_start(self.current_epoch, self.print)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        inputs, present, target = batch
        mask = self.method.training_mask(present, self.dropout)
        keep = mask.any(dim=1)
        if not bool(keep.all()):  # customized model on data with genuinely missing modalities
            inputs = {k: v[keep] for k, v in inputs.items()}
            mask, present, target = mask[keep], present[keep], target[keep]
        features = self.net.encode(inputs, mask)
        out = self.net.fuse_predict(features, mask)
        context = StepContext(
            self.current_epoch, inputs, present, mask, target, features, out, self.net, self.task_loss, self._log_epoch
        )
        losses = self.method.loss_terms(context)
        total = torch.stack(list(losses.values())).sum()
        batch_size = target.shape[0]
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), on_step=False, on_epoch=True, batch_size=batch_size)
        self.log("train/loss", total.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size)
        return total

    def _log_epoch(self, name: str, value: Tensor) -> None:
        self.log(name, value, on_step=False, on_epoch=True)

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
            for combo, values in table.rows:  # every combination's curve (TensorBoard, metrics.csv)
                self.log(f"val_combination/{combo.name}", values[table.metric], sync_dist=False)

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
        meta.update(self.method.state_dict())
        meta.update(stamp())  # the writer's version and the layout (mmanet.versioning)
        checkpoint["mmanet"] = meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.method.load_state_dict(checkpoint.get("mmanet", {}))
