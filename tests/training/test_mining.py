"""MAR mining (mmanet.methods.mar): the batched data pass, skipped samples, DDP reduction."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from mmanet.losses import kl_discrepancy, prediction_distribution
from mmanet.methods.mar import WeakCombinationMiner, mine_discrepancies
from mmanet.modality import ModalitySpec
from mmanet.models.network import MultimodalNet, NetOutput


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
