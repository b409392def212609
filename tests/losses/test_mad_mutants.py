"""MAD: the options `make mutate` found unpinned (docs/testing.md).

The SP ablation on pixel rows and the module wrapper must pass every option through (per-pixel,
ε, block size, reduction), and the default block size must split a large map into whole rows.
Every call names its ``reduction``.
"""

from __future__ import annotations

import pytest
import torch

import mmanet.losses.mad as mad
from mmanet.losses import MADLoss, mad_loss, sp_loss


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
