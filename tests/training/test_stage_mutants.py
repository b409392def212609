"""The training module and stages: the wiring `make mutate` found unpinned (docs/testing.md).

Each test recomputes what the module should do from the configuration (the customized stage's
combination, the dropout, the optimizer and schedule, MAR's miner and weak rows, per-pixel MAD
without pooling, the logged terms) and compares it with what the module does.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from test_wiring import setup, step_and_mask, step_context

from conftest import tiny_raw
from mmanet.config import resolve_run_config
from mmanet.losses import mad_loss, mar_loss
from mmanet.modality import ModalityDropout
from mmanet.models.factory import build_net
from mmanet.training.factory import load_bundle, task_info
from mmanet.training.module import MultimodalModule
from mmanet.training.teacher import FrozenTeacher


class LogSpy:
    """Stands in for ``LightningModule.log``: name → (value, keyword arguments)."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[torch.Tensor, dict]] = {}

    def __call__(self, name, value, **kwargs) -> None:
        self.calls[name] = (value, kwargs)


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


def test_modality_dropout_is_the_configured_one(tiny_config):
    p, never = [0.9, 0.2, 0.5], ["c"]
    options = {"dropout__mode": "bernoulli", "dropout__p": p, "dropout__never_drop": never}
    _, module, (_, present, _) = setup(tiny_config, "sf_md", **options)
    reference = ModalityDropout(module.info.spec, mode="bernoulli", p=p, never_drop=never)
    got = module.dropout(present, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, reference(present, generator=torch.Generator().manual_seed(3)))


class _Trainer:
    """What the schedule reads from a Trainer."""

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs


