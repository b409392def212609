"""Mask-awareness, gradients and exact values of the fusion modules (BASELINES.md)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mmanet.modality import ModalitySpec
from mmanet.models import build_network
from mmanet.models.fusion import FUSIONS, build_fusion

M, B, C, K = 3, 4, 8, 5
COMBOS = [c for c in itertools.product([False, True], repeat=M) if any(c)]
SHAPES = {"vector": (), "map": (4, 4)}
UNIFIED = ["hemis", "lcr", "mmformer", "rfnet"]
AUX_KEYS = {
    "concat": set(),
    "hemis": set(),
    "lcr": {"lcr_recon"},
    "rfnet": {"rfnet_sep", "rfnet_prm"},
    "mmformer": {"mmformer_sep"},
}


def make(name: str, shape: tuple[int, ...], seed: int = 0):
    torch.manual_seed(seed)
    return build_fusion(name, M, C, K, spatial=bool(shape))


def features(shape: tuple[int, ...], seed: int = 1, batch: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, M, C, *shape, generator=g)


def targets(batch: int = B) -> torch.Tensor:
    return torch.arange(batch) % K


def mixed_mask() -> torch.Tensor:
    """Rows with different combinations, every modality present somewhere and missing somewhere."""
    return torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)


def corrupt_missing(x: torch.Tensor, mask: torch.Tensor, value: float | None = None) -> torch.Tensor:
    """Replace the missing modalities' features with large noise (or a constant such as inf)."""
    y = x.clone()
    g = torch.Generator().manual_seed(99)
    noise = torch.randn(y.shape, generator=g) * 1e3 if value is None else torch.full(y.shape, value)
    missing = (~mask).reshape(mask.shape + (1,) * (x.dim() - 2)).expand_as(x)
    y[missing] = noise[missing]
    return y


def total_loss(fusion, x, mask, target):
    out = fusion(x, mask)
    aux = fusion.auxiliary_losses(x, mask, target, F.cross_entropy)
    return out, aux, out.sum() + sum(aux.values(), torch.zeros(()))


def test_registry_has_all_baselines():
    assert set(UNIFIED) | {"concat"} <= set(FUSIONS.keys())


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "".join("1" if p else "0" for p in c))
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", FUSIONS.keys())
def test_shape_grads_and_missing_invariance(name, shape, combo):
    fusion = make(name, shape)
    mask = torch.tensor(combo).expand(B, M).clone()  # the same combination batch-wide
    x = features(shape).requires_grad_(True)
    out, aux, loss = total_loss(fusion, x, mask, targets())
    assert out.shape == (B, fusion.out_channels, *shape)
    assert torch.isfinite(out).all()
    assert set(aux) == AUX_KEYS.get(name, set(aux))
    assert all(torch.isfinite(v) and v.dim() == 0 for v in aux.values())
    loss.backward()
    # Every parameter is in the graph for ANY mask (DDP without find_unused_parameters).
    for pname, p in fusion.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient for mask {combo}"
        assert torch.isfinite(p.grad).all(), pname
    assert torch.isfinite(x.grad).all()
    assert (x.grad[~mask] == 0).all(), "a missing modality received gradient"

    fusion.eval()
    with torch.no_grad():
        x = x.detach()
        ref = fusion(x, mask)
        ref_aux = fusion.auxiliary_losses(x, mask, targets(), F.cross_entropy)
        noisy = corrupt_missing(x, mask)
        assert torch.allclose(fusion(noisy, mask), ref, atol=1e-5)
        noisy_aux = fusion.auxiliary_losses(noisy, mask, targets(), F.cross_entropy)
        for key, value in ref_aux.items():
            assert torch.allclose(noisy_aux[key], value, atol=1e-5), key
        # The present modalities' content does reach the output.
        present_changed = corrupt_missing(x, ~mask)
        assert not torch.allclose(fusion(present_changed, mask), ref, atol=1e-3)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", UNIFIED)
def test_non_finite_missing_content_never_leaks(name, shape):
    fusion = make(name, shape).eval()
    mask = mixed_mask()
    x = features(shape)
    with torch.no_grad():
        ref = fusion(x, mask)
        for value in (float("inf"), float("nan"), -1e30):
            out = fusion(corrupt_missing(x, mask, value), mask)
            assert torch.isfinite(out).all()
            assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", FUSIONS.keys())
