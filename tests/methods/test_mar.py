"""MAR in one module (mmanet.methods.mar): mining (the batched data pass, skipped samples, DDP reduction,
fixed inputs), the regularization term with every registered head, and the method's MAR inside a training
module (miner settings, the weak set at ω and after a resume, the term)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from conftest import tiny_raw
from mmanet.config import resolve_run_config
from mmanet.losses import kl_discrepancy, mar_loss, mar_loss_official, prediction_distribution
from mmanet.methods.base import labels_at
from mmanet.methods.mar import WeakCombinationMiner, mine_discrepancies, mining_loader
from mmanet.modality import ModalitySpec
from mmanet.models.factory import build_net
from mmanet.models.heads import HEADS
from mmanet.models.network import MultimodalNet, NetOutput
from mmanet.task import TaskInfo
from mmanet.training.factory import load_bundle, make_loader
from mmanet.training.module import MultimodalModule
from mmanet.training.teacher import FrozenTeacher
from step_helpers import setup, step_context

# ------------------------------------------------------ mining: the batched data pass, skipped samples, DDP reduction


class FakeNet(nn.Module):
    """encode: stack the raw inputs; fuse_predict: logits = Σ_m mask_m · scale_m · x_m."""

    def __init__(self, spec: ModalitySpec, scales: list[float]) -> None:
        super().__init__()
        self.spec = spec
        self.scale = nn.Parameter(torch.tensor(scales))
        self.sub = nn.Linear(1, 1)
        self.encode_calls = 0
        self.fuse_calls = 0
        self.modes_seen: list[bool] = []

    def encode(self, inputs: dict[str, Tensor], present: Tensor | None = None) -> list[Tensor]:
        self.encode_calls += 1
        return [torch.stack([inputs[m] for m in self.spec.names], dim=1)]  # (B, M, K)

    def fuse_predict(self, features: list[Tensor], mask: Tensor) -> NetOutput:
        assert mask.any(dim=1).all(), "an all-missing row was fed to the network"
        self.fuse_calls += 1
        self.modes_seen.append(self.training)
        fused = (features[0] * (mask.float() * self.scale)[:, :, None]).sum(dim=1)
        return NetOutput(features, [fused], fused, {"fused": fused})

    predict_combinations = MultimodalNet.predict_combinations
    predict_all = MultimodalNet.predict_all


def _loader(spec: ModalitySpec, k: int = 3, batches: int = 3, b: int = 8, seed: int = 0, present=None):
    """Modality 0 carries the class strongly (one-hot · 1), the others weak noise."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        y = torch.randint(0, k, (b,), generator=g)
        inputs = {}
        for i, name in enumerate(spec.names):
            noise = 0.3 * torch.randn(b, k, generator=g)
            inputs[name] = noise + (torch.nn.functional.one_hot(y, k).float() if i == 0 else 0.0)
        p = torch.ones(b, len(spec), dtype=torch.bool) if present is None else present.clone()
        out.append((inputs, p, y))
    return out


SPEC3 = ModalitySpec(("a", "b", "c"))


def mine(net, loader, miner: WeakCombinationMiner | None = None) -> dict[str, float]:
    """Mine one epoch; with a miner, record it as epoch 0 (as the callback does)."""
    candidates = (miner or WeakCombinationMiner(net.spec)).candidates
    d, _ = mine_discrepancies(net, loader, candidates)
    if miner is not None:
        miner.record(0, d)
    return d


def test_miner_finds_the_strong_modality_and_the_weak_set():
    net = FakeNet(SPEC3, [8.0, 1.0, 1.0])
    net.train()
    net.sub.eval()  # a submodule's own mode must survive mining
    miner = WeakCombinationMiner(SPEC3)
    loader = _loader(SPEC3)
    d = mine(net, loader, miner)
    assert set(d) == {"b+c", "a+c", "a+b"}
    assert d["b+c"] > 10 * max(d["a+c"], d["a+b"])
    assert all(v >= 0 for v in d.values())
    # encode once per batch, ONE batched fuse for all candidates per batch, eval mode inside, modes restored
    assert net.encode_calls == len(loader)
    assert net.fuse_calls == len(loader)
    assert not any(net.modes_seen)
    assert net.training and not net.sub.training
    assert miner.weak_set is None and miner.strong_modalities is None
    weak = miner.select()
    assert {c.name for c in weak} == {"b", "c", "b+c"}
    assert miner.strong_modalities == ["a"]
    assert {c.name for c in miner.weak_set} == {"b", "c", "b+c"}


def test_mined_discrepancies_match_direct_computation():
    net = FakeNet(SPEC3, [2.0, 1.0, 0.5])
    loader = _loader(SPEC3, batches=2)
    d = mine(net, loader)
    feats = [torch.cat([net.encode(inputs)[0] for inputs, _, _ in loader])]
    all_present = torch.ones(16, 3, dtype=torch.bool)
    full = prediction_distribution(net.fuse_predict(feats, all_present).logits.double())
    for combo in WeakCombinationMiner(SPEC3).leave_one_out:
        mask = combo.mask().expand(16, 3)
        q = prediction_distribution(net.fuse_predict(feats, mask).logits.double())
        assert d[combo.name] == pytest.approx(kl_discrepancy(full, q).item(), rel=1e-5)


