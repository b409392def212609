"""MAD (docs/design.md §4.1): golden official case, an independent loop implementation, invariants."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mmanet.losses.mad as mad
from mmanet.losses import VARIANTS, MADLoss, entropy_weights, mad_loss, sp_loss

_GOLDEN_NAME = "mad_official_b8_k2.json"
# a copy of shared/reference/mad_official_b8_k2.json, kept in the repo so the golden test always runs
GOLDEN = Path(__file__).resolve().parent / "data" / _GOLDEN_NAME
EPS = 1e-8


# ----------------------------------------------------------------------------- reference (loops, numpy)


def _loop_reference(fs: np.ndarray, ft: np.ndarray, logits: np.ndarray, variant: str, eps: float = EPS) -> float:
    """Element-by-element transcription of docs/design.md §4.1, independent of the torch code."""
    b = fs.shape[0]
    rows_s = [fs[i].reshape(-1) for i in range(b)]
    rows_t = [ft[i].reshape(-1) for i in range(b)]

    def relation(rows):
        if variant == "official":
            gram = [[float(np.dot(rows[i], rows[j])) for j in range(b)] for i in range(b)]
            out = []
            for i in range(b):
                norm = math.sqrt(sum(v * v for v in gram[i]))
                out.append([v / max(norm, 1e-12) for v in gram[i]])
            return out
        norms = [math.sqrt(float(np.dot(r, r))) for r in rows]
        return [[float(np.dot(rows[i], rows[j])) / (norms[i] * norms[j] + eps) for j in range(b)] for i in range(b)]

    a_s, a_t = relation(rows_s), relation(rows_t)
    u = []
    for i in range(b):
        z = [math.exp(v - max(logits[i])) for v in logits[i]]
        s = [v / sum(z) for v in z]
        u.append(-sum(p * math.log(p + eps) for p in s))
    w = [v / (sum(u) + eps) for v in u] if variant != "sp" else [1.0 / b] * b
    total = 0.0
    for i in range(b):
        for j in range(b):
            d = (a_t[i][j] - a_s[i][j]) ** 2
            total += d * (w[j] if variant == "official" else w[i])
    return total


def _inputs(b=5, c=7, k=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    fs = torch.randn(b, c, generator=g, dtype=dtype)
    ft = torch.randn(b, c + 3, generator=g, dtype=dtype)  # teacher width may differ
    logits = torch.randn(b, k, generator=g, dtype=dtype) * 2
    return fs, ft, logits


# ----------------------------------------------------------------------------- golden case


def test_official_matches_golden_loss_and_gradient():
    data = json.loads(GOLDEN.read_text())
    fs = torch.tensor(data["inputs"]["fm_s"], dtype=torch.float32, requires_grad=True)
    ft = torch.tensor(data["inputs"]["fm_t"], dtype=torch.float32)
    lt = torch.tensor(data["inputs"]["logit_t"], dtype=torch.float32)
    assert list(fs.shape) == data["shapes"]["fm_s"]
    loss = mad_loss(fs, ft, lt, variant="official", reduction="sum")
    loss.backward()
    expected_loss = data["outputs"]["mad_loss"]
    expected_grad = torch.tensor(data["outputs"]["grad_fm_s"], dtype=torch.float32)
    assert abs(loss.item() - expected_loss) / abs(expected_loss) <= 1e-5
    rel = (fs.grad - expected_grad).norm() / expected_grad.norm()
    assert rel.item() <= 1e-5
    assert torch.allclose(fs.grad, expected_grad, rtol=1e-4, atol=1e-8)


def test_paper_variant_differs_from_official_on_golden_inputs():
    data = json.loads(GOLDEN.read_text())
    fs, ft, lt = (torch.tensor(data["inputs"][k]) for k in ("fm_s", "fm_t", "logit_t"))
    paper = mad_loss(fs, ft, lt, variant="paper", reduction="sum").item()
    assert not math.isclose(paper, data["outputs"]["mad_loss"], rel_tol=1e-3)


# ----------------------------------------------------------------------------- independent reference


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_loop_reference(variant):
    fs, ft, logits = _inputs(b=4, c=6, k=3, seed=1)
    got = mad_loss(fs, ft, logits, variant=variant, reduction="sum").item()
    want = _loop_reference(fs.numpy(), ft.numpy(), logits.numpy(), variant)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-14)


def test_paper_hand_computed_two_samples():
    # B = 2. Student rows orthogonal: A^d = I. Teacher rows at 60°: A^t offdiag = 0.5, diag = 1.
    fs = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    ft = torch.tensor([[2.0, 0.0], [1.0, math.sqrt(3.0)]], dtype=torch.float64)
    # teacher logits: sample 0 maximally uncertain (K=2), sample 1 certain-ish
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]], dtype=torch.float64)  # s_1 = (3/4, 1/4)
    u0 = math.log(2.0)
    u1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    w0, w1 = u0 / (u0 + u1), u1 / (u0 + u1)
    # d_i = Σ_j (A^t_ij − A^d_ij)^2 = 0.25 for both rows (diag terms vanish up to ε)
    expected = w0 * 0.25 + w1 * 0.25
    assert mad_loss(fs, ft, logits, variant="paper", reduction="sum").item() == pytest.approx(expected, rel=1e-7)
    assert mad_loss(fs, ft, logits, variant="sp", reduction="sum").item() == pytest.approx(0.25, rel=1e-7)


def test_sp_is_mean_of_relation_gaps():
    fs, ft, logits = _inputs(b=6, seed=2)
    a_s = F.normalize(fs, dim=1) @ F.normalize(fs, dim=1).T
    a_t = F.normalize(ft, dim=1) @ F.normalize(ft, dim=1).T
    d = (a_t - a_s).pow(2).sum(dim=1)
    assert mad_loss(fs, ft, logits, variant="sp", reduction="sum").item() == pytest.approx(d.mean().item(), rel=1e-7)
    assert sp_loss(fs, ft, reduction="sum").item() == pytest.approx(d.mean().item(), rel=1e-7)
    w = entropy_weights(logits)
    paper = mad_loss(fs, ft, logits, variant="paper", reduction="sum").item()
    assert paper == pytest.approx((w * d).sum().item(), rel=1e-7)


def test_uncertain_samples_weigh_more():
    # equal teacher confidence gives the SP mean; a teacher unsure only about sample 0 puts
    # (nearly) all weight on sample 0's relation gap d_0.
    fs, ft, _ = _inputs(b=3, seed=3)
    equal = torch.tensor([[3.0, -3.0], [3.0, -3.0], [3.0, -3.0]], dtype=torch.float64)
    uncertain_first = torch.tensor([[0.0, 0.0], [10.0, -10.0], [10.0, -10.0]], dtype=torch.float64)
    d = _row_gaps(fs, ft)
    assert mad_loss(fs, ft, equal, variant="paper", reduction="sum").item() == pytest.approx(d.mean().item(), rel=1e-6)
    high = mad_loss(fs, ft, uncertain_first, variant="paper", reduction="sum")
    assert high.item() == pytest.approx(d[0].item(), rel=1e-3)


def _row_gaps(fs, ft):
    a_s = F.normalize(fs, dim=1) @ F.normalize(fs, dim=1).T
    a_t = F.normalize(ft, dim=1) @ F.normalize(ft, dim=1).T
    return (a_t - a_s).pow(2).sum(dim=1)


# ----------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("variant", VARIANTS)
def test_zero_when_relations_equal(variant):
    _, ft, logits = _inputs(b=5, seed=4)
    fs = (2.0 * ft).requires_grad_(True)
    loss = mad_loss(fs, ft, logits, variant=variant)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    loss.backward()
    assert fs.grad.abs().max().item() < 1e-6


def test_entropy_weights_sum_to_one_and_are_detached():
    logits = torch.randn(9, 5, requires_grad=True)
    w = entropy_weights(logits)
    assert w.shape == (9,)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert (w >= 0).all()
    assert not w.requires_grad
    with pytest.raises(ValueError, match="2-D"):
        entropy_weights(torch.randn(3))


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck(variant):
    fs, ft, logits = _inputs(b=4, c=3, k=3, seed=5)
    fs.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: mad_loss(x, ft, logits, variant=variant), (fs,))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["one", "identical", "zeros"])
def test_degenerate_batches_are_finite(variant, case):
    if case == "one":
        fs, ft, logits = torch.randn(1, 4), torch.randn(1, 6), torch.randn(1, 3)
    elif case == "identical":
        fs = torch.randn(1, 4).repeat(5, 1)
        ft = torch.randn(1, 4).repeat(5, 1)
        logits = torch.randn(1, 3).repeat(5, 1)
    else:
        fs, ft, logits = torch.zeros(4, 4), torch.zeros(4, 4), torch.zeros(4, 3)
    fs.requires_grad_(True)
    loss = mad_loss(fs, ft, logits, variant=variant)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(fs.grad).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_gradient_reaches_the_teacher(variant):
    fs, ft, logits = _inputs(seed=6)
    fs.requires_grad_(True)
    ft.requires_grad_(True)
    logits.requires_grad_(True)
    mad_loss(fs, ft, logits, variant=variant).backward()
    assert fs.grad is not None
    assert ft.grad is None
    assert logits.grad is None


def test_feature_maps_are_flattened_per_sample():
    fs = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    ft = torch.randn(4, 5, 2, 2, dtype=torch.float64)
    logits = torch.randn(4, 2, dtype=torch.float64)
    for variant in VARIANTS:
        assert mad_loss(fs, ft, logits, variant=variant).item() == pytest.approx(
            mad_loss(fs.flatten(1), ft.flatten(1), logits, variant=variant).item(), rel=1e-12
        )


def test_half_precision_is_computed_in_float32():
    fs, ft, logits = _inputs(seed=7, dtype=torch.float32)
    loss = mad_loss(fs.bfloat16(), ft.bfloat16(), logits.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(mad_loss(fs, ft, logits).item(), rel=5e-2)


def test_module_wrapper():
    fs, ft, logits = _inputs(seed=8)
    for variant in VARIANTS:
        module = MADLoss(variant=variant)
        assert variant in repr(module)
        assert module(fs, ft, logits).item() == mad_loss(fs, ft, logits, variant=variant).item()
    with pytest.raises(ValueError, match="paper"):
        MADLoss(variant="nope")


def test_clear_errors():
    fs, ft, logits = _inputs(b=4)
    with pytest.raises(ValueError, match="batch sizes disagree"):
        mad_loss(fs, ft[:3], logits)
    with pytest.raises(ValueError, match="batch sizes disagree"):
        mad_loss(fs, ft, logits[:3])
    with pytest.raises(ValueError, match="2-D"):
        mad_loss(fs, ft, logits[:, :, None])
    with pytest.raises(ValueError, match=r"unknown MAD variant 'cos'.*'paper'.*'sp'.*'official'"):
        mad_loss(fs, ft, logits, variant="cos")
    with pytest.raises(ValueError, match="feature dimension"):
        mad_loss(fs[:, 0], ft, logits)


# ----------------------------------------------------------------------------- per-pixel (segmentation)


def _dense_pixel_reference(fs, ft, logits, variant):
    """Dense N×N formula on pixel rows, written out directly (materialises the relation)."""
    rows_s = fs.permute(0, 2, 3, 1).reshape(-1, fs.shape[1])
    rows_t = ft.permute(0, 2, 3, 1).reshape(-1, ft.shape[1])
    lg = F.interpolate(logits, size=fs.shape[2:], mode="bilinear", align_corners=False)
    lg = lg.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    n = rows_s.shape[0]
    if variant == "official":
        a_s = F.normalize(rows_s @ rows_s.T, dim=1)
        a_t = F.normalize(rows_t @ rows_t.T, dim=1)
    else:
        ns, nt = rows_s.norm(dim=1), rows_t.norm(dim=1)
        a_s = rows_s @ rows_s.T / (ns[:, None] * ns[None, :] + EPS)
        a_t = rows_t @ rows_t.T / (nt[:, None] * nt[None, :] + EPS)
    s = lg.softmax(dim=1)
    u = -(s * (s + EPS).log()).sum(dim=1)
    w = torch.full((n,), 1.0 / n, dtype=fs.dtype) if variant == "sp" else u / (u.sum() + EPS)
    return ((a_t - a_s).pow(2).sum(dim=1) * w).sum()  # per-pixel: weights on rows for every variant


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("block_size", [1, 5, 24, None])
def test_per_pixel_blocks_equal_dense(variant, block_size):
    g = torch.Generator().manual_seed(9)
    fs = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64)  # N = 24 pixel rows
    ft = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    logits = torch.randn(2, 4, 6, 8, generator=g, dtype=torch.float64)  # resized to 3×4
    fs_a = fs.clone().requires_grad_(True)
    fs_b = fs.clone().requires_grad_(True)
    got = mad_loss(fs_a, ft, logits, variant=variant, per_pixel=True, block_size=block_size, reduction="sum")
    want = _dense_pixel_reference(fs_b, ft, logits, variant)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    (got * 3.0).backward()
    (want * 3.0).backward()
    torch.testing.assert_close(fs_a.grad, fs_b.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("variant", VARIANTS)
def test_per_pixel_gradcheck(variant):
    g = torch.Generator().manual_seed(10)
    fs = torch.randn(2, 2, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ft = torch.randn(2, 2, 2, 3, generator=g, dtype=torch.float64)
    logits = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: mad_loss(x, ft, logits, variant=variant, per_pixel=True, block_size=5), (fs,)
    )


def test_per_pixel_errors_and_teacher_detached():
    fs = torch.randn(2, 3, 4, 4, requires_grad=True)
    ft = torch.randn(2, 3, 4, 4, requires_grad=True)
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    mad_loss(fs, ft, logits, per_pixel=True, block_size=7).backward()
    assert ft.grad is None and logits.grad is None and torch.isfinite(fs.grad).all()
    with pytest.raises(ValueError, match="same size"):
        mad_loss(fs, ft[:, :, :2], logits, per_pixel=True)
    with pytest.raises(ValueError, match=r"\(B, K, H', W'\)"):
        mad_loss(fs, ft, logits[:, :, 0, 0], per_pixel=True)
    with pytest.raises(ValueError, match="feature maps"):
        mad_loss(fs.flatten(1), ft.flatten(1), logits, per_pixel=True)


@pytest.mark.parametrize("per_pixel", [False, True])
def test_teacher_outputs_from_inference_mode_are_accepted(per_pixel):
    """The frozen teacher runs under torch.inference_mode; its tensors must not break the backward."""
    g = torch.Generator().manual_seed(0)
    shape = (3, 1, 1, 1) if per_pixel else (3, 4)
    student = torch.randn(*shape, generator=g, requires_grad=True)
    with torch.inference_mode():
        teacher = torch.randn(*shape, generator=g)
        logits = torch.randn(3, 2, 1, 1, generator=g) if per_pixel else torch.randn(3, 2, generator=g)
    loss = mad_loss(student, teacher, logits, per_pixel=per_pixel)
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


# ----------------------------------------------------------------------------- scale (docs/design.md §4.1 step 6)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("per_pixel", [False, True])
def test_mean_reduction_is_the_sum_over_the_number_of_rows(variant, per_pixel):
    g = torch.Generator().manual_seed(11)
    if per_pixel:  # N = 2·3·2 = 12 pixel rows
        fs, ft = torch.randn(2, 3, 3, 2, generator=g, dtype=torch.float64), torch.randn(2, 4, 3, 2, generator=g)
        logits, n = torch.randn(2, 3, 3, 2, generator=g, dtype=torch.float64), 12
    else:
        fs, ft, logits = _inputs(b=5, seed=11)
        n = 5
    ft = ft.to(fs.dtype)
    total = mad_loss(fs, ft, logits, variant=variant, per_pixel=per_pixel, reduction="sum")
    mean = mad_loss(fs, ft, logits, variant=variant, per_pixel=per_pixel, reduction="mean")
    # the official relation divides each Gram row by its norm over the batch: its sum is already batch-free
    expected = total.item() if variant == "official" else total.item() / n
    assert mean.item() == pytest.approx(expected, rel=1e-12)
    assert mad_loss(fs, ft, logits, variant=variant, per_pixel=per_pixel).item() == mean.item()  # the default


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("per_pixel", [False, True])
def test_mean_value_does_not_change_when_the_batch_is_duplicated(variant, per_pixel):
    """B → 2B with the same samples: the mean form is unchanged (the sum form doubles)."""
    g = torch.Generator().manual_seed(12)
    shape_s, shape_t = ((3, 4, 2, 2), (3, 5, 2, 2)) if per_pixel else ((6, 7), (6, 9))
    fs = torch.randn(*shape_s, generator=g, dtype=torch.float64)
    ft = torch.randn(*shape_t, generator=g, dtype=torch.float64)
    logits = torch.randn(shape_s[0], 3, *shape_s[2:], generator=g, dtype=torch.float64) * 2
    twice = [torch.cat([x, x]) for x in (fs, ft, logits)]
    one = mad_loss(fs, ft, logits, variant=variant, per_pixel=per_pixel, eps=0.0)
    two = mad_loss(*twice, variant=variant, per_pixel=per_pixel, eps=0.0)
    assert two.item() == pytest.approx(one.item(), rel=1e-10)
    one_sum = mad_loss(fs, ft, logits, variant=variant, per_pixel=per_pixel, eps=0.0, reduction="sum")
    two_sum = mad_loss(*twice, variant=variant, per_pixel=per_pixel, eps=0.0, reduction="sum")
    growth = 1.0 if variant == "official" else 2.0  # the paper/SP sums grow with the batch
    assert two_sum.item() == pytest.approx(growth * one_sum.item(), rel=1e-10)


def test_sp_mean_is_the_mean_over_the_relation_matrix():
    fs, ft, _ = _inputs(b=6, seed=13)
    a_s = F.normalize(fs, dim=1) @ F.normalize(fs, dim=1).T
    a_t = F.normalize(ft, dim=1) @ F.normalize(ft, dim=1).T
    assert sp_loss(fs, ft).item() == pytest.approx((a_t - a_s).pow(2).mean().item(), rel=1e-7)


def test_unknown_reduction_is_an_error():
    fs, ft, logits = _inputs(b=3, seed=14)
    with pytest.raises(ValueError, match="reduction"):
        mad_loss(fs, ft, logits, reduction="batchmean")
    with pytest.raises(ValueError, match="reduction"):
        MADLoss(reduction="none")
    assert MADLoss(reduction="sum")(fs, ft, logits).item() == mad_loss(fs, ft, logits, reduction="sum").item()


# ----------------------------------------------------------------------------- options `make mutate` found unpinned
# MAD: the options `make mutate` found unpinned (docs/testing.md).
#
# The SP ablation on pixel rows and the module wrapper must pass every option through (per-pixel,
# ε, block size, reduction), and the default block size must split a large map into whole rows.
# Every call names its ``reduction``.


def _maps(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    fs = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64)  # N = 2·2·2 = 8 pixel rows
    ft = torch.randn(2, 4, 2, 2, generator=g, dtype=torch.float64)
    logits = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64)
    return fs, ft, logits


def _pixel_relation(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Dense cosine relation of the pixel rows, ``<x_i, x_j> / (‖x_i‖·‖x_j‖ + ε)``."""
    rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    norms = rows.norm(dim=1)
    return rows @ rows.T / (norms[:, None] * norms[None, :] + eps)


