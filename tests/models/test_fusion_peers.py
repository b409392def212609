"""ShaSpec and DMRNet fusions (issue 14): mask-awareness, gradients, exact terms, sampling, ONNX parity."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmanet.config import method_presets
from mmanet.modality import ModalitySpec
from mmanet.models import build_network
from mmanet.models.fusion import FUSIONS, build_fusion
from mmanet.models.fusion.dmrnet import DMRNetFusion, combination_index, default_num_hard
from mmanet.models.fusion.shaspec import ShaSpecFusion

M, B, C, K = 3, 4, 8, 5
PEERS = ["shaspec", "dmrnet"]
COMBOS = [c for c in itertools.product([False, True], repeat=M) if any(c)]
SHAPES = {"vector": (), "map": (3, 3)}
AUX_KEYS = {"shaspec": {"shaspec_align", "shaspec_domain"}, "dmrnet": {"dmrnet_kl", "dmrnet_hard"}}


def make(name: str, shape: tuple[int, ...], seed: int = 0, **options):
    torch.manual_seed(seed)
    if options:
        return FUSIONS.get(name)(M, C, K, spatial=bool(shape), **options)
    return build_fusion(name, M, C, K, spatial=bool(shape))


def features(shape: tuple[int, ...], seed: int = 1, batch: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, M, C, *shape, generator=g)


def targets(batch: int = B) -> torch.Tensor:
    return torch.arange(batch) % K


def mixed_mask() -> torch.Tensor:
    return torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)


def all_combos_mask() -> torch.Tensor:
    return torch.tensor(COMBOS, dtype=torch.bool)


def corrupt_missing(x: torch.Tensor, mask: torch.Tensor, value: float | None = None) -> torch.Tensor:
    y = x.clone()
    g = torch.Generator().manual_seed(99)
    noise = torch.randn(y.shape, generator=g) * 1e3 if value is None else torch.full(y.shape, value)
    missing = (~mask).reshape(mask.shape + (1,) * (x.dim() - 2)).expand_as(x)
    y[missing] = noise[missing]
    return y


def run(fusion, x, mask, target, seed: int = 5):
    """Forward + auxiliary losses with a fixed global RNG state (DMRNet samples in training mode)."""
    torch.manual_seed(seed)
    out = fusion(x, mask)
    aux = fusion.auxiliary_losses(x, mask, target, F.cross_entropy)
    return out, aux, out.sum() + sum(aux.values(), torch.zeros(()))


def test_registered_with_presets():
    assert set(PEERS) <= set(FUSIONS.keys())
    for name in PEERS:
        assert method_presets()[name] == {"stage": "unified", "model": {"fusion": name}}


# ---------------------------------------------------------------- invariants (both fusions)


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "".join("1" if p else "0" for p in c))
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", PEERS)
def test_every_combination_finite_with_full_graph(name, shape, combo):
    fusion = make(name, shape, hard_warmup=1) if name == "dmrnet" else make(name, shape)
    mask = torch.tensor(combo).expand(B, M).clone()
    x = features(shape).requires_grad_(True)
    out, aux, loss = run(fusion, x, mask, targets())
    assert out.shape == (B, fusion.out_channels, *shape)
    assert torch.isfinite(out).all()
    assert set(aux) == AUX_KEYS[name]
    assert all(v.dim() == 0 and torch.isfinite(v) for v in aux.values())
    loss.backward()
    for pname, p in fusion.named_parameters():  # DDP: every parameter in the graph for ANY mask
        assert p.grad is not None, f"{name}.{pname} got no gradient for {combo}"
        assert torch.isfinite(p.grad).all(), pname
    assert torch.isfinite(x.grad).all()
    assert (x.grad[~mask] == 0).all()
    assert x.grad[mask].abs().sum() > 0


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", PEERS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_missing_content_never_leaks(name, shape, train):
    """inf / NaN / huge values in missing modalities change neither outputs, losses nor present gradients."""
    fusion = make(name, shape).train(train)
    mask = mixed_mask()
    x = features(shape).requires_grad_(True)
    ref_out, ref_aux, ref_loss = run(fusion, x, mask, targets())
    ref_loss.backward()
    ref_grad = x.grad.clone()
    params_ref = {n: p.grad.clone() for n, p in fusion.named_parameters()}
    for value in (float("inf"), float("nan"), -1e30, None):
        fusion.zero_grad()
        y = corrupt_missing(x.detach(), mask, value).requires_grad_(True)
        out, aux, loss = run(fusion, y, mask, targets())
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
        for key, v in ref_aux.items():
            torch.testing.assert_close(aux[key], v, atol=1e-6, rtol=1e-5)
        loss.backward()
        assert torch.isfinite(y.grad).all() and (y.grad[~mask] == 0).all()
        torch.testing.assert_close(y.grad, ref_grad, atol=1e-5, rtol=1e-5)
        for n, p in fusion.named_parameters():
            torch.testing.assert_close(p.grad, params_ref[n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", PEERS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_rows_are_independent(name, shape, train):
    """A row's output depends only on its own features and mask (no batch statistics), in both modes."""
    fusion = make(name, shape).train(train)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fusion.modules())
    mask, x = mixed_mask(), features(shape)
    with torch.no_grad():
        torch.manual_seed(3)
        batch_out = fusion(x, mask)
        for i in range(B):
            other_m, other_x = torch.ones_like(mask), features(shape, seed=7)
            other_m[i], other_x[i] = mask[i], x[i]
            torch.manual_seed(3)  # DMRNet: the same noise draw for the same batch shape
            torch.testing.assert_close(fusion(other_x, other_m)[i], batch_out[i], atol=1e-5, rtol=1e-5)
            if not train:
                torch.testing.assert_close(
                    fusion(x[i : i + 1], mask[i : i + 1]), batch_out[i : i + 1], atol=1e-5, rtol=1e-5
                )


