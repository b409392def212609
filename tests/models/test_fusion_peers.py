"""What ShaSpec and DMRNet compute, exactly (issue 14): the fused slots, the exact terms, sampling, mining.

What every fusion must do (every combination, the leak test, gradients, rows, the cache of the auxiliary
losses, export) is checked on the whole registry in ``test_fusion_contract.py``.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mmanet.config import method_presets
from mmanet.modality import ModalitySpec
from mmanet.models.fusion import FUSIONS, build_fusion
from mmanet.models.fusion.dmrnet import DMRNetFusion, combination_index, default_num_hard
from mmanet.models.fusion.shaspec import ShaSpecFusion

M, B, C, K = 3, 4, 8, 5
PEERS = ["shaspec", "dmrnet"]
COMBOS = [c for c in itertools.product([False, True], repeat=M) if any(c)]
SHAPES = {"vector": (), "map": (3, 3)}


def make(name: str, shape: tuple[int, ...], seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_fusion(name, M, C, K, bool(shape), **options)


def features(shape: tuple[int, ...], seed: int = 1, batch: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, M, C, *shape, generator=g)


def targets(batch: int = B) -> torch.Tensor:
    return torch.arange(batch) % K


def mixed_mask() -> torch.Tensor:
    return torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)


def all_combos_mask() -> torch.Tensor:
    return torch.tensor(COMBOS, dtype=torch.bool)


def aux_losses(fusion, x, mask, target, seed: int = 5):
    """The auxiliary losses of one training forward, with a fixed global RNG state (DMRNet samples)."""
    torch.manual_seed(seed)
    return fusion.auxiliary_losses(fusion.train()(x, mask), target, F.cross_entropy)


def test_registered_with_presets():
    assert set(PEERS) <= set(FUSIONS.keys())
    for name in PEERS:
        assert method_presets()[name] == {"stage": "unified", "model": {"fusion": {"type": name}}}


# ---------------------------------------------------------------- ShaSpec


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_shaspec_fused_slots(shape):
    """Present: f_k = r_k + proj([r_k, s_k]); missing: the mean of the present shared features."""
    fusion: ShaSpecFusion = make("shaspec", shape)
    mask, x = mixed_mask(), features(shape)
    out = fusion(x, mask).fused
    specific, shared = fusion.features(x, mask)
    p = specific.shape[2]
    slots = out.reshape(B, M, C, p).transpose(2, 3)  # (B, M, P, C)
    for i in range(B):
        present = [k for k in range(M) if mask[i, k]]
        fill = sum(shared[i, k] for k in present) / len(present)
        for k in range(M):
            if mask[i, k]:
                expected = shared[i, k] + fusion.compose(torch.cat([shared[i, k], specific[i, k]], dim=-1))
            else:
                expected = fill
            torch.testing.assert_close(slots[i, k], expected)


def test_shaspec_one_shared_projection_for_all_modalities():
    fusion: ShaSpecFusion = make("shaspec", ())
    x = features(())
    x[:, 1] = x[:, 0]  # the same content in two modalities ...
    _, shared = fusion.features(x, torch.ones(B, M, dtype=torch.bool))
    specific, _ = fusion.features(x, torch.ones(B, M, dtype=torch.bool))
    torch.testing.assert_close(shared[:, 0], shared[:, 1])  # ... gives the same shared feature
    assert not torch.allclose(specific[:, 0], specific[:, 1])  # ... but different specific ones
    assert fusion.specific_weight.shape == (M, C, C) and fusion.shared.weight.shape == (C, C)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_shaspec_auxiliary_losses_exact(shape):
    fusion: ShaSpecFusion = make("shaspec", shape, align_weight=1.0, domain_weight=1.0)
    mask, x = mixed_mask(), features(shape)
    aux = aux_losses(fusion, x, mask, targets())
    specific, shared = fusion.features(x, mask)
    distances, logits, labels = [], [], []
    for i in range(B):
        present = [k for k in range(M) if mask[i, k]]
        distances += [(shared[i, a] - shared[i, b]).abs().mean() for a, b in itertools.combinations(present, 2)]
        for k in present:
            logits.append(fusion.domain_head(specific[i, k].mean(dim=0)))
            labels.append(k)
    torch.testing.assert_close(aux["shaspec_align"], torch.stack(distances).mean())
    torch.testing.assert_close(aux["shaspec_domain"], F.cross_entropy(torch.stack(logits), torch.tensor(labels)))


def test_shaspec_default_weights_and_lone_modalities():
    fusion = make("shaspec", ())
    assert (fusion.align_weight, fusion.domain_weight) == (0.1, 0.02)
    lone = torch.zeros(B, M, dtype=torch.bool)
    lone[torch.arange(B), torch.arange(B) % M] = True
    aux = aux_losses(fusion, features(()), lone, targets())
    assert aux["shaspec_align"].item() == 0.0  # no sample has a pair of present modalities
    assert aux["shaspec_domain"].item() > 0


# ---------------------------------------------------------------- DMRNet


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_dmrnet_eval_is_the_mean_and_deterministic(shape):
    fusion: DMRNetFusion = make("dmrnet", shape).eval()
    mask, x = mixed_mask(), features(shape)
    state = torch.get_rng_state()
    with torch.no_grad():
        out = fusion(x, mask)
        again = fusion(x, mask).fused
        assert fusion.auxiliary_losses(out, targets(), F.cross_entropy) == {}  # eval keeps nothing for them
        out = out.fused
    assert torch.equal(torch.get_rng_state(), state)  # eval draws nothing
    assert torch.equal(out, again)
    mu, _ = fusion.gaussian(x, mask)
    torch.testing.assert_close(out, mu.transpose(1, 2).reshape(out.shape))
    assert int(fusion.mining_steps) == 0  # eval changes no state


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_dmrnet_training_samples_from_the_global_rng(shape):
    fusion: DMRNetFusion = make("dmrnet", shape).train()
    mask, x = mixed_mask(), features(shape)
    mu, logvar = fusion.gaussian(x, mask)
    torch.manual_seed(11)
    out = fusion(x, mask).fused
    torch.manual_seed(11)
    eps = torch.randn(mu.shape)
    expected = mu + eps * torch.exp(0.5 * logvar)
    torch.testing.assert_close(out, expected.transpose(1, 2).reshape(out.shape))
    torch.manual_seed(12)
    assert not torch.allclose(fusion(x, mask).fused, out)


def test_dmrnet_kl_exact():
    fusion: DMRNetFusion = make("dmrnet", (3, 3), kl_weight=1.0)
    mask, x = mixed_mask(), features((3, 3))
    mu, logvar = fusion.gaussian(x, mask)
    aux = aux_losses(fusion, x, mask, targets())
    var = logvar.exp()
    expected = torch.stack(
        [0.5 * (var[i, p] + mu[i, p] ** 2 - torch.log(var[i, p]) - 1).sum() for i in range(B) for p in range(9)]
    ).mean()
    torch.testing.assert_close(aux["dmrnet_kl"], expected)
    assert fusion.kl_weight == 1.0 and make("dmrnet", ()).kl_weight == 1e-3


def test_dmrnet_default_number_of_hard_combinations():
    assert [default_num_hard(m) for m in (2, 3, 6)] == [1, 3, 21]
    assert make("dmrnet", ()).num_hard == 3 and make("dmrnet", ()).hard_weight == 0.3
    codes = combination_index(torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1]], dtype=torch.bool))
    assert codes.tolist() == [1, 6, 7]


def test_dmrnet_hard_combination_mining_and_loss():
    """Warm-up accumulates σ² per combination; then the top-V are hard and only their rows get the extra loss."""
    fusion: DMRNetFusion = make("dmrnet", (), hard_warmup=2, num_hard=2, hard_weight=1.0).train()
    mask, x, y = all_combos_mask(), features((), batch=len(COMBOS)), targets(len(COMBOS))
    with torch.no_grad():  # make the variance depend on the combination
        fusion.logvar_head.bias.zero_()
        fusion.logvar_head.weight.zero_()
        fusion.logvar_head.weight[:, :C] = -0.5  # modality 0 lowers the variance ...
        fusion.logvar_head.weight[:, C : 2 * C] = 0.3  # ... modality 1 raises it
    x = x.abs()
    aux = aux_losses(fusion, x, mask, y)
    assert aux["dmrnet_hard"].item() == 0.0 and fusion.hard_combinations() == []  # still warming up
    aux = aux_losses(fusion, x, mask, y)
    assert int(fusion.mining_steps) == 2
    _, logvar = fusion.gaussian(x, mask)
    per_row = logvar.exp().mean(dim=(1, 2)).double()
    torch.testing.assert_close(fusion.mined_variances()[combination_index(mask)], per_row)
    top = per_row.topk(2).indices
    assert set(fusion.hard_combinations()) == {COMBOS[i] for i in top.tolist()}
    assert all(c[1] and not c[0] for c in fusion.hard_combinations())  # the variance-raising modality alone
    # The loss: the hard rows' CE of the hard head on the forward's sample z, scaled by their share of the batch.
    torch.manual_seed(4)
    out = fusion(x, mask)
    state = torch.get_rng_state()
    aux = fusion.auxiliary_losses(out, y, F.cross_entropy)
    assert torch.equal(torch.get_rng_state(), state)  # no second draw
    torch.manual_seed(4)
    mu, logvar = fusion.gaussian(x, mask)
    z = mu + torch.randn(mu.shape) * torch.exp(0.5 * logvar)
    torch.testing.assert_close(out.fused, z.transpose(1, 2).reshape(out.fused.shape))  # the network's z
    ce = F.cross_entropy(fusion.hard_head(z).mean(dim=1), y, reduction="none")
    hard = torch.zeros(len(COMBOS), dtype=torch.bool)
    hard[top] = True
    torch.testing.assert_close(aux["dmrnet_hard"], (ce * hard).sum() / len(COMBOS))
    # The hard set is fixed after the warm-up and saved with the weights.
    state = fusion.state_dict()
    assert {"variance_sum", "variance_count", "mining_steps", "hard"} <= set(state)
    restored = make("dmrnet", (), seed=3, hard_warmup=2, num_hard=2)
    restored.load_state_dict(state)
    assert restored.hard_combinations() == fusion.hard_combinations()


def test_dmrnet_hard_loss_zero_without_hard_rows_but_in_graph():
    fusion: DMRNetFusion = make("dmrnet", (), hard_warmup=1, num_hard=1).train()
    full = torch.ones(B, M, dtype=torch.bool)
    x = features(())
    aux_losses(fusion, x, full, targets())  # only the full combination was seen
    assert fusion.hard_combinations() == [(True, True, True)]
    lone = torch.zeros(B, M, dtype=torch.bool)
    lone[:, 0] = True
    aux = aux_losses(fusion, x, lone, targets())
    assert aux["dmrnet_hard"].item() == 0.0
    aux["dmrnet_hard"].backward()
    assert fusion.hard_head.weight.grad is not None


def test_dmrnet_rejects_bad_options():
    with pytest.raises(ValueError, match="hard_warmup"):
        DMRNetFusion(M, C, K, hard_warmup=0)
    with pytest.raises(ValueError, match="modalities"):
        DMRNetFusion(17, 2, K)


def test_dmrnet_mines_only_on_training_steps():
    """A mining step is a training forward's auxiliary losses; evaluation passes change no statistics."""
    fusion: DMRNetFusion = make("dmrnet", (), hard_warmup=3)
    x, mask = features(()), mixed_mask()
    with torch.no_grad():
        fusion.eval()(x, mask)
    assert int(fusion.mining_steps) == 0
    aux_losses(fusion, x, mask, targets())
    assert int(fusion.mining_steps) == 1
    torch.testing.assert_close(fusion.variance_count[combination_index(mask)], torch.ones(B, dtype=torch.float64))


def test_options_through_the_config():
    """``model.fusion: {hard_warmup: 50}`` with ``method: dmrnet`` keeps the method's fusion and sets its option."""
    from mmanet.config import resolve_run_config
    from mmanet.models.factory import build_net
    from mmanet.task import TaskInfo

    config = resolve_run_config({"method": "dmrnet", "model": {"fusion": {"hard_warmup": 50}, "channels": C}})
    assert config.model.fusion.type == "dmrnet" and config.model.fusion.options() == {"hard_warmup": 50}
    net = build_net(config, TaskInfo(ModalitySpec(("a", "b", "c")), K, {"a": (5,), "b": (7,), "c": (3,)}))
    assert net.fusion.hard_warmup == 50
    shaspec = resolve_run_config({"method": "shaspec", "model": {"fusion": {"align_weight": 0.3}}})
    assert shaspec.model.fusion.as_dict() == {"type": "shaspec", "align_weight": 0.3}
