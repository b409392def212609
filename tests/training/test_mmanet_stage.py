"""The MMANet deployment stage: frozen teacher, MAD + MAR wiring, weak-set mining, ablation modes."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from mmanet.data import load_dataset
from mmanet.deploy.checkpoint import model_hash_of_checkpoint
from mmanet.models.factory import build_net
from mmanet.training import net_from_checkpoint, run
from mmanet.training.checkpointing import load_checkpoint
from mmanet.training.factory import load_bundle, task_info
from mmanet.training.fit import train_teacher
from mmanet.training.module import MultimodalModule
from mmanet.training.teacher import FrozenTeacher, TeacherMismatchError


@pytest.fixture
def mmanet_run(tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("mmanet") / "run"
    result = run(tiny_config("mmanet", train__max_epochs=4), out)
    return result, out


def test_teacher_is_trained_first_and_referenced_not_stored(mmanet_run):
    result, out = mmanet_run
    teacher_ckpt = out / "teacher" / "checkpoints" / "best.ckpt"
    assert teacher_ckpt.exists()
    ckpt = load_checkpoint(out / "checkpoints" / "best.ckpt")
    assert ckpt["mmanet"]["teacher"] == {"path": str(teacher_ckpt), "sha256": model_hash_of_checkpoint(teacher_ckpt)}
    assert not any("teacher" in k for k in ckpt["state_dict"])  # the teacher's weights are not in it
    assert any(k.startswith("reg_head.") for k in ckpt["state_dict"])  # regularization head: training only
    net, _, _, _ = net_from_checkpoint(out / "checkpoints" / "best.ckpt")
    deploy_keys = set(net.state_dict())
    assert not any(k.startswith("reg_head") for k in deploy_keys)


def test_weak_set_is_mined_during_warmup_and_saved(mmanet_run):
    result, out = mmanet_run
    miner = json.loads((out / "results.json").read_text())["miner"]
    assert sorted(miner["memory_bank"]) == ["0", "1"]  # ω = 2 warm-up epochs
    assert len(miner["strong_modalities"]) == 1
    strong = miner["strong_modalities"][0]
    assert miner["weak_set"] and all(strong not in c.split("+") for c in miner["weak_set"])
    assert len(miner["weak_set"]) == 3  # the non-empty subsets of the two other modalities
    metrics = next(out.glob("logs/version_*/metrics.csv"))
    with metrics.open() as fh:
        rows = list(csv.DictReader(fh))
    mar = {int(r["epoch"]): float(r["train/mar"]) for r in rows if r.get("train/mar")}
    assert mar[0] == 0.0 and mar[1] == 0.0  # no MAR before ω
    assert mar[3] > 0.0
    assert any(r.get("mar/kl_b+c") for r in rows)  # discrepancies are logged


def test_teacher_stays_frozen_and_out_of_the_module(tiny_config, tmp_path):
    cfg = tiny_config("mmanet", train__max_epochs=1)
    bundle = load_bundle(cfg)
    teacher = train_teacher(cfg, bundle, tmp_path)
    module = MultimodalModule(build_net(cfg, task_info(bundle)), cfg, task_info(bundle), teacher=teacher)
    module.train()
    assert not teacher.net.training
    assert all(not p.requires_grad for p in teacher.net.parameters())
    assert not any(p is q for p in module.parameters() for q in teacher.net.parameters())
    assert not any("teacher" in k for k in module.state_dict())


def test_every_trainable_parameter_gets_a_gradient_each_step(tiny_config, tmp_path):
    """DDP without find_unused_parameters: the regularization head is in the graph before ω too."""
    cfg = tiny_config("mmanet", train__max_epochs=1)
    bundle = load_bundle(cfg)
    teacher = train_teacher(cfg, bundle, tmp_path)
    module = MultimodalModule(build_net(cfg, task_info(bundle)), cfg, task_info(bundle), teacher=teacher)
    module.log = lambda *a, **k: None  # no trainer attached
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=16)
    loss = module.training_step(next(iter(loader)), 0)
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_teacher_checkpoint_is_loaded_instead_of_trained(tiny_config, tmp_path):
    first = run(tiny_config("teacher", train__max_epochs=2), tmp_path / "teacher")
    assert first.table.rows[0][0].is_full and len(first.table.rows) == 1
    path = tmp_path / "teacher" / "checkpoints" / "best.ckpt"
    result = run(tiny_config("mad", train__max_epochs=1, teacher__checkpoint=str(path)), tmp_path / "mad")
    assert not (tmp_path / "mad" / "teacher").exists()
    assert result.extras["teacher"]["sha256"] == model_hash_of_checkpoint(path)


def test_teacher_with_other_modalities_is_a_clear_error(tiny_config, tmp_path):
    two = {"num_samples": 120, "num_classes": 3, "modalities": {"a": 8, "b": 8}}
    run(tiny_config("teacher", train__max_epochs=1, data__options=two), tmp_path / "teacher")
    path = str(tmp_path / "teacher" / "checkpoints" / "best.ckpt")
    with pytest.raises(TeacherMismatchError, match="modalities"):
        run(tiny_config("mmanet", teacher__checkpoint=path), tmp_path / "run")


def test_teacher_feature_shape_mismatch_is_a_clear_error(tiny_config):
    cfg = tiny_config("mmanet")
    bundle = load_dataset("toy", num_samples=120, num_classes=3)
    info = task_info(bundle)
    other = tiny_config("mmanet", model__head={"hidden": 32})
    teacher = FrozenTeacher(build_net(other, info))
    sample = {m: torch.randn(2, 8) for m in "abc"}
    with pytest.raises(TeacherMismatchError, match="feature shape"):
        teacher.check_compatible(build_net(cfg, info), sample, "embedding")


@pytest.mark.parametrize(
    ("method", "has_head", "weak"),
    [("sr", True, ["a", "b", "c"]), ("mad", False, None), ("sp", False, None)],
)
def test_ablation_modes(tiny_config, tmp_path, method, has_head, weak):
    cfg = tiny_config(method, train__max_epochs=1)
    bundle = load_bundle(cfg)
    module = MultimodalModule(
        build_net(cfg, task_info(bundle)),
        cfg,
        task_info(bundle),
        teacher=FrozenTeacher(build_net(cfg, task_info(bundle))),
    )
    assert (module.reg_head is not None) == has_head
    mar = module.method.mar
    if weak is not None:
        assert [c.name for c in mar.weak_set.weak_set] == weak
    assert mar is None or mar.miner is None