@pytest.mark.parametrize("name", PEERS)
def test_dense_targets_for_feature_maps(name):
    fusion = make(name, (3, 3), hard_warmup=1) if name == "dmrnet" else make(name, (3, 3))
    target = torch.randint(0, K, (M, 6, 6))[torch.arange(B) % M]
    aux = fusion.auxiliary_losses(features((3, 3)), mixed_mask(), target, F.cross_entropy)
    assert set(aux) == AUX_KEYS[name] and all(torch.isfinite(v) for v in aux.values())


# ---------------------------------------------------------------- ShaSpec


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_shaspec_fused_slots(shape):
    """Present: f_k = r_k + proj([r_k, s_k]); missing: the mean of the present shared features."""
    fusion: ShaSpecFusion = make("shaspec", shape)
    mask, x = mixed_mask(), features(shape)
    out = fusion(x, mask)
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
    aux = fusion.auxiliary_losses(x, mask, targets(), F.cross_entropy)
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
    aux = fusion.auxiliary_losses(features(()), lone, targets(), F.cross_entropy)
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
        again = fusion(x, mask)
        fusion.auxiliary_losses(x, mask, targets(), F.cross_entropy)
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
    out = fusion(x, mask)
    torch.manual_seed(11)
    eps = torch.randn(mu.shape)
    expected = mu + eps * torch.exp(0.5 * logvar)
    torch.testing.assert_close(out, expected.transpose(1, 2).reshape(out.shape))
    torch.manual_seed(12)
    assert not torch.allclose(fusion(x, mask), out)


