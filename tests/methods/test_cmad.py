"""CMAD (mmanet.methods.cmad): each term recomputed independently reaches the training loss, the combination
weights follow the module docstring, reach the checkpoint and results.json, and resume exactly; a step on the
rooms' ESANet (BatchNorm decoder, pixel-wise CE with class weights) gives every parameter a gradient."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_raw
from mmanet.config import resolve_run_config
from mmanet.data.base import UNLABELLED
from mmanet.deploy.checkpoint import load_checkpoint
from mmanet.losses.cmad import cafd_loss, combination_weights, per_sample_kd
from mmanet.modality import Combination, all_combinations
from mmanet.models.factory import build_net
from mmanet.training import run
from mmanet.training.factory import load_bundle, task_info
from mmanet.training.fit import fit_stage, train_teacher, training_split
from mmanet.training.module import MultimodalModule
from mmanet.training.teacher import FrozenTeacher
from step_helpers import CrashAtEpoch, complete_rows, setup, step_and_mask, step_context


def _passes(module, batch, mask):
    out = module.net.forward_all(batch[0], mask)
    rows = complete_rows(batch)
    t_out = module.teacher.net.forward_all({k: v[rows] for k, v in batch[0].items()}, batch[1][rows])
    return out, t_out, rows


def _index(spec, mask):
    order = {c.name: k for k, c in enumerate(all_combinations(spec))}
    return torch.tensor([order[Combination.from_mask(spec, row).name] for row in mask])


def test_before_begin_epoch_the_step_is_ce_plus_delta_cafd_plus_gamma_kd(tiny_config, at_epoch):
    cfg, module, batch = setup(tiny_config, "cmad", cmad__delta=0.3, cmad__gamma=0.5, cmad__temperature=3.0)
    at_epoch(0)
    total, mask = step_and_mask(module, batch)
    out, t_out, rows = _passes(module, batch, mask)
    assert all(bool(seen.all()) for seen in module.teacher.seen)  # the teacher sees complete rows only
    kd = per_sample_kd(out.logits[rows], t_out.logits, temperature=3.0).mean()
    cafd = cafd_loss(out.embedding[rows], t_out.embedding, tau=cfg.cmad.tau)
    assert kd > 0 and cafd > 0
    torch.testing.assert_close(total, F.cross_entropy(out.logits, batch[2]) + 0.5 * kd + 0.3 * cafd)


def test_with_weights_each_sample_s_ce_and_kd_take_its_combinations_weight(tiny_config, at_epoch):
    cfg, module, batch = setup(tiny_config, "cmad", cmad__delta=0.0, cmad__gamma=0.5, cmad__temperature=3.0)
    spec = module.info.spec
    weights = torch.linspace(0.0, 3.0, len(all_combinations(spec)), dtype=torch.float64)
    module.method.weights = weights
    at_epoch(5)
    total, mask = step_and_mask(module, batch)
    out, t_out, rows = _passes(module, batch, mask)
    w = weights.float()[_index(spec, mask)]
    ce = F.cross_entropy(out.logits, batch[2], reduction="none")
    kd = per_sample_kd(out.logits[rows], t_out.logits, temperature=3.0)
    torch.testing.assert_close(total, (w * ce).mean() + 0.5 * (w[rows] * kd).mean())


def test_unlabelled_rows_take_no_part_in_the_task_term(tiny_config, at_epoch):
    cfg, module, batch = setup(tiny_config, "cmad", cmad__delta=0.0, cmad__gamma=0.0)
    inputs, present, target = batch
    target = target.clone()
    target[::4] = UNLABELLED
    at_epoch(0)
    total, mask = step_and_mask(module, (inputs, present, target))
    out = module.net.forward_all(inputs, mask)
    labelled = target != UNLABELLED
    torch.testing.assert_close(total, F.cross_entropy(out.logits[labelled], target[labelled]))


def test_each_term_sends_a_gradient_into_the_network(tiny_config, at_epoch):
    cfg, module, batch = setup(tiny_config, "cmad", cmad__delta=1.0, cmad__gamma=1.0)
    at_epoch(0)

    mask = module.dropout(batch[1])
    out = module.net.forward_all(batch[0], mask)
    terms = module.method.loss_terms(step_context(module, batch[0], batch[1], mask, batch[2], out, epoch=0))
    assert set(terms) >= {"task", "cafd", "kd"}
    for name in ("task", "cafd", "kd"):
        module.net.zero_grad()
        terms[name].backward(retain_graph=True)
        grads = [p.grad for p in module.net.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), name
    assert all(p.grad is None for p in module.teacher.net.parameters())


@pytest.mark.parametrize("update", ["once", "every_epoch"])
def test_the_weights_start_at_begin_epoch_reach_the_checkpoint_and_resume_exactly(tiny_config, tmp_path, update):
    cfg = tiny_config("cmad", train__max_epochs=4, cmad__begin_epoch=2, cmad__update=update)
    bundle = load_bundle(cfg)
    teacher = train_teacher(cfg, bundle, tmp_path / "t")
    fit_stage(cfg, bundle, tmp_path / "straight", teacher=teacher)
    # interrupted after epoch 0: the gaps gathered so far, no weights yet
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_stage(cfg, bundle, tmp_path / "early", teacher=teacher, extra_callbacks=[CrashAtEpoch(1)])
    early = load_checkpoint(tmp_path / "early" / "checkpoints" / "last.ckpt")["mmanet"]["cmad"]
    assert early["weights"] is None and sum(early["counts"]) == len(training_split(bundle, cfg))
    # interrupted after epoch 1 = begin_epoch - 1: the weights from epochs 0-1, the statistics reset
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_stage(cfg, bundle, tmp_path / "resumed", teacher=teacher, extra_callbacks=[CrashAtEpoch(2)])
    state = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["mmanet"]["cmad"]
    assert max(state["weights"]) == 20.0 and sum(state["counts"]) == 0
    fit_stage(cfg, bundle, tmp_path / "early", teacher=teacher)
    fit_stage(cfg, bundle, tmp_path / "resumed", teacher=teacher)
    final = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    for name in ("early", "resumed"):
        again = load_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt")
        assert again["mmanet"]["cmad"] == final["mmanet"]["cmad"], name
        assert all(torch.equal(final["state_dict"][k], again["state_dict"][k]) for k in final["state_dict"]), name
    once = update == "once"
    assert (final["mmanet"]["cmad"]["weights"] == state["weights"]) == once  # every_epoch: recomputed


def test_results_json_lists_the_final_weight_of_every_combination(tiny_config, tmp_path):
    result = run(tiny_config("cmad", train__max_epochs=3, cmad__begin_epoch=1), tmp_path / "run")
    weights = json.loads((tmp_path / "run" / "results.json").read_text())["cmad_weights"]
    assert set(weights) == {c.name for c in all_combinations(result.tables["val"].spec)}
    assert max(weights.values()) == 20.0 and min(weights.values()) >= 0.0


def test_every_epoch_updates_from_the_epoch_before():
    gaps = torch.tensor([1.0, 3.0], dtype=torch.float64)
    counts = torch.tensor([1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(combination_weights(gaps, counts, scale=2.0), torch.tensor([2 / 9, 2.0]).double())


def test_a_rooms_esanet_step_with_batchnorm_gives_every_parameter_a_gradient(at_epoch):
    rooms = {"num_train": 4, "num_val": 2, "num_test": 2, "height": 16, "width": 24, "augment": False}
    esanet = {"encoder": {"type": "resnet"}, "head": {"type": "esanet_decoder"}, "fusion": "se_add"}
    raw = tiny_raw(
        "cmad",
        data={"name": "rooms", "options": rooms, "batch_size": 4},
        model={**esanet, "width": 4, "channels": None, "dropout": 0.0},
        train={"max_epochs": 3, "lr": 0.01, "progress_bar": False, "class_weights": "median_frequency"},
        cmad={"feature": "context", "begin_epoch": 1},
    )
    cfg = resolve_run_config(raw)
    bundle = load_bundle(cfg)
    info = task_info(bundle)
    torch.manual_seed(0)
    module = MultimodalModule(build_net(cfg, info), cfg, info, teacher=FrozenTeacher(build_net(cfg, info))).train()
    batch = next(iter(torch.utils.data.DataLoader(bundle.train, batch_size=4)))
    at_epoch(0)
    total = module.training_step(batch, 0)
    assert torch.isfinite(total)
    total.backward()
    missing = [n for n, p in module.net.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == [], missing
    assert float(module.method.counts.sum()) == 4  # every sample's gap gathered for the weights


def test_mmanet_s_terms_never_reach_cmad_even_when_the_config_sets_them(tiny_config, at_epoch):
    """A benchmark base with MMANet's sections (the rooms: mad.variant official, α = 4) must not add MAD to CMAD."""
    cfg, module, batch = setup(
        tiny_config, "cmad", mad__variant="official", mad__alpha=4.0, kd__gamma=2.0, cmad__delta=0.0, cmad__gamma=0.0
    )
    at_epoch(3)
    mask = batch[1]
    out = module.net.forward_all(batch[0], mask)
    terms = module.method.loss_terms(step_context(module, batch[0], batch[1], mask, batch[2], out, epoch=3))
    assert set(terms) == {"task", "cafd", "kd"}, terms
    torch.testing.assert_close(terms["task"], F.cross_entropy(out.logits, batch[2]))
