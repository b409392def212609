"""The supervised methods (mmanet.methods.supervised): the customized (SF) model trains, validates and saves
its one combination; the teacher validates the complete combination only."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from mmanet.models.factory import build_net
from mmanet.training.factory import load_bundle, task_info
from mmanet.training.module import MultimodalModule
from step_helpers import LogSpy, setup


def test_customized_stage_trains_validates_and_saves_its_combination(tiny_config):
    cfg = tiny_config("sf", model__dropout=0.0)
    bundle = load_bundle(cfg)
    info = task_info(bundle)
    combo = info.spec.combination("a")
    torch.manual_seed(0)
    module = MultimodalModule(build_net(cfg, info), cfg, info, combination=combo).train()
    inputs, present, target = next(iter(torch.utils.data.DataLoader(bundle.train, batch_size=16)))
    present = present.clone()
    present[:4, 0] = False  # these 4 samples lack 'a': nothing left to train on
    module.log = spy = LogSpy()
    total = module.training_step((inputs, present, target), 0)
    keep = torch.arange(4, 16)
    mask = (present & combo.mask())[keep]
    expected = F.cross_entropy(module.net({k: v[keep] for k, v in inputs.items()}, mask), target[keep])
    torch.testing.assert_close(total, expected)
    assert spy.calls["train/loss"][1]["batch_size"] == 12
    assert module.val_evaluator.combinations == [combo]
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    meta = checkpoint["mmanet"]
    assert (meta["stage"], meta["combination"]) == ("customized", "a")
    assert json.loads(json.dumps(meta["config"])) == meta["config"] == cfg.model_dump(mode="json")


def test_teacher_stage_validates_the_complete_combination_only(tiny_config):
    _, module, _ = setup(tiny_config, "teacher")
    assert module.val_evaluator.combinations == [module.info.spec.full]
