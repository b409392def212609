"""PASSION's loss terms (Shi et al., ACM MM 2024; written from the authors' code, Jun-Jie-Shi/PASSION:
``code/utils/criterions.py``, ``code/models/rfnet.py``, ``code/train.py`` — docs/implementation-notes.md).

For each modality ``m``, the network's single-modality path (the fusion and head run with ``m`` alone)
gives logits ``p^m`` and a representation ``f^m``; the multimodal pass gives ``p`` and ``f`` (detached:
they teach). Per sample ``i`` that has ``m``:

* self-distillation ``KL^m_i = T² · KL(σ(p_i/T) ‖ σ(p^m_i/T))`` (:func:`mmanet.losses.kd.per_sample_kd`);
* prototype alignment: class prototypes ``P^m_c`` (of ``f^m``) and ``P_c`` (of ``f``) over the labelled
  rows of the batch (pixels for segmentation), similarities ``s^m_ic = cos(f^m_i, P^m_c)`` and
  ``s_ic = cos(f_i, P_c)`` over the classes in the batch; ``proto^m_i = mean_c (s^m_ic − s_ic)²`` and the
  distance ``dist^m_i = mean_c |s^m_ic − s_ic|`` (segmentation: means over the sample's pixels too);
* preference: ``rp_m = Σ_i [m ∈ i] (dist^m_i / d̄_i − 1)`` with ``d̄_i`` the mean distance over the
  sample's modalities; modality ``m`` lags when ``rp_m > 0``;
* the epoch update of the per-modality weights: ``rp^e_m = (D̄ − D_m) / D̄`` from the epoch's mean
  distances ``D_m``, ``β ← clip(β − η·rp^e, 0.1, 4)``, then ``β ← √M · β / ‖β‖``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mmanet.losses.kd import per_sample_kd

__all__ = ["authors_kl", "per_sample_kd", "preference", "prototype_terms", "updated_betas"]

#: the authors' temp_kl_loss clamps both softened probabilities to [0.005, 1] before the logarithm
_CLAMP = 0.005


def authors_kl(single_logits: Tensor, fused_logits: Tensor, *, temperature: float) -> Tensor:
    """``(B,)``: the authors' ``temp_kl_loss_bs`` — ``T² · mean_{k, pixels} q_k (log q_k − log p_k)`` with ``q``, ``p``
    the softened fused and single-modality probabilities, each clamped to [0.005, 1]. The MEAN over the K
    classes makes it 1/K of a KL divergence (:func:`per_sample_kd`, ``passion.kl_form: kl``). The fused
    side carries no gradient."""
    q = torch.softmax(fused_logits.detach().float() / temperature, dim=1).clamp(_CLAMP, 1.0)
    p = torch.softmax(single_logits.float() / temperature, dim=1).clamp(_CLAMP, 1.0)
    return (temperature**2 * q * (q.log() - p.log())).flatten(1).mean(dim=1)


def _rows(feature: Tensor) -> tuple[Tensor, int]:
    """``(N, C)`` rows (samples, or pixels in (b, h, w) order) and the number of rows per sample."""
    if feature.dim() == 2:
        return feature, 1
    b, c = feature.shape[:2]
    rows = feature.flatten(2).transpose(1, 2).reshape(-1, c)
    return rows, rows.shape[0] // b


def _row_labels(labels: Tensor, feature: Tensor) -> Tensor:
    """One label per row: a sample's class, or its label map resized (nearest) to the feature map."""
    if feature.dim() == 2:
        return labels
    size = feature.shape[2:]
    if tuple(labels.shape[1:]) != tuple(size):
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return labels.reshape(-1)


def prototype_terms(single: Tensor, fused: Tensor, labels: Tensor, *, ignore: int = -1) -> tuple[Tensor, Tensor]:
    """``(proto_i, dist_i)`` per sample (module docstring) of the single-modality representation ``single`` and
    the multimodal ``fused`` (detached), ``(B, C)`` or ``(B, C, H, W)``; ``labels``: ``(B,)`` classes or
    ``(B, H, W)`` maps, ``ignore`` (unlabelled / void) left out of the prototypes. Zeros when the batch has
    no labelled row."""
    fused = fused.detach()
    s_rows, per_sample = _rows(single.float())
    f_rows, _ = _rows(fused.float())
    row_labels = _row_labels(labels, single)
    classes = [int(c) for c in torch.unique(row_labels) if int(c) != ignore and int(c) >= 0]
    b = single.shape[0]
    if not classes:
        zero = single.sum() * 0.0
        return zero.expand(b), zero.detach().expand(b)
    sims_s, sims_f = [], []
    for c in classes:
        members = (row_labels == c).float()[:, None]
        proto_s = (s_rows * members).sum(dim=0) / members.sum()
        proto_f = (f_rows * members).sum(dim=0) / members.sum()
        sims_s.append(F.cosine_similarity(s_rows, proto_s[None], dim=1, eps=1e-5))
        sims_f.append(F.cosine_similarity(f_rows, proto_f[None], dim=1, eps=1e-5))
    gap = torch.stack(sims_s, dim=1) - torch.stack(sims_f, dim=1)  # (N, n_classes)
    proto = (gap**2).mean(dim=1).reshape(b, per_sample).mean(dim=1)
    dist = gap.abs().mean(dim=1).reshape(b, per_sample).mean(dim=1)
    return proto, dist.detach()


def preference(dist: Tensor, available: Tensor) -> Tensor:
    """``rp_m = Σ_i [m ∈ i] (dist_im / d̄_i − 1)`` with ``d̄_i`` the mean of ``dist_i`` over the sample's available
    modalities; ``dist, available: (B, M)``. A sample whose distances are all 0 contributes nothing."""
    available = available.float()
    count = available.sum(dim=1)
    mean = (dist * available).sum(dim=1) / count.clamp(min=1)
    usable = (mean > 0)[:, None].float()
    ratio = dist / mean.clamp(min=1e-12)[:, None] - 1
    return (available * usable * ratio).sum(dim=0)


def updated_betas(beta: Tensor, mean_dist: Tensor, eta: float) -> Tensor:
    """The epoch update of the per-modality weights (module docstring); ``mean_dist``: ``D_m`` per modality."""
    average = mean_dist.mean()
    if not bool(average > 0):
        return beta
    rp = (average - mean_dist) / average
    beta = (beta - eta * rp).clamp(min=0.1, max=4.0)
    return math.sqrt(beta.numel()) * beta / beta.norm()
