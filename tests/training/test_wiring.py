"""Wiring: what each loss term of a training step IS, computed independently of the module.

A loss function can be correct and never applied; these tests pin the terms a step adds up:
the MAD term is α · mad_loss(student feature, teacher feature, teacher logits) on the rows whose
data is complete (``teacher.distill_samples: complete``; every row with ``all``), the teacher fed
those rows' own presence mask; the MAR term is β · mar_loss on the weak samples only (and zero
before ω), with the regularization head run on the whole batch; the fusions' auxiliary losses
enter with ``train.aux_weight``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmanet.losses import mad_loss, mar_loss
from mmanet.models.factory import build_net
from mmanet.training.factory import load_bundle, task_info
from mmanet.training.module import MultimodalModule
from step_helpers import SpyTeacher, complete_rows, setup, step_and_mask


@pytest.mark.parametrize("distill", ["complete", "all"])
def test_mmanet_step_is_task_plus_alpha_mad_plus_beta_mar(tiny_config, at_epoch, distill):
    cfg, module, batch = setup(
        tiny_config, "sr", mad__alpha=0.7, mar__beta=0.3, mar__warmup_epochs=1, teacher__distill_samples=distill
    )
    inputs, present, target = batch
    at_epoch(1)  # ω = 1: MAR active
    total, mask = step_and_mask(module, batch)
    # independently: the student's pass under the drawn mask, the teacher's under the data's own mask,
    # on the complete rows (distill_samples: complete) or on every row (all)
    rows = complete_rows(batch) if distill == "complete" else torch.arange(target.shape[0])
    assert (distill == "complete") == (rows.numel() == 12)
    out = module.net.forward_all(inputs, mask)
    t_out = module.teacher.net.forward_all({k: v[rows] for k, v in inputs.items()}, present[rows])
    assert all(torch.equal(seen, present[rows]) for seen in module.teacher.seen) and module.teacher.seen
    task = F.cross_entropy(out.logits, target)
    name = cfg.mad.feature
    mad = mad_loss(out.feature(name)[rows], t_out.feature(name), t_out.logits, variant="paper")
    weak = mask.sum(dim=1) == 1  # SR: the single-modality combinations
    assert weak.any() and not weak.all()
    mar = mar_loss(module.reg_head(out.fused).logits, target, weak)
    assert mad > 0 and mar > 0
    torch.testing.assert_close(total, task + 0.7 * mad + 0.3 * mar)


def test_mar_term_is_zero_before_omega_and_only_weak_samples_get_gradient(tiny_config, at_epoch):
    cfg, module, batch = setup(tiny_config, "sr", mad__variant="off", mar__warmup_epochs=2)
    at_epoch(1)  # before ω
    total, mask = step_and_mask(module, batch)
    out = module.net.forward_all(batch[0], mask)
    torch.testing.assert_close(total, F.cross_entropy(out.logits, batch[2]))
    at_epoch(2)
    total, mask = step_and_mask(module, batch)
    module.zero_grad()
    weak = mask.sum(dim=1) == 1
    reg_logits = module.reg_head(module.net.forward_all(batch[0], mask).fused).logits
    reg_logits.retain_grad()
    mar_loss(reg_logits, batch[2], weak).backward()
    assert torch.all(reg_logits.grad[~weak] == 0) and torch.any(reg_logits.grad[weak] != 0)
    assert total > F.cross_entropy(module.net.forward_all(batch[0], mask).logits, batch[2])


def test_mad_weight_is_applied_from_its_start_epoch(tiny_config, at_epoch):
    cfg, module, batch = setup(tiny_config, "mad", mad__alpha=2.0, mad__start_epoch=1)
    at_epoch(0)
    total0, mask = step_and_mask(module, batch)
    out = module.net.forward_all(batch[0], mask)
    torch.testing.assert_close(total0, F.cross_entropy(out.logits, batch[2]))
    at_epoch(1)
    total1, mask = step_and_mask(module, batch)
    out = module.net.forward_all(batch[0], mask)
    rows = complete_rows(batch)
    t_out = module.teacher.net.forward_all({k: v[rows] for k, v in batch[0].items()}, batch[1][rows])
    mad = mad_loss(out.embedding[rows], t_out.embedding, t_out.logits)
    torch.testing.assert_close(total1, F.cross_entropy(out.logits, batch[2]) + 2.0 * mad)


@pytest.mark.parametrize("method", ["lcr", "rfnet", "mmformer", "shaspec"])
def test_fusion_auxiliary_losses_enter_with_their_weight(tiny_config, method):
    cfg, module, batch = setup(tiny_config, method, train__aux_weight=0.5)
    total, mask = step_and_mask(module, batch)
    features = module.net.encode(batch[0], mask)
    out = module.net.fuse_predict(features, mask)
    aux = module.net.auxiliary_losses(out, batch[2], module.task_loss)
    assert aux and all(v > 0 for v in aux.values())
    expected = F.cross_entropy(out.logits, batch[2]) + 0.5 * sum(aux.values())
    torch.testing.assert_close(total, expected)


def test_teacher_and_customized_stages_use_their_masks(tiny_config):
    _, module, batch = setup(tiny_config, "teacher")
    inputs, present, target = batch
    total = module.training_step(batch, 0)
    torch.testing.assert_close(total, F.cross_entropy(module.net(inputs, present), target))


def test_segmentation_mmanet_step_per_pixel_mad_mar_and_deep_supervision(at_epoch):
    """ESANet-style network on rooms: task + multi-scale side losses + α·per-pixel MAD + β·MAR."""
    from mmanet.config import resolve_run_config

    cfg = resolve_run_config(
        {
            "method": "sr",
            "data": {
                "name": "rooms",
                "options": {"num_train": 8, "num_val": 4, "num_test": 4, "height": 32, "width": 48, "augment": False},
                "batch_size": 8,
            },
            "model": {"width": 4, "channels": None, "encoder": {"type": "resnet"}, "head": {"type": "esanet_decoder"},
                      "fusion": "se_add", "dropout": 0.0},
            "mad": {"alpha": 3.0, "feature": "decoder", "pool_size": [4, 6]},
            "mar": {"beta": 0.5, "warmup_epochs": 1},
        }
    )  # fmt: skip
    bundle = load_bundle(cfg)
    info = task_info(bundle)
    torch.manual_seed(0)
    teacher = SpyTeacher(build_net(cfg, info))
    teacher.seen = []
    weights = torch.linspace(0.5, 2.0, info.num_classes)
    module = MultimodalModule(build_net(cfg, info), cfg, info, teacher=teacher, class_weights=weights).train()
    inputs, present, target = next(iter(torch.utils.data.DataLoader(bundle.train, batch_size=8)))
    at_epoch(1)
    total, mask = step_and_mask(module, (inputs, present, target))
    out = module.net.forward_all(inputs, mask)
    t_out = module.teacher.net.forward_all(inputs, present)

    def ce(logits):
        y = target
        if logits.shape[2:] != y.shape[1:]:
            y = F.interpolate(y[:, None].float(), size=logits.shape[2:], mode="nearest")[:, 0].long()
        return F.cross_entropy(logits, y, weight=weights, ignore_index=255)

    assert len(out.aux_logits) == 3  # side outputs at 1/32, 1/16, 1/8
    pool = (4, 6)
    mad = mad_loss(
        F.adaptive_avg_pool2d(out.feature("decoder"), pool),
        F.adaptive_avg_pool2d(t_out.feature("decoder"), pool),
        t_out.logits,
        per_pixel=True,
    )
    weak = mask.sum(dim=1) == 1
    assert 0 < int(weak.sum()) < target.shape[0]
    # the head (BatchNorm in train mode) runs on the whole batch; (1/B) Σ over the weak samples
    reg_logits = module.reg_head(out.fused).logits
    mar = mar_loss(reg_logits, target, weak, ignore_index=255)
    expected = ce(out.logits) + sum(ce(side) for side in out.aux_logits) + 3.0 * mad + 0.5 * mar
    torch.testing.assert_close(total, expected)