def test_sp_on_pixel_rows_with_its_eps_is_the_dense_relation_difference():
    fs, ft, _ = _maps()
    eps = 0.5
    d = (_pixel_relation(ft, eps) - _pixel_relation(fs, eps)).pow(2)  # 8 × 8
    n = d.shape[0]
    mean = sp_loss(fs, ft, per_pixel=True, block_size=3, eps=eps, reduction="mean")
    total = sp_loss(fs, ft, per_pixel=True, block_size=3, eps=eps, reduction="sum")
    assert mean.item() == pytest.approx(d.mean().item(), rel=1e-10)  # w_i = 1/N, then / N
    assert total.item() == pytest.approx(d.sum().item() / n, rel=1e-10)


def test_sp_and_the_module_pass_their_block_size():
    fs, ft, logits = _maps()
    with pytest.raises(ValueError, match="block_size"):
        sp_loss(fs, ft, per_pixel=True, block_size=0, reduction="mean")
    with pytest.raises(ValueError, match="block_size"):
        MADLoss(per_pixel=True, block_size=0, reduction="mean")(fs, ft, logits)
    with pytest.raises(ValueError, match="block_size"):
        mad_loss(fs, ft, logits, per_pixel=True, block_size=0, reduction="mean")


def test_module_passes_every_option_to_the_loss():
    fs, ft, logits = _maps()
    options = {"variant": "paper", "eps": 0.5, "per_pixel": True, "block_size": 3, "reduction": "sum"}
    expected = mad_loss(fs, ft, logits, **options)
    assert MADLoss(**options)(fs, ft, logits).item() == pytest.approx(expected.item(), rel=1e-12)
    default_eps = mad_loss(fs, ft, logits, **{**options, "eps": 1e-8})
    assert abs(default_eps.item() - expected.item()) > 1e-3 * abs(expected.item())  # so ε must be passed on


def test_default_block_size_splits_large_maps_into_row_blocks(monkeypatch):
    fs, ft, logits = _maps()
    whole = mad_loss(fs, ft, logits, per_pixel=True, block_size=8, reduction="sum")  # one block
    monkeypatch.setattr(mad, "DEFAULT_BLOCK_ELEMENTS", 20)  # 20 // 8 rows → blocks of 2 rows
    blocked = mad_loss(fs, ft, logits, per_pixel=True, reduction="sum")
    assert blocked.item() == pytest.approx(whole.item(), rel=1e-12)
