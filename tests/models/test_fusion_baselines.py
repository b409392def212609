"""What HeMIS, LCR, RFNet and mmFormer compute, exactly (BASELINES.md).

What every fusion must do (every combination, the leak test, gradients, rows, the cache of the auxiliary
losses, export) is checked on the whole registry in ``test_fusion_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmanet.models.fusion import build_fusion

M, B, C, K = 3, 4, 8, 5
SHAPES = {"vector": (), "map": (4, 4)}


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
    aux = fusion.auxiliary_losses(out, target, F.cross_entropy)
    return out.fused, aux, out.fused.sum() + sum(aux.values(), torch.zeros(()))


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_hemis_exact_moments(shape):
    fusion = make("hemis", shape)
    mask = mixed_mask()
    x = features(shape).double()
    out = fusion(x, mask).fused
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
    fusion(x, mask).fused.sum().backward()
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
    lone_loss = total_loss(fusion, x, lone, targets())[1]["lcr_recon"]
    assert lone_loss.item() == 0.0
    full = torch.ones(B, M, dtype=torch.bool)
    assert total_loss(fusion, x, full, targets())[1]["lcr_recon"].item() > 0


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_lcr_recon_is_the_l1_between_each_modality_and_its_cross_modal_part(shape):
    fusion = make("lcr", shape)
    mask, x = mixed_mask(), features(shape)
    _, r, masked = fusion._representations(x, mask)
    recon = total_loss(fusion, x, mask, targets())[1]["lcr_recon"]
    pairs = [(i, k) for i in range(B) for k in range(M) if mask[i, k] and mask[i].sum() > 1]
    expected = torch.stack([(r[i, k] - masked[i, k]).abs().mean() for i, k in pairs]).mean()
    torch.testing.assert_close(recon, expected)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_rfnet_weights_only_over_present(shape):
    fusion = make("rfnet", shape)
    mask = mixed_mask()
    x = features(shape)
    _, prm_logits, eff, _ = fusion.fuse_parts(x, mask)
    assert eff.shape == (B, K, M)
    assert prm_logits.shape == (B, 16 if shape else 1, K)
    present = mask.unsqueeze(1).expand_as(eff)
    assert (eff[~present] == 0).all()
    assert (eff[present] > 0).all()
    # The region weights themselves do not depend on missing content either.
    _, _, eff_noisy, _ = fusion.fuse_parts(corrupt_missing(x, mask), mask)
    torch.testing.assert_close(eff_noisy, eff)


def test_rfnet_prm_detached_from_fusion():
    fusion = make("rfnet", (4, 4))
    fusion(features((4, 4)), mixed_mask()).fused.sum().backward()
    assert all(p.grad is None for p in fusion.prm_net.parameters())
    assert all(p.grad is None for p in fusion.sep_head.parameters())


def test_rfnet_auxiliary_branch_shares_no_gradient_with_the_fused_path():
    """The PRM net and the per-modality head read their own selection of the tokens: the gradient of the fused
    output and that of the auxiliary losses reach the inputs separately (one sum at the end, as two passes)."""
    fusion = make("rfnet", (4, 4)).train()
    mask = mixed_mask()
    x = features((4, 4)).requires_grad_(True)
    out = fusion(x, mask)
    aux = fusion.auxiliary_losses(out, targets(), F.cross_entropy)
    (fused_grad,) = torch.autograd.grad(out.fused.sum(), x, retain_graph=True)
    (aux_grad,) = torch.autograd.grad(sum(aux.values()), x, retain_graph=True)
    (both,) = torch.autograd.grad(out.fused.sum() + sum(aux.values()), x)
    assert torch.equal(both, fused_grad + aux_grad)


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
        ref = fusion(x, mask).fused
        fusion.modality_embed[2] += 3.0
        fusion.proj_b[2] -= 2.0
        for p in fusion.intra[2].parameters():
            p.add_(torch.randn_like(p))
        torch.testing.assert_close(fusion(x, mask).fused, ref)


def test_mmformer_permute_keeps_positions():
    """Output position p depends only on tokens at p through the projection (no scrambling)."""
    fusion = make("mmformer", (4, 4)).eval()
    # Replace the transformers by identity to isolate the reshape: out[:, :, p] = W concat_m u[m, p].
    x = features((4, 4))
    mask = torch.ones(B, M, dtype=torch.bool)
    for layer in [*fusion.intra, fusion.inter]:
        layer.forward = lambda t, key_mask=None: t  # type: ignore[method-assign]
    with torch.no_grad():
        out = fusion(x, mask).fused
        x2 = x.clone()
        x2[..., 0, 0] += 5.0  # change only position (0, 0)
        diff = (fusion(x2, mask).fused - out).abs().sum(dim=(0, 1))
    assert diff[0, 0] > 0
    diff[0, 0] = 0
    assert torch.allclose(diff, torch.zeros_like(diff))


@pytest.mark.parametrize("name", ["rfnet", "mmformer"])
def test_dense_targets_for_feature_maps(name):
    """Segmentation-style targets: auxiliary logit maps are resized to the target's size."""
    fusion = make(name, (4, 4))
    target = torch.randint(0, K, (B, 8, 8))
    aux = total_loss(fusion, features((4, 4)), mixed_mask(), target)[1]
    assert aux and all(torch.isfinite(v) for v in aux.values())
