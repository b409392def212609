"""The fidelity options of issue 19, each against an independent computation: the teacher on complete
samples, distillation on complete rows, the embedding before dropout, the authors' optimiser schedule,
BatchNorm with one present row, and the warnings for terms that start after the last epoch. Mining
without augmentation is tested in tests/methods/test_mar.py, several MAD features with the authors'
pooling in tests/methods/test_mmanet.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_raw
from mmanet.config import resolve_run_config
from mmanet.data.base import DataError
from mmanet.modality import ModalitySpec
from mmanet.models.builder import build_network
from mmanet.models.factory import build_net
from mmanet.models.heads.classification import ClassificationHead
from mmanet.training.factory import load_bundle, task_info
from mmanet.training.fit import check_distillation_samples, training_split
from mmanet.training.module import MultimodalModule
from mmanet.training.schedules import LearningRateFactor

MISSING = {"num_samples": 120, "num_classes": 3, "missing_rate": 0.3}


# ----------------------------------------------------------------------------- the teacher's samples


@pytest.mark.parametrize(("samples", "complete_only"), [("complete", True), ("all", False)])
def test_the_teacher_trains_on_the_complete_samples(samples, complete_only):
    config = resolve_run_config(tiny_raw("teacher", data__options=MISSING, teacher__samples=samples))
    bundle = load_bundle(config)
    split = training_split(bundle, config)
    complete = bundle.train.present.all(dim=1)
    assert 0 < int(complete.sum()) < len(bundle.train)
    if complete_only:
        assert len(split) == int(complete.sum()) and bool(split.present.all())
        assert torch.equal(split.targets, bundle.train.targets[complete])
    else:
        assert len(split) == len(bundle.train)


def test_the_student_stage_keeps_every_sample():
    config = resolve_run_config(tiny_raw("mmanet", data__options=MISSING))
    bundle = load_bundle(config)
    assert len(training_split(bundle, config)) == len(bundle.train)  # modality dropout needs no complete data


def test_a_dataset_without_a_complete_sample_is_a_clear_error():
    config = resolve_run_config(tiny_raw("teacher", data__options=MISSING))
    bundle = load_bundle(config)
    bundle.train.present[:, 0] = False  # nobody has modality a any more
    bundle.train.present[:, 1] = True
    with pytest.raises(DataError, match="no sample with every modality.*teacher.samples: all"):
        training_split(bundle, config)
    student = resolve_run_config(tiny_raw("mmanet", data__options=MISSING))
    with pytest.raises(DataError, match="distillation terms"):
        check_distillation_samples(student, bundle.train)
    both_all = resolve_run_config(
        tiny_raw("mmanet", data__options=MISSING, teacher__samples="all", teacher__distill_samples="all")
    )
    check_distillation_samples(both_all, bundle.train)  # asked for: no error
    assert len(training_split(bundle, resolve_run_config(tiny_raw("teacher", teacher__samples="all")))) > 0


# ----------------------------------------------------------------------------- the distilled embedding


def test_the_embedding_is_taken_before_dropout():
    head = ClassificationHead(8, num_classes=3, hidden=16, dropout=0.5).train()
    x = [torch.randn(6, 8)]
    first, second = head(x), head(x)
    assert torch.equal(first.features["embedding"], second.features["embedding"])  # no dropout noise
    assert not torch.equal(first.logits, second.logits)  # the classifier still reads the dropped-out one
    torch.testing.assert_close(first.features["embedding"], F.gelu(head.trunk[0](x[0])))


# ----------------------------------------------------------------------------- the optimiser


def test_the_authors_schedule_factor_by_hand():
    factor = LearningRateFactor("multistep", 100, warmup_epochs=5, milestones=(16, 33, 50), gamma=0.1)
    expected = {0: 0.2, 1: 0.4, 4: 1.0, 5: 1.0, 15: 1.0, 16: 0.1, 32: 0.1, 33: 0.01, 49: 0.01, 50: 0.001, 99: 0.001}
    for epoch, value in expected.items():
        assert factor(epoch) == pytest.approx(value), epoch
    cosine = LearningRateFactor("cosine", 10, warmup_epochs=2)
    assert [cosine(e) for e in (0, 1)] == [0.5, 1.0]
    assert cosine(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert LearningRateFactor("none", 10, warmup_epochs=4)(9) == 1.0


def test_configure_optimizers_builds_nesterov_sgd_with_the_warm_multistep_schedule(tiny_config):
    cfg = tiny_config(
        "sf_md", train__optimizer="sgd", train__nesterov=True, train__lr=0.1, train__warmup_epochs=2,
        train__scheduler="multistep", train__milestones=[3, 5], train__max_epochs=7,
    )  # fmt: skip
    bundle = load_bundle(cfg)
    module = MultimodalModule(build_net(cfg, task_info(bundle)), cfg, task_info(bundle))
    setup = module.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert optimizer.param_groups[0]["nesterov"] and optimizer.param_groups[0]["momentum"] == 0.9
    rates = []
    for _ in range(7):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    # exact resume: a fresh scheduler loaded from the state continues where this one stopped
    fresh = MultimodalModule(build_net(cfg, task_info(bundle)), cfg, task_info(bundle)).configure_optimizers()
    fresh["lr_scheduler"]["scheduler"].load_state_dict(scheduler.state_dict())
    assert fresh["lr_scheduler"]["scheduler"].get_last_lr() == scheduler.get_last_lr()


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"train__nesterov": True}, "sgd only"),
        ({"train__scheduler": "multistep"}, "needs train.milestones"),
        ({"train__scheduler": "multistep", "train__milestones": [5, 3]}, "increasing"),
        ({"train__milestones": [3]}, "multistep only"),
    ],
)
def test_schedule_options_are_checked(updates, message):
    from mmanet.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        resolve_run_config(tiny_raw("sf_md", **updates))


def test_terms_that_would_start_after_the_last_epoch_are_announced(tiny_config, tmp_path, capsys):
    cfg = tiny_config("mmanet", train__max_epochs=2, mar__warmup_epochs=2, mad__start_epoch=2, train__warmup_epochs=3)
    notes = cfg.schedule_warnings()
    assert [n.split(" ")[0] for n in notes] == ["mar.warmup_epochs", "mad.start_epoch", "train.warmup_epochs"]
    assert tiny_config("mmanet").schedule_warnings() == []
    from mmanet.training.runner import run

    run(cfg, tmp_path / "run")
    printed = capsys.readouterr().out
    assert all(f"warning: {n}" in printed for n in notes)


# ----------------------------------------------------------------------------- one present row


def test_one_present_row_uses_the_running_statistics_and_trains():
    """A modality present in one row of the batch: its encoder's BatchNorm cannot take batch statistics
    (1×1 maps at /32 of 32×32) — it normalises with the running ones and does not change them."""
    spec = ModalitySpec(("a", "b"))
    shapes = {"a": (3, 32, 32), "b": (3, 32, 32)}
    torch.manual_seed(0)
    net = build_network(spec, shapes, 3, encoder="resnet", head="esanet_decoder", width=4, fusion="se_add")
    net.train()
    inputs = {m: torch.randn(3, *shapes[m]) for m in spec.names}
    present = torch.tensor([[True, True], [False, True], [False, True]])  # `a` in row 0 only
    before = {k: v.clone() for k, v in net.encoders["a"].state_dict().items() if "running" in k}
    logits = net(inputs, present)
    after = {k: v for k, v in net.encoders["a"].state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in net.encoders["a"].modules())  # modes restored
    logits.sum().backward()
    grads = [p.grad for p in net.encoders["a"].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # the row's features are those of the encoder with running statistics (its evaluation-mode BatchNorm)
    net.encoders["a"].eval()
    expected = net.encoders["a"](inputs["a"][:1])
    net.encoders["a"].train()
    got = net.encode(inputs, present)
    torch.testing.assert_close(got[-1][0, 0], expected[-1][0])
