"""The training module (mmanet.training.module): the wiring `make mutate` found unpinned (docs/testing.md).
Each test recomputes what the module should do from the configuration (the dropout, the optimizer and
schedule, the task loss, the logged terms, the validation average and worst row) and compares it with
what the module does. What the methods themselves do is tested in tests/methods/."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmanet.modality import ModalityDropout
from step_helpers import LogSpy, setup, step_and_mask


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
