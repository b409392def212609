"""Margin-aware distillation, MAD (docs/design.md §4.1, paper Eqs. 2–8).

The deployment network (student) is taught the teacher's *relations* between samples,
weighted by how uncertain the teacher is about each sample (samples near the decision
margin matter most):

1. Flatten each sample's fused feature to a row: ``F^t, F^d ∈ R^{B×D}``.
2. Relation matrices ``A_ij = <F_i, F_j> / (‖F_i‖·‖F_j‖ + ε)`` for teacher and student.
3. Discrepancy ``D = (A^t − A^d)²`` and relation gap ``d_i = Σ_j D_ij``.
4. Teacher uncertainty ``u_i = −Σ_k s_ik log(s_ik + ε)`` with ``s_i = softmax(p^t_i)`` and
   weights ``w_i = u_i / (Σ_j u_j + ε)``.
5. ``L_MAD = Σ_i w_i d_i``.
6. Scale (``reduction=``): the sum above grows with the batch size ``B`` (each ``d_i`` has ``B``
   terms, and ``w`` sums to 1), so a weight α on it would mean something different for every B.
   ``reduction="mean"`` (the default, what training uses) is the batch-size-free form: a value
   that does not change when every sample of a batch is duplicated. For ``paper`` and ``sp`` it is
   ``L_MAD / N`` for ``N`` rows (``N = B``; per-pixel ``N = B·H·W``); for SP (``w_i = 1/B``) that is
   exactly the mean of ``D`` over the ``B×B`` relation, so ``α_mean = α_sum · N``. The ``official``
   relation is already batch-size free as a sum: each row of its Gram matrix is divided by its
   norm over the ``B`` columns, so ``D_ij = O(1/B)`` and ``Σ_ij D_ij w_j = O(1)``; its mean form is
   the sum (``α_mean = α_sum``; dividing by ``B`` again would make it batch-size dependent).
   ``reduction="sum"`` is step 5 as written, the scale of the authors' α values (30, 4, 10) and of
   the golden files.

The paper's printed equations (Eqs. 2–8) are not available to us; the steps above are
its prose made exact (docs/design.md §4.1), and the step numbers below refer to them.

Variants of :func:`mad_loss` (``variant=``):

* ``"paper"`` — the above (the paper's prose made exact; the default).
* ``"sp"`` — similarity-preserving ablation: ``w_i = 1/B`` (no uncertainty weighting).
* ``"official"`` — what the authors' released code computes: the relation is the
  inner-product Gram matrix ``F Fᵀ`` with each row L2-normalised, and the weight multiplies
  the columns, ``L = Σ_i Σ_j D_ij w_j`` (per-pixel segmentation: the rows, as in that code).
  ``tests/losses/data/mad_official_b8_k2.json`` holds a golden case for it.

``weighting="uniform"`` replaces the teacher-entropy weights by ``1/N`` in any variant: the SP
ablation of the same relation (``variant="sp"`` is the ``paper`` relation with uniform weights).

Teacher features, teacher logits and the weights never carry gradient.

Segmentation (``per_pixel=True``): every pixel of the feature map is a sample (``N = B·H·W``
rows); the teacher's class logits are resized (bilinear) to the map. The ``N×N`` relation
is never materialised whole: it is computed in row blocks of bounded memory and recomputed
block by block in the backward pass, with the same result as the dense formula.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Variant = Literal["paper", "sp", "official"]
VARIANTS: tuple[str, ...] = ("paper", "sp", "official")
Reduction = Literal["mean", "sum"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum")
RowNormalization = Literal["whole", "column_halves"]
ROW_NORMALIZATIONS: tuple[str, ...] = ("whole", "column_halves")
Weighting = Literal["entropy", "uniform"]
WEIGHTINGS: tuple[str, ...] = ("entropy", "uniform")

#: Default bound on the elements of one ``block × N`` relation block in per-pixel mode (64 MiB in fp32).
DEFAULT_BLOCK_ELEMENTS = 1 << 24


def entropy_weights(teacher_logits: Tensor, eps: float = 1e-8) -> Tensor:
    """Normalised teacher-entropy weights (§4.1 step 4): ``w_i = u_i / (Σ_j u_j + ε)``.

    ``teacher_logits``: ``(N, K)``. ``u_i = −Σ_k s_ik log(s_ik + ε)``, ``s_i = softmax(p^t_i)``.
    Returns a detached ``(N,)`` tensor summing to 1 (up to ε).
    """
    if teacher_logits.dim() != 2:
        raise ValueError(f"teacher logits must be 2-D (N, K), got shape {tuple(teacher_logits.shape)}")
    logits = teacher_logits.detach()
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    probs = torch.softmax(logits, dim=1)
    uncertainty = -(probs * torch.log(probs + eps)).sum(dim=1)
    return uncertainty / (uncertainty.sum() + eps)


def _check_variant(variant: str, reduction: str = "mean", row_normalization: str = "whole") -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown MAD variant {variant!r}; valid: {list(VARIANTS)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown MAD reduction {reduction!r}; valid: {list(REDUCTIONS)}")
    if row_normalization not in ROW_NORMALIZATIONS:
        raise ValueError(f"unknown MAD row normalisation {row_normalization!r}; valid: {list(ROW_NORMALIZATIONS)}")
    if row_normalization != "whole" and variant != "official":
        raise ValueError("row_normalization='column_halves' applies to the official (Gram) variant only")


def _as_float(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _relation(
    rows: Tensor,
    norms: Tensor | None,
    all_rows: Tensor,
    all_norms: Tensor | None,
    cosine: bool,
    eps: float,
    halves: bool = False,
) -> Tensor:
    """Relation of ``rows`` (n, D) to ``all_rows`` (N, D): cosine (step 2) or row-normalised Gram.

    ``halves`` (Gram only): the columns ``[0, N//2)`` and ``[N//2, N)`` of each row are L2-normalised
    separately — the authors' segmentation code, which builds the relation in two column halves.
    """
    gram = rows @ all_rows.T
    if cosine:
        assert norms is not None and all_norms is not None  # the cosine relation is called with the norms
        return gram / (norms[:, None] * all_norms[None, :] + eps)
    if halves:
        half = gram.shape[1] // 2
        return torch.cat([_unit_rows(gram[:, :half]), _unit_rows(gram[:, half:])], dim=1)
    return _unit_rows(gram)


def _unit_scale(rows: Tensor) -> Tensor:
    """``rows`` divided by their largest magnitude (a constant without gradient). The Gram relation of
    ``official`` is invariant to it — value and gradient — while ``F Fᵀ`` of features around 1e19 (an
    unstable teacher's BatchNorm in evaluation mode) overflows float32 to inf and the loss to NaN."""
    scale = rows.detach().abs().amax()
    usable = (scale > 0) & torch.isfinite(scale)  # a tensor condition: no host synchronisation on a GPU
    return rows / torch.where(usable, scale, torch.ones_like(scale))


def _unit_rows(x: Tensor, tiny: float = 1e-12) -> Tensor:
    """Each row divided by its L2 norm, as ``F.normalize`` — but a row whose norm is below ``tiny`` (an
    all-zero Gram row: ReLU features of disjoint support, frequent in a half of few columns) is 0 with
    zero gradient. ``F.normalize`` gives the same value there, with a gradient of 1/``tiny`` = 1e12
    times the upstream one, which blows the weights up in one step; the direction of a zero row is
    undefined, so it carries no gradient here."""
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    safe = norm > tiny
    return torch.where(safe, x / torch.where(safe, norm, torch.ones_like(norm)), torch.zeros_like(x))


def _dense_loss(
    fs: Tensor, ft: Tensor, weights: Tensor, cosine: bool, weight_rows: bool, eps: float, halves: bool = False
) -> Tensor:
    """Dense ``Σ_ij D_ij w_i`` (``weight_rows``) or ``Σ_ij D_ij w_j`` on row matrices."""
    ns = torch.linalg.vector_norm(fs, dim=1) if cosine else None
    nt = torch.linalg.vector_norm(ft, dim=1) if cosine else None
    a_s = _relation(fs, ns, fs, ns, cosine, eps, halves)
    a_t = _relation(ft, nt, ft, nt, cosine, eps, halves)
    diff = (a_t - a_s).pow(2)
    if weight_rows:
        return (diff.sum(dim=1) * weights).sum()
    return (diff * weights[None, :]).sum()


def _block_loss(
    fs: Tensor,
    ns: Tensor | None,
    ft: Tensor,
    nt: Tensor | None,
    weights: Tensor,
    start: int,
    stop: int,
    cosine: bool,
    weight_rows: bool,
    eps: float,
    halves: bool = False,
) -> Tensor:
    """The rows ``start:stop`` of the dense loss (teacher side computed without gradient)."""
    with torch.no_grad():
        a_t = _relation(ft[start:stop], None if nt is None else nt[start:stop], ft, nt, cosine, eps, halves)
    a_s = _relation(fs[start:stop], None if ns is None else ns[start:stop], fs, ns, cosine, eps, halves)
    diff = (a_t - a_s).pow(2)
    if weight_rows:
        return (diff.sum(dim=1) * weights[start:stop]).sum()
    return (diff * weights[None, :]).sum()


class _BlockedRelationLoss(torch.autograd.Function):
    """The relation-distillation loss in row blocks; backward recomputes each block.

    Peak extra memory is O(block · N) instead of O(N²). Inputs: student rows ``fs`` (N, D)
    and their norms ``ns`` (N,) (``None`` for the Gram relation), teacher rows/norms, weights.
    """

    @staticmethod
    def forward(ctx, fs, ns, ft, nt, weights, cosine, weight_rows, eps, block, halves=False):  # noqa: D401
        n = fs.shape[0]
        total = fs.new_zeros(())
        with torch.no_grad():
            for start in range(0, n, block):
                stop = min(n, start + block)
                total = total + _block_loss(fs, ns, ft, nt, weights, start, stop, cosine, weight_rows, eps, halves)
        ctx.save_for_backward(fs, ns, ft, nt, weights)
        ctx.options = (cosine, weight_rows, eps, block, halves)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        fs, ns, ft, nt, weights = ctx.saved_tensors
        cosine, weight_rows, eps, block, halves = ctx.options
        n = fs.shape[0]
        grad_fs = torch.zeros_like(fs)
        grad_ns = None if ns is None else torch.zeros_like(ns)
        with torch.enable_grad():
            fs_leaf = fs.detach().requires_grad_(True)
            ns_leaf = None if ns is None else ns.detach().requires_grad_(True)
            leaves = (fs_leaf,) if ns_leaf is None else (fs_leaf, ns_leaf)
            for start in range(0, n, block):
                stop = min(n, start + block)
                part = _block_loss(fs_leaf, ns_leaf, ft, nt, weights, start, stop, cosine, weight_rows, eps, halves)
                grads = torch.autograd.grad(part, leaves, allow_unused=True)
                if grads[0] is not None:
                    grad_fs += grads[0]
                if ns_leaf is not None and grads[1] is not None:
                    grad_ns += grads[1]
        grad_fs = grad_fs * grad_output
        if grad_ns is not None:
            grad_ns = grad_ns * grad_output
        return grad_fs, grad_ns, None, None, None, None, None, None, None, None


def _blocked_loss(
    fs: Tensor,
    ft: Tensor,
    weights: Tensor,
    cosine: bool,
    weight_rows: bool,
    eps: float,
    block_size: int | None,
    halves: bool = False,
) -> Tensor:
    n = fs.shape[0]
    if block_size is None:
        block_size = max(1, DEFAULT_BLOCK_ELEMENTS // max(n, 1))
    if block_size < 1:
        raise ValueError(f"block_size must be a positive number of rows, got {block_size}")
    ns = torch.linalg.vector_norm(fs, dim=1) if cosine else None
    with torch.no_grad():
        nt = torch.linalg.vector_norm(ft, dim=1) if cosine else None
    return _BlockedRelationLoss.apply(fs, ns, ft, nt, weights, cosine, weight_rows, eps, min(block_size, n), halves)


def _pixel_rows(feature_map: Tensor) -> Tensor:
    """``(B, C, H, W)`` → ``(B·H·W, C)``, pixel rows in (b, h, w) order."""
    return feature_map.permute(0, 2, 3, 1).reshape(-1, feature_map.shape[1])


def mad_loss(
    student_features: Tensor,
    teacher_features: Tensor,
    teacher_logits: Tensor,
    *,
    variant: Variant = "paper",
    eps: float = 1e-8,
    per_pixel: bool = False,
    block_size: int | None = None,
    reduction: Reduction = "mean",
    row_normalization: RowNormalization = "whole",
    weighting: Weighting = "entropy",
) -> Tensor:
    """Margin-aware distillation loss ``L_MAD`` (docs/design.md §4.1, Eqs. 2–8); a scalar.

    Args:
        student_features: the deployment network's fused feature ``f^d``, ``(B, ...)``;
            each sample is flattened to one row (step 1). With ``per_pixel=True``: ``(B, C, H, W)``.
        teacher_features: the teacher's fused feature ``f^t``, same batch size (the feature size
            may differ: only the ``B×B`` relations are compared). Detached.
        teacher_logits: ``p^t``, ``(B, K)``; with ``per_pixel=True``: ``(B, K, H', W')``, resized
            bilinearly to the feature map. Detached; gives the uncertainty weights (step 4).
        variant: ``"paper"`` (cosine relation, weights on rows: ``Σ_i w_i d_i``, step 5),
            ``"sp"`` (cosine relation, ``w_i = 1/B``), or ``"official"`` (authors' code:
            row-normalised Gram relation, ``Σ_ij D_ij w_j``; per-pixel: weights on rows).
        eps: ε of the cosine denominator and of the entropy/weight normalisation.
        per_pixel: segmentation mode, every pixel is a sample (``N = B·H·W``), computed in row
            blocks of bounded memory (recomputed in backward).
        block_size: rows per block in per-pixel mode (default: ``2**24 // N``).
        reduction: ``"mean"`` (default): the batch-size-free form of step 6 (``paper``/``sp``: the
            step-5 value divided by the number of rows ``N``; ``official``: the step-5 value, already
            batch-size free); ``"sum"``: the step-5 value as is (the authors' α scale).
        row_normalization: ``official`` only. ``"whole"``: each Gram row is L2-normalised over all
            its columns; ``"column_halves"``: over the first and the second half of its columns
            separately, as the authors' segmentation code builds the per-pixel relation (each row then
            has squared norm 2 instead of 1: about twice the ``"whole"`` value).
        weighting: ``"entropy"`` (step 4) or ``"uniform"`` (``w = 1/N``: the SP ablation of this
            variant's relation; ``variant="sp"`` is always uniform).

    Half-precision inputs are computed in float32 (autocast is disabled inside).
    """
    _check_variant(variant, reduction, row_normalization)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown MAD weighting {weighting!r}; valid: {list(WEIGHTINGS)}")
    if student_features.dim() < 2:
        raise ValueError(
            f"student features must have a batch dimension and a feature dimension, got shape "
            f"{tuple(student_features.shape)}"
        )
    if teacher_features.shape[0] != student_features.shape[0]:
        raise ValueError(
            f"batch sizes disagree: student features have {student_features.shape[0]} samples, "
            f"teacher features {teacher_features.shape[0]}"
        )
    if teacher_logits.shape[0] != student_features.shape[0]:
        raise ValueError(
            f"batch sizes disagree: features have {student_features.shape[0]} samples, "
            f"teacher logits {teacher_logits.shape[0]}"
        )
    with torch.autocast(device_type=student_features.device.type, enabled=False):
        fs = _as_float(student_features)
        ft = _as_float(teacher_features.detach())
        logits = teacher_logits.detach()
        # a teacher run under torch.inference_mode gives inference tensors, which autograd may not save
        ft = ft.clone() if ft.is_inference() else ft
        logits = logits.clone() if logits.is_inference() else logits
        if per_pixel:
            if fs.dim() != 4 or ft.dim() != 4:
                raise ValueError(
                    "per_pixel=True needs feature maps (B, C, H, W); got student "
                    f"{tuple(fs.shape)} and teacher {tuple(ft.shape)}"
                )
            if fs.shape[2:] != ft.shape[2:]:
                raise ValueError(
                    f"per-pixel MAD needs student and teacher maps of the same size, got "
                    f"{tuple(fs.shape[2:])} and {tuple(ft.shape[2:])}"
                )
            if logits.dim() != 4:
                raise ValueError(f"per-pixel MAD needs teacher logits (B, K, H', W'), got shape {tuple(logits.shape)}")
            logits = _as_float(logits)
            if logits.shape[2:] != fs.shape[2:]:
                logits = F.interpolate(logits, size=fs.shape[2:], mode="bilinear", align_corners=False)
            rows_s, rows_t, rows_logits = _pixel_rows(fs), _pixel_rows(ft), _pixel_rows(logits)
        else:
            if logits.dim() != 2:
                raise ValueError(f"teacher logits must be 2-D (B, K), got shape {tuple(logits.shape)}")
            rows_s, rows_t, rows_logits = fs.flatten(1), ft.flatten(1), logits
        n = rows_s.shape[0]
        if variant == "official":  # the row-normalised Gram is unchanged by a global scale of F: bound F
            rows_s, rows_t = _unit_scale(rows_s), _unit_scale(rows_t)  # so that F Fᵀ cannot overflow
        if variant == "sp" or weighting == "uniform":
            weights = rows_s.new_full((n,), 1.0 / n)
        else:
            weights = entropy_weights(rows_logits, eps).to(rows_s.dtype)
        cosine = variant != "official"
        weight_rows = variant != "official" or per_pixel
        halves = row_normalization == "column_halves"
        if per_pixel:
            total = _blocked_loss(rows_s, rows_t, weights, cosine, weight_rows, eps, block_size, halves)
        else:
            total = _dense_loss(rows_s, rows_t, weights, cosine, weight_rows, eps, halves)
        # official: the row-normalised Gram already divides by the batch (see step 6)
        return total / n if reduction == "mean" and variant != "official" else total


def sp_loss(
    student_features: Tensor,
    teacher_features: Tensor,
    *,
    eps: float = 1e-8,
    per_pixel: bool = False,
    block_size: int | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """The SP ablation of MAD (uniform weights ``1/B``); no teacher logits needed.

    With ``reduction="mean"`` this is the mean squared relation difference over the ``N×N`` relation.
    """
    n = student_features.shape[0]
    dummy = student_features.new_zeros((n, 1, 1, 1) if per_pixel else (n, 1))
    return mad_loss(
        student_features,
        teacher_features,
        dummy,
        variant="sp",
        eps=eps,
        per_pixel=per_pixel,
        block_size=block_size,
        reduction=reduction,
    )


class MADLoss(nn.Module):
    """``nn.Module`` wrapper of :func:`mad_loss` (docs/design.md §4.1, Eqs. 2–8)."""

    def __init__(
        self,
        variant: Variant = "paper",
        eps: float = 1e-8,
        per_pixel: bool = False,
        block_size: int | None = None,
        reduction: Reduction = "mean",
        row_normalization: RowNormalization = "whole",
    ) -> None:
        super().__init__()
        _check_variant(variant, reduction, row_normalization)
        self.variant = variant
        self.reduction = reduction
        self.row_normalization = row_normalization
        self.eps = eps
        self.per_pixel = per_pixel
        self.block_size = block_size

    def forward(self, student_features: Tensor, teacher_features: Tensor, teacher_logits: Tensor) -> Tensor:
        return mad_loss(
            student_features,
            teacher_features,
            teacher_logits,
            variant=self.variant,
            eps=self.eps,
            per_pixel=self.per_pixel,
            block_size=self.block_size,
            reduction=self.reduction,
            row_normalization=self.row_normalization,
        )

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, reduction={self.reduction!r}, eps={self.eps}, per_pixel={self.per_pixel}"
