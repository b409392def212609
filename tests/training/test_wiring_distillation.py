"""Wiring of the learning-quality terms: MAD's reduction, logit distillation (KD), unlabelled samples.

Each test recomputes the step's terms independently (student under the drawn dropout mask, the
teacher under the data's own presence mask, both on the rows whose data is complete — ``setup``
removes a modality from rows 0-3) and compares the total the module returns.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmanet.config import resolve_run_config
from mmanet.data.base import UNLABELLED, labelled_part
from mmanet.losses import kd_loss, mad_loss, mar_loss
from mmanet.training.factory import load_bundle
from mmanet.training.fit import training_split
from step_helpers import complete_rows, setup, step_and_mask


def _passes(module, batch, mask):
    """The student's pass (every row) and the teacher's on the complete rows; ``distilled`` = the student's
    rows the distillation terms see."""
    out = module.net.forward_all(batch[0], mask)
    rows = complete_rows(batch)
    t_out = module.teacher.net.forward_all({k: v[rows] for k, v in batch[0].items()}, batch[1][rows])
    return out, t_out, rows


def test_mad_reduction_reaches_the_loss(tiny_config, at_epoch):
    for reduction in ("mean", "sum"):
        cfg, module, batch = setup(tiny_config, "mad", mad__alpha=0.5, mad__reduction=reduction)
        at_epoch(0)
        total, mask = step_and_mask(module, batch)
        out, t_out, rows = _passes(module, batch, mask)
        mad = mad_loss(out.embedding[rows], t_out.embedding, t_out.logits, reduction=reduction)
        torch.testing.assert_close(total, F.cross_entropy(out.logits, batch[2]) + 0.5 * mad)
    # the two scales differ by the number of distilled rows (12 complete of 16): α must follow the reduction
    mean = mad_loss(out.embedding[rows], t_out.embedding, t_out.logits, reduction="mean")
    torch.testing.assert_close(mad, mean * rows.numel())


def test_kd_step_is_task_plus_gamma_kd_against_the_complete_teacher(tiny_config, at_epoch):
    cfg, module, batch = setup(tiny_config, "kd", kd__gamma=0.7, kd__temperature=3.0)
    at_epoch(0)
    total, mask = step_and_mask(module, batch)
    out, t_out, rows = _passes(module, batch, mask)
    assert module.teacher.seen and all(torch.equal(seen, batch[1][rows]) for seen in module.teacher.seen)
    assert all(bool(seen.all()) for seen in module.teacher.seen)  # complete rows only
    kd = kd_loss(out.logits[rows], t_out.logits, temperature=3.0)
    assert kd > 0
    torch.testing.assert_close(total, F.cross_entropy(out.logits, batch[2]) + 0.7 * kd)


def test_mmanet_kd_step_adds_every_term(tiny_config, at_epoch):
    cfg, module, batch = setup(
        tiny_config, "mmanet_kd", mad__alpha=0.4, mar__mode="single", mar__beta=0.3, mar__warmup_epochs=1,
        kd__gamma=0.2,
    )
    at_epoch(1)
    total, mask = step_and_mask(module, batch)
    out, t_out, rows = _passes(module, batch, mask)
    target = batch[2]
    mad = mad_loss(out.embedding[rows], t_out.embedding, t_out.logits)
    mar = mar_loss(module.reg_head(out.fused).logits, target, mask.sum(dim=1) == 1)
    kd = kd_loss(out.logits[rows], t_out.logits, temperature=cfg.kd.temperature)
    expected = F.cross_entropy(out.logits, target) + 0.4 * mad + 0.3 * mar + 0.2 * kd
    torch.testing.assert_close(total, expected)


def test_unlabelled_rows_reach_only_the_distillation_terms(tiny_config, at_epoch):
    cfg, module, batch = setup(
        tiny_config, "mmanet_kd", mad__alpha=0.4, mar__mode="single", mar__beta=0.3, mar__warmup_epochs=1,
        kd__gamma=0.2,
    )
    inputs, present, target = batch
    target = target.clone()
    target[::3] = UNLABELLED
    labelled = target != UNLABELLED
    batch = (inputs, present, target)
    at_epoch(1)
    total, mask = step_and_mask(module, batch)
    out, t_out, rows = _passes(module, batch, mask)
    task = F.cross_entropy(out.logits[labelled], target[labelled])  # the labelled rows only
    weak = mask.sum(dim=1) == 1
    reg = module.reg_head(out.fused).logits
    mar = mar_loss(reg[labelled], target[labelled], weak[labelled])  # a supervised term: labelled rows
    mad = mad_loss(out.embedding[rows], t_out.embedding, t_out.logits)  # every complete row, labelled or not
    kd = kd_loss(out.logits[rows], t_out.logits, temperature=cfg.kd.temperature)
    torch.testing.assert_close(total, task + 0.4 * mad + 0.3 * mar + 0.2 * kd)
    # a batch with no label at all still trains the distillation terms (and keeps the graph whole)
    batch = (inputs, present, torch.full_like(target, UNLABELLED))
    total, mask = step_and_mask(module, batch)
    module.zero_grad()
    total.backward()
    out, t_out, rows = _passes(module, batch, mask)
    expected = 0.4 * mad_loss(out.embedding[rows], t_out.embedding, t_out.logits) + 0.2 * kd_loss(
        out.logits[rows], t_out.logits, temperature=cfg.kd.temperature
    )
    torch.testing.assert_close(total, expected)
    grads = [p.grad for p in module.net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def _semi_config(method: str, **train):
    raw = {
        "method": method,
        "data": {"name": "toy", "options": {"num_samples": 100, "num_classes": 3, "unlabelled_fraction": 0.5}},
        "train": {"progress_bar": False, **train},
    }
    return resolve_run_config(raw)


@pytest.mark.parametrize(
    ("method", "train", "keeps"),
    [
        ("sf_md", {}, False),  # supervised baselines train on the labelled part
        ("teacher", {}, False),
        ("sr", {}, True),  # MAD active: unlabelled samples feed it
        ("kd", {}, True),
        ("mmanet", {"unlabelled": "drop"}, False),
        ("sf_md", {"unlabelled": "keep"}, True),  # the same-schedule control
    ],
)
def test_training_split_keeps_unlabelled_samples_only_where_a_term_uses_them(method, train, keeps):
    config = _semi_config(method, **train)
    bundle = load_bundle(config)
    unlabelled = int((bundle.train.targets == UNLABELLED).sum())
    assert unlabelled == 30  # half of the 60 training samples
    split = training_split(bundle, config)
    assert len(split) == (60 if keeps else 30)
    assert keeps or bool((split.targets != UNLABELLED).all())


def test_labelled_part_keeps_inputs_and_masks_aligned():
    bundle = load_bundle(_semi_config("sf_md"))
    part = labelled_part(bundle.train)
    keep = (bundle.train.targets != UNLABELLED).nonzero().flatten()
    assert torch.equal(part.targets, bundle.train.targets[keep])
    assert torch.equal(part.present, bundle.train.present[keep])
    for m in bundle.spec.names:
        assert torch.equal(part.arrays[m], bundle.train.arrays[m][keep])
    assert (bundle.val.targets >= 0).all() and (bundle.test.targets >= 0).all()


def test_the_regularization_head_runs_on_the_whole_batch(tiny_config, at_epoch):
    """Before ω (zero weight) and after, whatever the weak rows: BatchNorm heads always see the batch, and
    every parameter is in the graph (DDP)."""
    cfg, module, batch = setup(tiny_config, "sr", mad__variant="off", mar__beta=1.0, mar__warmup_epochs=1)
    sizes: list[int] = []
    module.reg_head.register_forward_pre_hook(lambda _m, args: sizes.append(args[0][-1].shape[0]))
    b = batch[2].shape[0]
    at_epoch(0)
    total, mask = step_and_mask(module, batch)
    assert sizes == [b]
    at_epoch(1)
    total, mask = step_and_mask(module, batch)
    weak = mask.sum(dim=1) == 1
    assert 0 < int(weak.sum()) < b and sizes[-1] == b
    module.zero_grad()
    total.backward()
    assert all(p.grad is not None for p in module.reg_head.parameters())


def test_configure_optimizers_works_without_a_trainer(tiny_config):
    from mmanet.models.factory import build_net
    from mmanet.training.module import MultimodalModule

    cfg = tiny_config("sf_md", train__max_epochs=7)
    bundle = load_bundle(cfg)
    from mmanet.training.factory import task_info

    module = MultimodalModule(build_net(cfg, task_info(bundle)), cfg, task_info(bundle))
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert scheduler.T_max == 7  # the config's epochs when no Trainer is attached