def test_per_sample_independence(name, shape):
    fusion = make(name, shape).eval()
    mask = mixed_mask()
    x = features(shape)
    other_mask = torch.ones_like(mask)
    other_x = features(shape, seed=7)
    with torch.no_grad():
        batch_out = fusion(x, mask)
        for i in range(B):
            alone = fusion(x[i : i + 1], mask[i : i + 1])
            assert torch.allclose(batch_out[i : i + 1], alone, atol=1e-5), f"row {i}"
            # Other rows' masks and contents change; row i must not.
            mixed_m, mixed_x = other_mask.clone(), other_x.clone()
            mixed_m[i], mixed_x[i] = mask[i], x[i]
            assert torch.allclose(fusion(mixed_x, mixed_m)[i], batch_out[i], atol=1e-5), f"row {i}"


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_hemis_exact_moments(shape):
    fusion = make("hemis", shape)
    mask = mixed_mask()
    x = features(shape).double()
    out = fusion(x, mask)
    assert out.dtype == x.dtype
    for i in range(B):
        present = [x[i, k] for k in range(M) if mask[i, k]]
        n = len(present)
        mean = sum(present) / n
        var = sum((p - mean) ** 2 for p in present) / n
        torch.testing.assert_close(out[i, :C], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out[i, C:], var, rtol=1e-5, atol=1e-6)
    assert (out[0, C:] == 0).all() and (out[3, C:] == 0).all()  # one modality: variance exactly 0


def test_hemis_variance_gradient_finite_with_one_modality():
    fusion = make("hemis", ())
    x = features(()).requires_grad_(True)
    mask = torch.zeros(B, M, dtype=torch.bool)
    mask[:, 1] = True
    fusion(x, mask).sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad[:, 1], torch.ones(B, C))  # d mean / dx = 1, d var / dx = 0


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_lcr_representations(shape):
    fusion = make("lcr", shape)
    mask = mixed_mask()
    x = features(shape)
    tilde, r, _ = fusion._representations(x, mask)
    alpha, delta = fusion.coefficients(x, mask)
    assert alpha.shape == (B, M, M) and delta.shape == (B, M)
    assert not torch.allclose(alpha[0], alpha[1])  # per-sample coefficients
    # A missing modality's representation is zero.
    assert (tilde[~mask] == 0).all() and (r[~mask] == 0).all()
    # Row 0 has only modality 0: r = δ, x̃ = α_00 x_0 + δ (the lone modality keeps its content).
    torch.testing.assert_close(r[0, 0], delta[0, 0].expand_as(x[0, 0]))
    torch.testing.assert_close(tilde[0, 0], alpha[0, 0, 0] * x[0, 0] + delta[0, 0])
    # Row 1 has modalities 1 and 2: r_1 = α_12 x_2 + δ_1.
    torch.testing.assert_close(r[1, 1], alpha[1, 1, 2] * x[1, 2] + delta[1, 1])


def test_lcr_recon_only_counts_pairs_with_another_present_modality():
    fusion = make("lcr", ())
    x = features(())
    lone = torch.zeros(B, M, dtype=torch.bool)
    lone[:, 0] = True
    lone_loss = fusion.auxiliary_losses(x, lone, targets(), F.cross_entropy)["lcr_recon"]
    assert lone_loss.item() == 0.0
    full = torch.ones(B, M, dtype=torch.bool)
    assert fusion.auxiliary_losses(x, full, targets(), F.cross_entropy)["lcr_recon"].item() > 0


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_rfnet_weights_only_over_present(shape):
    fusion = make("rfnet", shape)
    mask = mixed_mask()
    x = features(shape)
    _, prm_logits, eff = fusion.fuse_parts(x, mask)
    assert eff.shape == (B, K, M)
    assert prm_logits.shape == (B, 16 if shape else 1, K)
    present = mask.unsqueeze(1).expand_as(eff)
    assert (eff[~present] == 0).all()
    assert (eff[present] > 0).all()
    # The region weights themselves do not depend on missing content either.
    _, _, eff_noisy = fusion.fuse_parts(corrupt_missing(x, mask), mask)
    torch.testing.assert_close(eff_noisy, eff)


def test_rfnet_prm_detached_from_fusion():
    fusion = make("rfnet", (4, 4))
    fusion(features((4, 4)), mixed_mask()).sum().backward()
    assert all(p.grad is None for p in fusion.prm_net.parameters())
    assert all(p.grad is None for p in fusion.sep_head.parameters())


