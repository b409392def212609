"""The MMANet training step (teacher, MAD, MAR active) ÷ the SF-MD step on the SF image network."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from mmanet.models.factory import build_net
from mmanet.task import TaskInfo
from mmanet.training.module import MultimodalModule
from mmanet.training.teacher import FrozenTeacher
from perf.fixtures import SF_SHAPES, SF_SPEC, SF_WIDTH, config_of, sf_one
from perf.harness import bench, median_time, time_pair
from perf.macs import encoder_head_macs

warnings.filterwarnings("ignore", message=".*self.log.*")  # training_step called without a Trainer


class _BenchModule(MultimodalModule):
    """A module driven without a Trainer: a settable epoch, and print without a Trainer."""

    epoch = 0

    @property
    def current_epoch(self) -> int:  # type: ignore[override]
        return self.epoch

    def print(self, *args, **kwargs) -> None:
        pass


def _optimizer(module: MultimodalModule) -> torch.optim.Optimizer:
    """The optimizer ``configure_optimizers`` builds (its scheduler is not needed here)."""
    setup = module.configure_optimizers()
    return setup["optimizer"] if isinstance(setup, dict) else setup


def b_train_step(q: bool) -> None:
    batch_size = 8 if q else 16
    info = TaskInfo(SF_SPEC, 2, dict(SF_SHAPES), bona_fide_class=1)
    sfmd_cfg = config_of("configs/casia_surf/sf_md.yaml")
    mma_cfg = config_of("configs/casia_surf/mmanet.yaml")
    torch.manual_seed(0)
    sfmd = _BenchModule(build_net(sfmd_cfg, info), sfmd_cfg, info).train()
    teacher = FrozenTeacher(build_net(mma_cfg, info))
    mma = _BenchModule(build_net(mma_cfg, info), mma_cfg, info, teacher=teacher).train()
    # MAR active: epoch ω with a mined weak set (the memory bank filled with made-up discrepancies)
    mma.epoch = mma_cfg.mar.warmup_epochs
    miner = mma.method.mar.miner
    miner.record(0, {c.name: float(i) for i, c in enumerate(miner.leave_one_out)})
    mma.method.on_train_epoch_start(mma.epoch, lambda _message: None)
    g = torch.Generator().manual_seed(1)
    inputs = {m: torch.randn((batch_size, *SF_SHAPES[m]), generator=g) for m in SF_SPEC.names}
    present = torch.ones(batch_size, len(SF_SPEC), dtype=torch.bool)
    target = torch.randint(0, 2, (batch_size,), generator=g)
    batch = (inputs, present, target)

    def step(module: MultimodalModule) -> Callable[[], None]:
        opt = _optimizer(module)

        def run() -> None:
            torch.manual_seed(0)  # every step draws the same modality-dropout masks, in both modules
            opt.zero_grad(set_to_none=True)
            loss = module.training_step(batch, 0)
            loss.backward()
            opt.step()

        return run

    pair = time_pair(step(mma), step(sfmd), 3 if q else 5)
    # FLOP estimate: backward ≈ 2 × forward; the student encoders run on the kept rows only, the
    # teacher forward on every row, the regularization head (forward + backward) on every row (its
    # BatchNorm needs the whole batch; the cross-entropy is masked to the weak rows)
    torch.manual_seed(0)
    mask = sfmd.dropout(present)  # the mask every timed step used
    kept = float(mask.float().mean())
    weak = float(mma.method.mar.weak_mask(mask, mma.epoch).float().mean())
    e, t = encoder_head_macs(sfmd.net, sf_one())
    base = 3 * (kept * e + t)
    floor = (base + (e + t) + 3 * t) / base
    # the teacher's forward alone: inference_mode (as FrozenTeacher) vs no_grad, for information
    with torch.no_grad():
        tg = median_time(lambda: teacher.net.forward_all(inputs, present), 3)
    with torch.inference_mode():
        ti = median_time(lambda: teacher.net.forward_all(inputs, present), 3)
    bench(
        "train_step_overhead",
        pair.ratio,
        1.4,
        f"net=sf_resnet+resnet_trunk width={SF_WIDTH} input=3x3x112x112 batch={batch_size}"
        f"{'(quick;full_run_uses_16)' if q else ''} steps=training_step+backward+optimizer(sgd) "
        f"{pair.describe('mmanet', 'sf_md')} mad={mma_cfg.mad.variant}(feature={'+'.join(mma_cfg.mad.features)}) "
        f"mar=mined(active) "
        f"teacher_fwd_inference_mode={ti * 1e3:.0f}ms teacher_fwd_no_grad={tg * 1e3:.0f}ms kept_rows={kept:.2f} "
        f"weak_rows={weak:.2f} "
        f"est_flop_floor={floor:.2f}(bwd=2xfwd){' TARGET_BELOW_FLOP_FLOOR' if floor > 1.4 else ''}",
    )
