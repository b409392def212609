"""The contract every registered method keeps, checked on each the day it is registered (the method-level twin of
tests/models/test_fusion_contract.py): one training step through the real Lightning module gives a finite loss
whose named terms are all finite, every trainable parameter of the deployment network gets a gradient and the
frozen teacher none; the trained network scores every combination it is evaluated on, and a missing
modality's input has no effect on its output."""

from __future__ import annotations

import pytest
import torch

from mmanet.methods import METHODS, method_entry
from mmanet.models.factory import build_net
from mmanet.training.factory import load_bundle, task_info
from mmanet.training.module import MultimodalModule
from mmanet.training.teacher import FrozenTeacher
from step_helpers import LogSpy

ROOMS = {"name": "rooms", "options": {"num_train": 4, "num_val": 2, "num_test": 2, "height": 16, "width": 24,
                                        "augment": False}, "batch_size": 4}  # fmt: skip


def _module(tiny_config, name: str):
    segmentation = method_entry(name).preset.get("model", {}).get("head", {}).get("type") == "esanet_decoder"
    if segmentation:  # the ESANet recipes: RGB-D segmentation, the ResNet encoders and the decoder at width 4
        cfg = tiny_config(name, data=ROOMS, model={"width": 4, "channels": None, "dropout": 0.0})
    else:
        cfg = tiny_config(name, model__dropout=0.0)
    bundle = load_bundle(cfg)
    info = task_info(bundle)
    torch.manual_seed(0)
    entry = method_entry(name)
    teacher = FrozenTeacher(build_net(cfg, info)) if entry.cls.plan == "teacher_then_student" else None
    combination = info.spec.full if entry.cls.plan == "per_combination" else None
    module = MultimodalModule(build_net(cfg, info), cfg, info, combination=combination, teacher=teacher).train()
    batch = next(iter(torch.utils.data.DataLoader(bundle.train, batch_size=16)))
    return module, batch, entry


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_training_step_is_finite_and_reaches_every_parameter(name, tiny_config, at_epoch, monkeypatch):
    module, batch, _ = _module(tiny_config, name)
    spy = LogSpy()
    monkeypatch.setattr(module, "log", spy)
    at_epoch(0)
    torch.manual_seed(1)
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss), name
    terms = {k: v for k, v in spy.calls.items() if k.startswith("train/")}
    assert "train/task" in terms and all(torch.isfinite(torch.as_tensor(v[0])) for v in terms.values()), terms
    loss.backward()
    missing = [n for n, p in module.net.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == [], (name, missing)
    if module.teacher is not None:
        assert all(p.grad is None for p in module.teacher.net.parameters())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_network_scores_its_combinations_and_ignores_missing_inputs(name, tiny_config):
    module, batch, entry = _module(tiny_config, name)
    net = module.net.eval()
    spec = module.info.spec
    inputs = batch[0]
    combinations = entry.cls.eval_combinations(spec, spec.full if entry.cls.plan == "per_combination" else None)
    assert combinations, name
    with torch.no_grad():
        for combo in combinations:
            mask = combo.mask().expand(batch[2].shape[0], -1)
            logits = net(inputs, mask)
            assert torch.isfinite(logits).all(), (name, combo.name)
            for m, modality in enumerate(spec.names):
                if combo.present[m]:
                    continue
                changed = {**inputs, modality: inputs[modality] * 3.0 + 7.0}
                torch.testing.assert_close(net(changed, mask), logits, msg=f"{name}: {modality} missing in {combo}")


#: the newest peers on the rooms' ESANet parts (ResNet encoders, BatchNorm decoder), as the rooms benchmark sets them
PEERS_ON_ESANET = {
    "cmad": {"cmad": {"feature": "context", "begin_epoch": 0}},
    "passion": {"model": {"fusion": "rfnet"}, "passion": {"mask": "idt_moddrop", "feature": "context"}},
    "flexmoe": {"model": {"fusion": {"type": "flexmoe", "top_k": 2}}},
}


@pytest.mark.parametrize("name", sorted(PEERS_ON_ESANET))
def test_the_peers_train_on_the_esanet_parts_at_batch_two(name, tiny_config, at_epoch):
    from conftest import tiny_raw
    from mmanet.config import deep_merge, resolve_run_config

    esanet = {"encoder": {"type": "resnet"}, "head": {"type": "esanet_decoder"}, "fusion": "se_add"}
    raw = tiny_raw(
        name, data={**ROOMS, "batch_size": 2}, model={**esanet, "width": 4, "channels": None, "dropout": 0.0}
    )
    cfg = resolve_run_config(deep_merge(raw, PEERS_ON_ESANET[name]))
    bundle = load_bundle(cfg)
    info = task_info(bundle)
    torch.manual_seed(0)
    teacher = FrozenTeacher(build_net(cfg, info)) if cfg.stage == "mmanet" else None
    module = MultimodalModule(build_net(cfg, info), cfg, info, teacher=teacher).train()
    batch = next(iter(torch.utils.data.DataLoader(bundle.train, batch_size=2)))
    at_epoch(1)
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in module.net.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == [], missing
