"""A training module and one step of it, built the way the wiring and method tests need them (a teacher that
records its inputs, the step's context, loss and dropout mask, a spy for what the module logs)."""

from __future__ import annotations

import lightning as L
import torch

from mmanet.models.factory import build_net
from mmanet.training.factory import load_bundle, task_info
from mmanet.training.module import MultimodalModule
from mmanet.training.teacher import FrozenTeacher


class SpyTeacher(FrozenTeacher):
    """Records the presence mask the teacher is given."""

    seen: list[torch.Tensor]

    def forward_all(self, inputs, present):
        self.seen.append(present.clone())
        return super().forward_all(inputs, present)


def setup(tiny_config, method: str, **updates):
    cfg = tiny_config(method, model__dropout=0.0, **updates)
    bundle = load_bundle(cfg)
    info = task_info(bundle)
    torch.manual_seed(0)
    teacher = None
    if cfg.stage == "mmanet":
        teacher = SpyTeacher(build_net(cfg, info))
        teacher.seen = []
    module = MultimodalModule(build_net(cfg, info), cfg, info, teacher=teacher)
    module.train()
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=16)
    inputs, present, target = next(iter(loader))
    present = present.clone()
    present[:4, 0] = False  # some genuinely missing data: the teacher must see exactly this
    return cfg, module, (inputs, present, target)


def step_context(module, inputs, present, mask, target, out, epoch: int = 1):
    """The :class:`~mmanet.methods.StepContext` a training step of ``module`` hands its method."""
    from mmanet.methods import StepContext

    return StepContext(epoch, inputs, present, mask, target, list(out.features), out, module.net, module.task_loss,
                       lambda *args: None)  # fmt: skip


def step_and_mask(module, batch, seed: int = 7):
    """The step's total loss and the dropout mask it drew (reproduced from the same seed)."""
    torch.manual_seed(seed)
    total = module.training_step(batch, 0)
    torch.manual_seed(seed)
    mask = module.dropout(batch[1])
    return total, mask


def complete_rows(batch):
    """The rows of a batch whose data has every modality (``setup`` removes modality 0 from rows 0-3)."""
    return batch[1].all(dim=1).nonzero().flatten()


class LogSpy:
    """Stands in for ``LightningModule.log``: name → (value, keyword arguments)."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[torch.Tensor, dict]] = {}

    def __call__(self, name, value, **kwargs) -> None:
        self.calls[name] = (value, kwargs)


class CrashAtEpoch(L.Callback):
    """Stops a fit with ``RuntimeError("simulated crash")`` when epoch ``epoch`` starts (its checkpoints: the
    epochs before)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")