@pytest.mark.parametrize(("optimizer", "epochs"), [("adamw", 7), ("sgd", 1)])
def test_optimizer_and_schedule_follow_the_config(tiny_config, optimizer, epochs):
    options = {"train__optimizer": optimizer, "train__lr": 0.05, "train__weight_decay": 0.003}
    _, module, _ = setup(tiny_config, "sf_md", **options)
    module.trainer = _Trainer(epochs)
    configured = module.configure_optimizers()
    opt, schedule = configured["optimizer"], configured["lr_scheduler"]
    assert type(opt) is {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[optimizer]
    group = opt.param_groups[0]
    assert (group["initial_lr"], group["weight_decay"]) == (0.05, 0.003)  # AdamW's own default is 0.01
    if optimizer == "sgd":
        assert group["momentum"] == 0.9
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(module.parameters()))
    assert schedule["interval"] == "epoch"
    assert isinstance(schedule["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    assert schedule["scheduler"].T_max == epochs  # the Trainer's epochs, not the config's (3)


def test_no_schedule_gives_the_bare_optimizer(tiny_config):
    _, module, _ = setup(tiny_config, "sf_md", train__scheduler="none", train__lr=0.05)
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 0.05


def test_step_logs_every_term_per_epoch_with_the_batch_size(tiny_config, at_epoch):
    _, module, batch = setup(tiny_config, "sr", mad__alpha=0.7, mar__beta=0.3, mar__warmup_epochs=1)
    at_epoch(1)
    module.log = spy = LogSpy()
    total, _ = step_and_mask(module, batch)
    terms = {name: spy.calls[f"train/{name}"][0] for name in ("task", "mad", "mar")}
    torch.testing.assert_close(total, sum(terms.values()))
    torch.testing.assert_close(spy.calls["train/loss"][0], total.detach())
    for name in ("task", "mad", "mar", "loss"):
        kwargs = spy.calls[f"train/{name}"][1]
        assert (kwargs["on_step"], kwargs["on_epoch"], kwargs["batch_size"]) == (False, True, 16)
    assert 0 < float(spy.calls["train/weak_fraction"][0]) < 1
    _, module, batch = setup(tiny_config, "kd")
    module.log = spy = LogSpy()
    total, _ = step_and_mask(module, batch)
    assert set(spy.calls) == {"train/task", "train/kd", "train/loss"}
    torch.testing.assert_close(total, spy.calls["train/task"][0] + spy.calls["train/kd"][0])


def test_classification_mad_uses_the_configured_variant(tiny_config):
    _, module, (inputs, present, _) = setup(tiny_config, "sp", mad__reduction="sum")
    out, t_out = module.net.forward_all(inputs, present), module.teacher.net.forward_all(inputs, present)
    expected = mad_loss(out.embedding, t_out.embedding, t_out.logits, variant="sp", reduction="sum")
    torch.testing.assert_close(module.method.mad_term(out, t_out), expected)


def test_miner_takes_num_strong_and_the_void_label_of_the_run(tiny_config):
    _, module, _ = setup(tiny_config, "mmanet", mar__num_strong=2)
    assert module.method.mar.miner.num_strong == 2
    assert module.method.mar.miner.ignore_index == module.ignore_index == -100


def test_weak_set_is_selected_at_the_first_epoch_of_mar(tiny_config, at_epoch):
    _, module, _ = setup(tiny_config, "mmanet", mar__warmup_epochs=2)
    module.method.mar.miner.record(0, {"b+c": 0.9, "a+c": 0.1, "a+b": 0.2})
    module.print = lambda *args, **kwargs: None
    at_epoch(1)
    module.on_train_epoch_start()
    assert module.method.mar.weak_set is None
    at_epoch(2)  # e = ω
    module.on_train_epoch_start()
    assert module.method.mar.weak_set is module.method.mar.miner
    assert {c.name for c in module.method.mar.miner.weak_set} == {"b", "c", "b+c"}


def test_checkpoint_restores_the_selected_weak_set(tiny_config):
    _, module, _ = setup(tiny_config, "mmanet")
    module.method.mar.miner.record(0, {"b+c": 0.1, "a+c": 0.9, "a+b": 0.2})
    module.method.mar.miner.select()
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    _, resumed, _ = setup(tiny_config, "mmanet")
    resumed.on_load_checkpoint({})  # a checkpoint without mmanet state changes nothing
    assert resumed.method.mar.weak_set is None
    resumed.on_load_checkpoint(json.loads(json.dumps(checkpoint)))
    assert resumed.method.mar.weak_set is resumed.method.mar.miner
    restored, saved = resumed.method.mar.miner, module.method.mar.miner
    assert restored.weak_set == saved.weak_set and restored.strong_modalities == ["b"]


def test_mar_term_of_one_labelled_weak_row_is_its_cross_entropy(tiny_config, at_epoch):
    _, module, (inputs, present, target) = setup(tiny_config, "sr", mar__warmup_epochs=1)
    at_epoch(1)
    mask = torch.ones_like(present)
    mask[5] = torch.tensor([False, True, False])  # row 5 alone keeps one modality: the one weak row
    out = module.net.forward_all(inputs, mask)
    labels = torch.full_like(target, -1)  # every other row unlabelled
    labels[5] = target[5]
    weak = module.method.mar.weak_mask(mask, epoch=1)
    assert weak.tolist() == [i == 5 for i in range(16)]
    got = module.method.mar.term(step_context(module, inputs, present, mask, labels, out), weak, module.class_weights)
    reg = module.reg_head([f[5:6] for f in out.fused]).logits
    torch.testing.assert_close(got, F.cross_entropy(reg, target[5:6]))  # (1/1 labelled row) · CE


@pytest.fixture(scope="module")
def rooms_sr():
    """An SR run on rooms (MAR on single modalities from epoch 1; SP-MAD, summed, on the decoder map
    without pooling): (module, batch)."""
    rooms = {"num_train": 4, "num_val": 2, "num_test": 2, "height": 16, "width": 24, "augment": False}
    esanet = {"encoder": {"type": "resnet"}, "head": {"type": "esanet_decoder"}, "fusion": "se_add"}
    raw = tiny_raw(
        "sr",
        data={"name": "rooms", "options": rooms, "batch_size": 4},
        model={**esanet, "width": 4, "channels": None, "dropout": 0.0},
        mad={"alpha": 1.0, "variant": "sp", "reduction": "sum", "feature": "decoder"},
        mar__warmup_epochs=1,
    )
    cfg = resolve_run_config(raw)
    bundle = load_bundle(cfg)
    info = task_info(bundle)
    torch.manual_seed(0)
    module = MultimodalModule(build_net(cfg, info), cfg, info, teacher=FrozenTeacher(build_net(cfg, info))).train()
    return module, next(iter(torch.utils.data.DataLoader(bundle.train, batch_size=4)))


def test_segmentation_mad_without_pool_size_uses_the_whole_map_and_the_configured_form(rooms_sr):
    module, (inputs, present, _) = rooms_sr
    out = module.net.forward_all(inputs, present)
    t_out = module.teacher.net.forward_all(inputs, present)
    got = module.method.mad_term(out, t_out)
    student, teacher = out.feature("decoder"), t_out.feature("decoder")
    expected = mad_loss(student, teacher, t_out.logits, variant="sp", per_pixel=True, reduction="sum")
    torch.testing.assert_close(got, expected)
    paper_mean = mad_loss(student, teacher, t_out.logits, per_pixel=True, reduction="mean")
    assert abs(got - paper_mean) > 1e-3 * got  # variant and reduction must reach the loss


def test_segmentation_task_loss_without_class_weights_ignores_void(rooms_sr):
    module, _ = rooms_sr
    assert module.class_weights is None and module.ignore_index == 255
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, module.info.num_classes, 4, 4, generator=g)
    target = torch.randint(0, module.info.num_classes, (2, 4, 4), generator=g)
    target[0, 0] = 255
    torch.testing.assert_close(module.task_loss(logits, target), F.cross_entropy(logits, target, ignore_index=255))


def test_segmentation_step_logs_the_side_outputs_term(rooms_sr, at_epoch):
    module, batch = rooms_sr
    at_epoch(1)
    module.log = spy = LogSpy()
    total = module.training_step(batch, 0)
    terms = ("task", "deep_supervision", "mad", "mar")
    assert set(spy.calls) == {f"train/{name}" for name in (*terms, "loss", "weak_fraction")}
    torch.testing.assert_close(total, sum(spy.calls[f"train/{name}"][0] for name in terms))


def test_segmentation_mar_term_honours_the_void_label_of_the_data(rooms_sr, at_epoch):
    module, (inputs, present, target) = rooms_sr
    void = module.info.num_classes  # a void label other than 255 (npz datasets declare their own)
    info = dataclasses.replace(module.info, ignore_index=void)
    module = MultimodalModule(module.net, module.config, info, teacher=module.teacher).train()
    at_epoch(1)
    mask = torch.ones_like(present)
    mask[:2, 1:] = False  # rows 0 and 1 keep the first modality alone: weak under SR
    labels = target.clone()
    labels[labels == 255] = void
    labels[:, :2] = void
    out = module.net.forward_all(inputs, mask)
    weak = module.method.mar.weak_mask(mask, epoch=1)
    assert weak.tolist() == [True, True, False, False]
    got = module.method.mar.term(step_context(module, inputs, present, mask, labels, out), weak, module.class_weights)
    reg = module.reg_head(out.fused).logits  # the head runs on the whole batch (its BatchNorm sees 4 rows)
    torch.testing.assert_close(got, mar_loss(reg, labels, weak, ignore_index=void))


def test_validation_logs_the_average_and_the_worst_combination(tiny_config):
    for method, rows in (("sf_md", 7), ("teacher", 1)):
        _, module, batch = setup(tiny_config, method)
        module.eval()
        module.log = spy = LogSpy()
        module.on_validation_epoch_start()
        module.validation_step(batch, 0)
        module.on_validation_epoch_end()
        table = module.val_evaluator.compute()
        assert len(table.rows) == rows
        assert float(spy.calls["val/avg_error"][0]) == pytest.approx(table.average()["error"])
        if rows > 1:
            assert float(spy.calls["val/worst_error"][0]) == pytest.approx(max(r["error"] for _, r in table.rows))
        else:
            assert "val/worst_error" not in spy.calls
