"""PASSION (mmanet.methods.passion): its terms recomputed independently reach the training loss on RFNet and on
mmFormer, each sends a gradient into the network, the β update runs after each epoch from start_epoch on and
reaches the checkpoint and results.json, and the data's own masks are trained (``idt``)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from mmanet.losses import kd_loss
from mmanet.losses.passion import preference, prototype_terms
from mmanet.training import run
from step_helpers import setup, step_and_mask, step_context


def _expected(module, batch, mask):
    """L_task + the fusion's losses + 0.5·Σ β_m KL_m + 0.1·Σ [rp_m > 0] proto_m, each recomputed
    (``passion.kl_form: kl``; the authors' form is checked against their code in tests/losses/test_passion.py)."""
    inputs, _, target = batch
    features = module.net.encode(inputs, mask)
    out = module.net.fuse_predict(features, mask)
    total = F.cross_entropy(out.logits, target)
    total = total + sum(module.net.auxiliary_losses(out, target, module.task_loss).values())
    kl, proto = [], []
    dist = torch.zeros(mask.shape)
    for m in range(mask.shape[1]):
        rows = mask[:, m]
        alone = torch.zeros_like(mask)
        alone[:, m] = True
        single = module.net.fuse_predict(features, alone)
        kl.append(kd_loss(single.logits[rows], out.logits[rows].detach(), temperature=4.0))
        p, d = prototype_terms(single.embedding[rows], out.embedding[rows], target[rows])
        proto.append(p.mean())
        dist[rows, m] = d
    lag = (preference(dist, mask) > 0).float()
    return total + 0.5 * torch.stack(kl).sum() + 0.1 * (lag * torch.stack(proto)).sum()


@pytest.mark.parametrize("fusion", ["rfnet", "mmformer"])
def test_the_step_is_the_base_loss_plus_self_distillation_and_prototypes(tiny_config, at_epoch, fusion):
    cfg, module, batch = setup(tiny_config, "passion", model__fusion=fusion, passion__kl_form="kl")
    at_epoch(0)
    total, _ = step_and_mask(module, batch)
    mask = batch[1]  # idt: the data's own masks (setup removed modality 0 from rows 0-3)
    torch.manual_seed(7)
    torch.testing.assert_close(total, _expected(module, batch, mask))


def test_before_start_epoch_the_passion_terms_are_zero(tiny_config, at_epoch):
    cfg, module, batch = setup(tiny_config, "passion", passion__start_epoch=2)
    at_epoch(1)
    mask = batch[1]
    out = module.net.forward_all(batch[0], mask)
    terms = module.method.loss_terms(step_context(module, batch[0], batch[1], mask, batch[2], out, epoch=1))
    assert float(terms["passion_kl"]) == 0.0 and float(terms["passion_proto"]) == 0.0


def test_each_passion_term_sends_a_gradient_into_the_network(tiny_config, at_epoch):
    cfg, module, batch = setup(tiny_config, "passion", passion__proto_weight=1.0)
    mask = batch[1]
    features = module.net.encode(batch[0], mask)
    out = module.net.fuse_predict(features, mask)
    ctx = step_context(module, batch[0], batch[1], mask, batch[2], out, epoch=0)
    ctx.features = features
    terms = module.method.loss_terms(ctx)
    for name in ("passion_kl", "passion_proto"):
        module.net.zero_grad()
        terms[name].backward(retain_graph=True)
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.net.parameters()), name


def test_moddrop_trains_under_modality_dropout_and_idt_under_the_data_s_masks(tiny_config):
    _, idt, batch = setup(tiny_config, "passion")
    _, drop, _ = setup(tiny_config, "passion", passion__mask="idt_moddrop")
    assert torch.equal(idt.method.training_mask(batch[1], idt.dropout), batch[1])
    torch.manual_seed(0)
    dropped = drop.method.training_mask(batch[1], drop.dropout)
    assert not torch.equal(dropped, batch[1]) and bool((dropped <= batch[1]).all())


def test_the_betas_follow_each_epoch_reach_results_json_and_resume(tiny_config, tmp_path):
    cfg = tiny_config("passion", train__max_epochs=3, passion__eta=0.5, passion__start_epoch=1)
    run(cfg, tmp_path / "run")
    beta = json.loads((tmp_path / "run" / "results.json").read_text())["passion_beta"]
    assert set(beta) == {"a", "b", "c"} and sum(v * v for v in beta.values()) == pytest.approx(3.0)
    assert len(set(round(v, 6) for v in beta.values())) > 1  # moved away from all ones
    again = run(cfg, tmp_path / "run")  # a finished run resumed: the same state, nothing trained twice
    assert json.loads((again.out_dir / "results.json").read_text())["passion_beta"] == beta
