"""MAD in the authors' forms (``variant="official"``): the per-pixel relation normalised in two column
halves (their segmentation code, ``row_normalization="column_halves"``), and uniform weights (the SP
ablation of a relation, ``weighting="uniform"``) — each against a numpy transcription of the formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmanet.losses import mad_loss

EPS = 1e-8


def _normalise_rows(g: np.ndarray) -> np.ndarray:
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)


def _entropy_weights(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = z / z.sum(axis=1, keepdims=True)
    u = -(p * np.log(p + EPS)).sum(axis=1)
    return u / (u.sum() + EPS)


def _authors_segmentation_mad(fs: np.ndarray, ft: np.ndarray, logits: np.ndarray) -> float:
    """Their segmentation MAD on pixel rows ``(N, C)``: for each half of the columns, ``G = F F_halfᵀ``
    row-normalised, squared differences summed per row; the two halves added; rows weighted by the
    teacher's entropy."""
    n = fs.shape[0]
    halves = [slice(0, n // 2), slice(n // 2, n)]
    per_row = np.zeros(n)
    for half in halves:
        g_s = _normalise_rows(fs @ fs[half].T)
        g_t = _normalise_rows(ft @ ft[half].T)
        per_row += ((g_s - g_t) ** 2).sum(axis=1)
    return float((per_row * _entropy_weights(logits)).sum())


def _pixel_rows(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).numpy()


@pytest.mark.parametrize(("b", "h", "w", "block"), [(2, 3, 4, None), (3, 3, 3, 5), (1, 1, 7, 2)])
def test_per_pixel_column_halves_is_the_authors_segmentation_loss(b, h, w, block):
    g = torch.Generator().manual_seed(b * 100 + h * 10 + w)
    fs = torch.randn(b, 5, h, w, generator=g, dtype=torch.float64)
    ft = torch.randn(b, 6, h, w, generator=g, dtype=torch.float64)
    logits = torch.randn(b, 4, h, w, generator=g, dtype=torch.float64)  # at the map's size: no resizing
    got = mad_loss(
        fs, ft, logits, variant="official", per_pixel=True, reduction="sum", row_normalization="column_halves",
        block_size=block,
    )  # fmt: skip
    expected = _authors_segmentation_mad(_pixel_rows(fs), _pixel_rows(ft), _pixel_rows(logits))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    # the batch-size-free form of the official relation is its sum (docs/design.md §4.1 step 6)
    mean = mad_loss(
        fs, ft, logits, variant="official", per_pixel=True, reduction="mean", row_normalization="column_halves"
    )
    torch.testing.assert_close(mean, got)


def test_column_halves_gradient_matches_the_dense_autograd_of_the_formula():
    g = torch.Generator().manual_seed(7)
    fs = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ft = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    logits = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64)
    opts = {"variant": "official", "per_pixel": True, "reduction": "sum", "row_normalization": "column_halves"}
    mad_loss(fs, ft, logits, block_size=4, **opts).backward()
    blocked = fs.grad.clone()

    def dense(x: torch.Tensor) -> torch.Tensor:
        rows_s = x.permute(0, 2, 3, 1).reshape(-1, 4)
        rows_t = ft.permute(0, 2, 3, 1).reshape(-1, 4)
        n = rows_s.shape[0]
        total = 0.0
        for half in (slice(0, n // 2), slice(n // 2, n)):
            gs = torch.nn.functional.normalize(rows_s @ rows_s[half].T, dim=1)
            gt = torch.nn.functional.normalize(rows_t @ rows_t[half].T, dim=1)
            total = total + ((gs - gt) ** 2).sum(dim=1)
        w = torch.from_numpy(_entropy_weights(_pixel_rows(logits)))
        return (total * w).sum()

    leaf = fs.detach().clone().requires_grad_(True)
    dense(leaf).backward()
    torch.testing.assert_close(blocked, leaf.grad)


def test_column_halves_is_about_twice_the_whole_row_normalisation():
    """Each half-normalised row has squared norm 2 instead of 1, so the authors' per-pixel value is about
    twice the single-normalisation value (docs/design.md §4.4) — measured, not assumed equal."""
    g = torch.Generator().manual_seed(1)
    fs = torch.relu(torch.randn(4, 16, 6, 8, generator=g, dtype=torch.float64))
    ft = torch.relu(torch.randn(4, 16, 6, 8, generator=g, dtype=torch.float64))
    logits = torch.randn(4, 5, 6, 8, generator=g, dtype=torch.float64)
    opts = {"variant": "official", "per_pixel": True, "reduction": "sum"}
    halves = mad_loss(fs, ft, logits, row_normalization="column_halves", **opts)
    whole = mad_loss(fs, ft, logits, row_normalization="whole", **opts)
    assert 1.5 < float(halves / whole) < 2.5


def test_column_halves_on_sample_rows_and_its_guard():
    g = torch.Generator().manual_seed(2)
    fs, ft = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    logits = torch.randn(6, 3, generator=g, dtype=torch.float64)
    got = mad_loss(fs, ft, logits, variant="official", reduction="sum", row_normalization="column_halves")
    # classification weights the columns (their classification code), on half-normalised rows
    a_s = np.concatenate([_normalise_rows(fs.numpy() @ fs.numpy()[h].T) for h in (slice(0, 3), slice(3, 6))], 1)
    a_t = np.concatenate([_normalise_rows(ft.numpy() @ ft.numpy()[h].T) for h in (slice(0, 3), slice(3, 6))], 1)
    expected = float((((a_t - a_s) ** 2) * _entropy_weights(logits.numpy())[None, :]).sum())
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(ValueError, match="official"):
        mad_loss(fs, ft, logits, variant="paper", row_normalization="column_halves")


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_uniform_weighting_is_the_sp_ablation_of_the_same_relation(variant):
    g = torch.Generator().manual_seed(4)
    fs, ft = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    confident = torch.tensor([[9.0, 0.0, 0.0]] * 5, dtype=torch.float64)  # any teacher: the weights are 1/N
    uncertain = torch.zeros(5, 3, dtype=torch.float64)
    uniform = mad_loss(fs, ft, confident, variant=variant, weighting="uniform", reduction="sum")
    # uniform entropy weights (every row equally uncertain) are exactly 1/N
    torch.testing.assert_close(uniform, mad_loss(fs, ft, uncertain, variant=variant, reduction="sum"))
    if variant == "paper":
        torch.testing.assert_close(uniform, mad_loss(fs, ft, confident, variant="sp", reduction="sum"))
    with pytest.raises(ValueError, match="weighting"):
        mad_loss(fs, ft, confident, weighting="margin")


@pytest.mark.parametrize("row_normalization", ["whole", "column_halves"])
def test_an_all_zero_gram_row_carries_no_gradient(row_normalization):
    """ReLU features of disjoint support give Gram rows (or halves) of zeros; F.normalize's gradient there
    is 1e12 × the upstream one (it blew up a tiny NYUv2 run in one step). Value 0, gradient finite and 0."""
    fs = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64).reshape(2, 2, 1, 1).requires_grad_(True)
    ft = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64).reshape(2, 2, 1, 1)
    logits = torch.zeros(2, 3, 1, 1, dtype=torch.float64)
    value = mad_loss(
        fs, ft, logits, variant="official", per_pixel=True, reduction="sum", row_normalization=row_normalization
    )
    value.backward()
    assert torch.isfinite(fs.grad).all() and float(fs.grad.abs().max()) < 10.0
    if row_normalization == "column_halves":  # every half is the off-diagonal 0 of the student: D = 1 per row
        torch.testing.assert_close(value, torch.tensor(1.0, dtype=torch.float64))
        assert float(fs.grad.abs().max()) == 0.0


@pytest.mark.parametrize("per_pixel", [False, True])
def test_official_is_unchanged_by_the_scale_of_the_features_and_never_overflows(per_pixel):
    """The row-normalised Gram relation does not depend on a global scale of F; features around 1e19 (an
    unstable teacher in evaluation mode) gave F Fᵀ = inf in float32 and a NaN loss."""
    g = torch.Generator().manual_seed(5)
    shape = (3, 4, 2, 2) if per_pixel else (6, 5)
    fs = torch.randn(*shape, generator=g).requires_grad_(True)
    ft = torch.randn(*shape, generator=g)
    logits = torch.randn(3, 3, 2, 2, generator=g) if per_pixel else torch.randn(6, 3, generator=g)
    opts = {"variant": "official", "per_pixel": per_pixel, "reduction": "sum"}
    base = mad_loss(fs, ft, logits, **opts)
    (grad,) = torch.autograd.grad(base, fs)
    huge = mad_loss(fs * 1e19, ft * 3e19, logits, **opts)
    (grad_huge,) = torch.autograd.grad(huge, fs)
    assert torch.isfinite(huge)
    torch.testing.assert_close(huge, base, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_huge, grad, rtol=1e-3, atol=1e-6)  # L(s·F) = L(F): the same gradient in F