def test_miner_skips_samples_with_no_modality_of_a_candidate():
    present = torch.ones(8, 3, dtype=torch.bool)
    present[:3] = torch.tensor([True, False, False])  # three samples have only 'a'
    net = FakeNet(SPEC3, [8.0, 1.0, 1.0])
    miner = WeakCombinationMiner(SPEC3)
    d, skipped = mine_discrepancies(net, _loader(SPEC3, batches=2, present=present), miner.candidates)
    assert skipped == {"a+b+c": 0, "b+c": 6, "a+c": 0, "a+b": 0}
    assert all(math.isfinite(v) for v in d.values())


def test_miner_errors_when_a_candidate_never_has_data():
    present = torch.zeros(8, 3, dtype=torch.bool)
    present[:, 0] = True
    with pytest.raises(ValueError, match="b\\+c"):
        mine(FakeNet(SPEC3, [1.0, 1.0, 1.0]), _loader(SPEC3, present=present))
    with pytest.raises(ValueError, match="no batch"):
        mine(FakeNet(SPEC3, [1.0, 1.0, 1.0]), [])


def test_m2_mining():
    spec = ModalitySpec(("rgb", "depth"))
    net = FakeNet(spec, [6.0, 1.0])
    miner = WeakCombinationMiner(spec)
    d = mine(net, _loader(spec), miner)
    assert set(d) == {"rgb", "depth"}
    assert d["depth"] > d["rgb"]
    assert [c.name for c in miner.select()] == ["depth"]
    assert miner.strong_modalities == ["rgb"]


def test_miner_with_a_real_network():
    from mmanet.models import build_network

    torch.manual_seed(0)
    net = build_network(SPEC3, {"a": (3,), "b": (3,), "c": (3,)}, num_classes=3, channels=8, head_hidden=8)
    net.train()
    d = mine(net, _loader(SPEC3, batches=2), WeakCombinationMiner(SPEC3))
    assert set(d) == {"b+c", "a+c", "a+b"}
    assert all(math.isfinite(v) and v >= 0 for v in d.values())
    assert net.training