@pytest.mark.parametrize("k", range(M))
def test_mmformer_single_modality_no_nan(k):
    fusion = make("mmformer", (4, 4))
    mask = torch.zeros(B, M, dtype=torch.bool)
    mask[:, k] = True
    x = corrupt_missing(features((4, 4)), mask, float("inf")).requires_grad_(True)
    out, aux, loss = total_loss(fusion, x, mask, targets())
    loss.backward()
    assert torch.isfinite(out).all() and torch.isfinite(aux["mmformer_sep"])
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_mmformer_missing_tokens_are_not_keys(shape):
    """A missing modality's tokens (its embedding, bias, intra layer) must not reach present tokens."""
    fusion = make("mmformer", shape).eval()
    mask = torch.ones(B, M, dtype=torch.bool)
    mask[:, 2] = False
    x = features(shape)
    with torch.no_grad():
        ref = fusion(x, mask)
        fusion.modality_embed[2] += 3.0
        fusion.proj_b[2] -= 2.0
        for p in fusion.intra[2].parameters():
            p.add_(torch.randn_like(p))
        torch.testing.assert_close(fusion(x, mask), ref)


def test_mmformer_permute_keeps_positions():
    """Output position p depends only on tokens at p through the projection (no scrambling)."""
    fusion = make("mmformer", (4, 4)).eval()
    # Replace the transformers by identity to isolate the reshape: out[:, :, p] = W concat_m u[m, p].
    x = features((4, 4))
    mask = torch.ones(B, M, dtype=torch.bool)
    for layer in [*fusion.intra, fusion.inter]:
        layer.forward = lambda t, key_mask=None: t  # type: ignore[method-assign]
    with torch.no_grad():
        out = fusion(x, mask)
        x2 = x.clone()
        x2[..., 0, 0] += 5.0  # change only position (0, 0)
        diff = (fusion(x2, mask) - out).abs().sum(dim=(0, 1))
    assert diff[0, 0] > 0
    diff[0, 0] = 0
    assert torch.allclose(diff, torch.zeros_like(diff))


@pytest.mark.parametrize("name", ["rfnet", "mmformer"])
def test_dense_targets_for_feature_maps(name):
    """Segmentation-style targets: auxiliary logit maps are resized to the target's size."""
    fusion = make(name, (4, 4))
    target = torch.randint(0, K, (B, 8, 8))
    aux = fusion.auxiliary_losses(features((4, 4)), mixed_mask(), target, F.cross_entropy)
    assert aux and all(torch.isfinite(v) for v in aux.values())


@pytest.mark.parametrize("name", FUSIONS.keys())
def test_end_to_end_build_network(name):
    torch.manual_seed(0)
    spec = ModalitySpec(("a", "b", "c"))
    shapes = {"a": (5,), "b": (7,), "c": (3,)}
    net = build_network(spec, shapes, K, channels=C, fusion=name, head_hidden=16)
    inputs = {m: torch.randn(B, *s) for m, s in shapes.items()}
    mask = mixed_mask()
    out = net.forward_all(inputs, mask)
    assert out.logits.shape == (B, K)
    aux = net.auxiliary_losses(out.features, mask, targets(), F.cross_entropy)
    loss = F.cross_entropy(out.logits, targets()) + sum(aux.values(), torch.zeros(()))
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname


@pytest.mark.parametrize("name", sorted(FUSIONS.keys()))
@pytest.mark.parametrize("encoder_shape", [(6,), (1, 6, 6)])
def test_train_mode_rows_do_not_see_other_rows_masks(name, encoder_shape):
    """No batch statistics anywhere (the BatchNorm-after-zero-filling pitfall): in TRAIN mode a
    row's output must not change when the other rows' masks change (dropout off)."""
    torch.manual_seed(0)
    spec = ModalitySpec(("a", "b", "c"))
    shapes = {m: encoder_shape for m in spec.names}
    net = build_network(spec, shapes, K, channels=C, fusion=name, head_hidden=16, dropout=0.0).train()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    inputs = {m: torch.randn(B, *encoder_shape) for m in spec.names}
    mask = mixed_mask()
    other = mask.clone()
    other[1:] = torch.tensor([True, False, False])
    torch.manual_seed(1)  # fusions that sample in training mode (DMRNet) draw the same noise twice
    first = net(inputs, mask)[0]
    torch.manual_seed(1)
    assert torch.allclose(first, net(inputs, other)[0], atol=1e-6)