def test_dmrnet_kl_exact():
    fusion: DMRNetFusion = make("dmrnet", (3, 3), kl_weight=1.0)
    mask, x = mixed_mask(), features((3, 3))
    mu, logvar = fusion.gaussian(x, mask)
    aux = fusion.eval().auxiliary_losses(x, mask, targets(), F.cross_entropy)
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
    aux = fusion.auxiliary_losses(x, mask, y, F.cross_entropy)
    assert aux["dmrnet_hard"].item() == 0.0 and fusion.hard_combinations() == []  # still warming up
    aux = fusion.auxiliary_losses(x, mask, y, F.cross_entropy)
    assert int(fusion.mining_steps) == 2
    _, logvar = fusion.gaussian(x, mask)
    per_row = logvar.exp().mean(dim=(1, 2)).double()
    torch.testing.assert_close(fusion.mined_variances()[combination_index(mask)], per_row)
    top = per_row.topk(2).indices
    assert set(fusion.hard_combinations()) == {COMBOS[i] for i in top.tolist()}
    assert all(c[1] and not c[0] for c in fusion.hard_combinations())  # the variance-raising modality alone
    # The loss: the hard rows' CE of the hard head on a sample z, scaled by their share of the batch.
    torch.manual_seed(4)
    aux = fusion.auxiliary_losses(x, mask, y, F.cross_entropy)
    torch.manual_seed(4)
    mu, logvar = fusion.gaussian(x, mask)
    z = mu + torch.randn(mu.shape) * torch.exp(0.5 * logvar)
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
    fusion.auxiliary_losses(x, full, targets(), F.cross_entropy)  # only the full combination was seen
    assert fusion.hard_combinations() == [(True, True, True)]
    lone = torch.zeros(B, M, dtype=torch.bool)
    lone[:, 0] = True
    aux = fusion.auxiliary_losses(x, lone, targets(), F.cross_entropy)
    assert aux["dmrnet_hard"].item() == 0.0
    aux["dmrnet_hard"].backward()
    assert fusion.hard_head.weight.grad is not None


def test_dmrnet_rejects_bad_options():
    with pytest.raises(ValueError, match="hard_warmup"):
        DMRNetFusion(M, C, K, hard_warmup=0)
    with pytest.raises(ValueError, match="modalities"):
        DMRNetFusion(17, 2, K)


# ---------------------------------------------------------------- network, training step, export


@pytest.mark.parametrize("name", PEERS)
def test_network_training_step(name):
    torch.manual_seed(0)
    spec = ModalitySpec(("a", "b", "c"))
    shapes = {"a": (5,), "b": (7,), "c": (1, 6, 6)}
    net = build_network(spec, shapes, K, channels=C, fusion=name, head_hidden=16).train()
    inputs = {m: torch.randn(B, *s) for m, s in shapes.items()}
    mask = mixed_mask()
    out = net.forward_all(inputs, mask)
    # network.py is being restructured: use the network's aux-loss entry point where it has one.
    aux_losses = getattr(net, "auxiliary_losses", None) or net.fusion.auxiliary_losses
    aux = aux_losses(out.features, mask, targets(), F.cross_entropy)
    assert aux and {k.split("@")[0] for k in aux} == AUX_KEYS[name]
    loss = F.cross_entropy(out.logits, targets()) + sum(aux.values(), torch.zeros(()))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", PEERS)
def test_fusion_onnx_parity_on_every_combination(tmp_path, name, shape):
    """TorchScript exporter (dynamo=False), dynamic batch; onnxruntime matches eval-mode PyTorch."""
    ort = pytest.importorskip("onnxruntime")
    fusion = make(name, shape).eval()
    x = features(shape, batch=2)
    path = tmp_path / f"{name}.onnx"
    with torch.no_grad():
        torch.onnx.export(
            fusion,
            (x, torch.ones(2, M, dtype=torch.bool)),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["features", "present"],
            output_names=["fused"],
            dynamic_axes={"features": {0: "batch"}, "present": {0: "batch"}, "fused": {0: "batch"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    mask = all_combos_mask()
    x = features(shape, seed=2, batch=len(COMBOS))
    with torch.no_grad():
        expected = fusion(x, mask).numpy()
    got = session.run(["fused"], {"features": x.numpy(), "present": mask.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", PEERS)
def test_network_onnx_parity(tmp_path, name):
    pytest.importorskip("onnxruntime")
    try:  # the export module is moving to mmanet.deploy (restructure in progress)
        from mmanet.deploy.onnx import check_parity, export_onnx
    except ImportError:
        from mmanet.export import check_parity, export_onnx

    torch.manual_seed(0)
    spec = ModalitySpec(("a", "b", "c"))
    shapes = {"a": (5,), "b": (7,), "c": (3,)}
    net = build_network(spec, shapes, K, channels=C, fusion=name, head_hidden=16)
    path = export_onnx(net, shapes, tmp_path / f"{name}.onnx")
    assert check_parity(net, shapes, path) < 1e-4