def test_miner_all_reduces_under_torch_distributed(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    net = FakeNet(SPEC3, [8.0, 1.0, 1.0])
    loader = _loader(SPEC3)
    expected = mine(net, loader)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        got = mine(net, loader)
    finally:
        dist.destroy_process_group()
    assert got == pytest.approx(expected, rel=1e-12)


def test_the_miners_eps_reaches_the_discrepancies():
    """mine_discrepancies(eps=…) is the ε of D_c = KL(q_full ‖ q_c) (the callback passes the miner's)."""
    net = FakeNet(SPEC3, [8.0, 1.0, 1.0])
    candidates = WeakCombinationMiner(SPEC3).candidates
    loader = _loader(SPEC3)
    got, _ = mine_discrepancies(net, loader, candidates, eps=0.5)
    n = sum(x["a"].shape[0] for x, _, _ in loader)
    q = {}
    with torch.no_grad():
        for combo in candidates:
            total = 0.0
            for x, _, _ in loader:
                logits = net.fuse_predict(net.encode(x), combo.mask().expand(x["a"].shape[0], 3)).logits
                total = total + torch.softmax(logits.double(), dim=1).sum(dim=0)
            q[combo.name] = total / n
    full = q[candidates[0].name]
    for combo in candidates[1:]:
        want = float((full * torch.log((full + 0.5) / (q[combo.name] + 0.5))).sum())
        assert got[combo.name] == pytest.approx(want, rel=1e-6)
        assert got[combo.name] != pytest.approx(float(kl_discrepancy(full, q[combo.name])), rel=1e-3)


# ----------------------------------------------------------------- the regularization head with every registered head
# MAR's regularization head with every registered head (BatchNorm included) at an awkward batch: B = 4
# with exactly one weak row — the case that crashed both image workloads when the head ran on the weak
# rows only. The head runs on the whole batch; the term is ``(1/B) Σ_i m_i CE_i`` (paper) or the authors'
# form (official), computed here independently; every parameter of the head gets a gradient.


SPEC = ModalitySpec(("a", "b"))


#: per registered head: the encoder that feeds it, the input shape, the task
HEAD_SETUPS = {
    "classification": ({"type": "mlp", "hidden": 8}, (6,), "classification"),
    "resnet_trunk": ({"type": "sf_resnet"}, (3, 32, 32), "classification"),
    "esanet_decoder": ({"type": "resnet"}, (3, 32, 32), "segmentation"),
    "segmentation": ({"type": "cnn", "pool": False}, (3, 16, 16), "segmentation"),
}


def test_every_registered_head_is_covered():
    assert set(HEAD_SETUPS) == set(HEADS.keys())


def _module(head: str, variant: str, class_weights: torch.Tensor | None = None):
    encoder, shape, task = HEAD_SETUPS[head]
    info = TaskInfo(SPEC, 3, {"a": shape, "b": shape}, task=task, ignore_index=255 if task == "segmentation" else None)
    channels = 8 if head in ("classification", "segmentation") else None  # the others keep the ResNet widths
    config = resolve_run_config(
        {
            "method": "sr",  # SR: the single-modality combinations are the weak set, no mining needed
            "model": {"width": 4, "channels": channels, "encoder": encoder,
                      "head": {"type": head}, "fusion": "concat" if task == "classification" else "se_add",
                      "dropout": 0.1},
            "mad": {"variant": "off"},
            "mar": {"beta": 1.0, "warmup_epochs": 1, "variant": variant},
        }
    )  # fmt: skip
    torch.manual_seed(0)
    teacher = FrozenTeacher(build_net(config, info))
    module = MultimodalModule(build_net(config, info), config, info, teacher=teacher, class_weights=class_weights)
    return module.train(), info


def _batch(info: TaskInfo, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = info.input_shapes["a"]
    inputs = {m: torch.randn(4, *shape, generator=g) for m in SPEC.names}
    if info.task == "segmentation":
        target = torch.randint(0, info.num_classes, (4, *shape[1:]), generator=g)
        target[0, 1, 1] = 255  # one void pixel (a 1×1 side output still sees a label)
    else:
        target = torch.randint(0, info.num_classes, (4,), generator=g)
    return inputs, torch.ones(4, 2, dtype=torch.bool), target


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("head", sorted(HEAD_SETUPS))
def test_one_weak_row_with_every_head(head, variant, at_epoch):
    weights = torch.linspace(0.5, 1.5, 3) if HEAD_SETUPS[head][2] == "segmentation" else None
    module, info = _module(head, variant, weights)
    inputs, present, target = _batch(info)
    mask = torch.tensor([[True, False], [True, True], [True, True], [True, True]])  # row 0 alone is weak
    at_epoch(1)
    out = module.net.forward_all(inputs, mask)
    weak = module.method.mar.weak_mask(mask, epoch=1)
    assert weak.tolist() == [True, False, False, False]
    torch.manual_seed(3)
    got = module.method.mar.term(step_context(module, inputs, present, mask, target, out), weak, weights)
    torch.manual_seed(3)  # the same dropout draws in the independent pass
    reg = module.reg_head(out.fused)  # the head on the whole batch, BatchNorm in training mode
    if variant == "paper":
        expected = mar_loss(reg.logits, target, weak, ignore_index=module.ignore_index)
    elif info.task == "segmentation":  # the authors' loss: the weak rows' weighted CE at every scale
        expected = sum(
            F.cross_entropy(s[:1], labels_at(s, target)[:1], weight=weights, ignore_index=255)
            for s in [reg.logits, *reg.aux_logits]
        )
    else:
        expected = mar_loss_official(reg.logits, target, weak)
    torch.testing.assert_close(got, expected)
    assert torch.isfinite(got) and got > 0
    module.zero_grad()
    step = step_context(module, inputs, present, mask, target, module.net.forward_all(inputs, mask))
    module.method.mar.term(step, weak, weights).backward()
    missing = [n for n, p in module.reg_head.named_parameters() if p.grad is None]
    assert not missing, f"parameters of the regularization head without gradient: {missing[:5]}"


@pytest.mark.parametrize("head", sorted(HEAD_SETUPS))
def test_a_whole_training_step_with_one_weak_row_and_a_batch_of_two(head, at_epoch):
    """The full step (task, deep supervision, MAR) with B = 2, one of them weak: BatchNorm everywhere."""
    module, info = _module(head, "paper")
    inputs, present, target = _batch(info)
    batch = ({k: v[:2] for k, v in inputs.items()}, present[:2], target[:2])
    at_epoch(1)
    module.dropout = lambda present: torch.tensor([[False, True], [True, True]])  # row 0 keeps b alone
    module.log = lambda *args, **kwargs: None
    total = module.training_step(batch, 0)
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in module.reg_head.parameters())


# ----------------------------------------------------------------------------- the method's MAR in a training module


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


# ----------------------------------------------------------------------------- mining sees fixed inputs (issue 19)


def test_mining_reads_the_training_split_without_augmentation():
    rooms = {"num_train": 6, "num_val": 2, "num_test": 2, "height": 16, "width": 24, "augment": True}
    config = resolve_run_config(tiny_raw("mmanet", data={"name": "rooms", "options": rooms, "batch_size": 3}))
    bundle = load_bundle(config)
    assert bundle.train.augment

    def first_batch(loader_of, epoch: int):
        bundle.train.set_epoch(epoch)
        inputs, _, target = next(iter(loader_of()))
        return inputs["rgb"], target

    train = [first_batch(lambda: make_loader(bundle.train, config, train=False), e) for e in (0, 1)]
    assert not torch.equal(train[0][0], train[1][0])  # the training split augments differently per epoch
    mined = [first_batch(lambda: mining_loader(bundle, config), e) for e in (0, 1)]
    assert torch.equal(mined[0][0], mined[1][0]) and torch.equal(mined[0][1], mined[1][1])
    plain = bundle.train.without_augmentation()
    assert not plain.augment and torch.equal(plain[0][0]["rgb"], mined[0][0][0])
