"""Flex-MoE fusion (Yun et al., NeurIPS 2024; written from the authors' code, UNITES-Lab/flex-moe:
``models.py``, ``moe_module.py``, ``main.py`` — docs/implementation-notes.md). Plain PyTorch: the
authors' CUDA-only FastMoE routing is a loop over the experts the tokens chose.

* **Missing-modality bank.** Each combination ``c`` of present modalities has a learned embedding per
  modality; a sample trained or evaluated under ``c`` gets ``bank[c, m]`` in place of every missing
  modality ``m`` (so a missing modality's features can never reach the output).
* **Transformer with a sparse mixture of experts.** The modality tokens (+ a learned modality embedding)
  pass one pre-norm layer: self-attention over all tokens, then an MLP chosen per token by a noisy top-k
  gate among ``E = 2^M − 1`` experts, one per combination (expert 0: the full combination).
* **Two routings, one gate** (their S-router and G-router): tokens of incomplete samples are trained to
  route to their combination's expert (cross-entropy on the gate logits), and the gate's load is balanced
  (``cv²`` of importance and load: over all experts for complete samples, over experts 1… for the others).
  ``flexmoe_gate = gate_weight · (CE + balance)`` (their ``gate_loss_weight`` 0.01).
* The fused output is the concatenation of the modality tokens (mean over a map's positions is left to
  the head): ``(B, M·C, *S)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.models.fusion.base import (
    Fusion,
    FusionOutput,
    TaskLoss,
    exporting,
    grouped_uniform_,
    register_fusion,
    to_tokens,
)

_NOISE_EPS = 1e-2


def cv_squared(values: Tensor) -> Tensor:
    """The squared coefficient of variation ``var / mean²`` (0 for fewer than two values): the balance term."""
    if values.numel() < 2:
        return values.sum() * 0.0
    values = values.float()
    return values.var() / (values.mean() ** 2 + 1e-10)


def prob_in_top_k(clean: Tensor, noisy: Tensor, noise_std: Tensor, top_values: Tensor, k: int) -> Tensor:
    """``P(expert e is among the top k)`` under the gate's Gaussian noise, per token (Shazeer et al. 2017): the
    differentiable load. ``top_values``: the noisy logits' k+1 largest per token."""
    threshold_in = top_values[:, k : k + 1]  # the (k+1)-th value: what an expert inside must stay above
    threshold_out = top_values[:, k - 1 : k]  # the k-th value: what an expert outside must exceed
    inside = noisy > threshold_in
    normal = torch.distributions.Normal(torch.zeros((), device=clean.device), torch.ones((), device=clean.device))
    prob_if_in = normal.cdf((clean - threshold_in) / noise_std)
    prob_if_out = normal.cdf((clean - threshold_out) / noise_std)
    return torch.where(inside, prob_if_in, prob_if_out)


@register_fusion("flexmoe")
class FlexMoEFusion(Fusion):
    """The missing-modality bank, one attention layer and a sparse mixture of combination experts (module
    docstring) → ``(B, M·C, *S)``. Options: ``top_k`` experts per token (default their 4, or every expert when
    there are fewer), ``heads`` of the attention,
    ``gate_weight`` of the gate loss (their 0.01), ``hidden_ratio`` of the experts' MLP (their 2)."""

    def __init__(
        self,
        num_modalities: int,
        channels: int,
        num_classes: int,
        spatial: bool = False,
        top_k: int | None = None,
        heads: int = 4,
        gate_weight: float = 0.01,
        hidden_ratio: int = 2,
    ) -> None:
        super().__init__(num_modalities, channels, num_classes, spatial)
        m, c = num_modalities, channels
        experts = 2**m - 1
        top_k = min(4, experts) if top_k is None else top_k  # their 4; fewer experts than that: all of them
        if not 1 <= top_k <= experts:
            raise ValueError(f"flexmoe top_k must be between 1 and the number of experts {experts}, got {top_k}")
        if c % heads:
            raise ValueError(f"flexmoe heads ({heads}) must divide the channels ({c})")
        self.top_k, self.gate_weight, self.num_experts = top_k, gate_weight, experts
        # expert of each combination (by its bit code): the full combination is expert 0, the others follow
        full = experts  # bits of the full combination
        order = [full] + [bits for bits in range(1, experts + 1) if bits != full]
        lookup = torch.zeros(2**m, dtype=torch.long)
        for index, bits in enumerate(order):
            lookup[bits] = index
        self.register_buffer("expert_of_bits", lookup, persistent=False)
        self.bank = nn.Parameter(torch.randn(experts, m, c) * 0.02)
        self.modality_embed = nn.Parameter(torch.zeros(m, c))
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.heads = heads
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        hidden = hidden_ratio * c
        self.w1, self.b1 = nn.Parameter(torch.empty(experts, c, hidden)), nn.Parameter(torch.empty(experts, hidden))
        self.w2, self.b2 = nn.Parameter(torch.empty(experts, hidden, c)), nn.Parameter(torch.empty(experts, c))
        grouped_uniform_(self.w1, self.b1, c)
        grouped_uniform_(self.w2, self.b2, hidden)
        # FastMoE's NoisyGate starts at zero; a small random start breaks the ties of an untrained gate's top-k
        # (which PyTorch and onnxruntime resolve differently)
        self.w_gate = nn.Parameter(torch.randn(c, experts) * 0.02)
        self.w_noise = nn.Parameter(torch.zeros(c, experts))
        self.out_channels = m * c

    expert_of_bits: Tensor

    def expert_index(self, mask: Tensor) -> Tensor:
        """``(B,)``: the expert (= combination) of each sample's mask."""
        bits = (mask.long() * (2 ** torch.arange(mask.shape[1], device=mask.device))).sum(dim=1)
        return self.expert_of_bits[bits]

    def forward(self, features: Tensor, mask: Tensor) -> FusionOutput:
        b, m, c = features.shape[:3]
        spatial_shape = features.shape[3:]
        tokens = to_tokens(features)  # (B, M, P, C)
        p = tokens.shape[2]
        expert = self.expert_index(mask)
        filler = self.bank[expert][:, :, None, :].expand_as(tokens)
        present = mask[:, :, None, None].expand_as(tokens)
        x = torch.where(present, tokens, filler) + self.modality_embed[None, :, None, :]
        x = x.reshape(b, m * p, c)
        x = x + self.attend(self.norm1(x))
        h = self.norm2(x).reshape(-1, c)  # one row per token
        clean = h @ self.w_gate
        noise_std = (F.softplus(h @ self.w_noise) + _NOISE_EPS) * float(self.training)
        noisy = clean + torch.randn_like(clean) * noise_std if self.training else clean
        k = self.top_k
        top_values, top_index = noisy.topk(min(k + 1, self.num_experts), dim=1)
        gates = torch.zeros_like(noisy).scatter(1, top_index[:, :k], torch.softmax(top_values[:, :k], dim=1))
        x = x + self.experts(h, gates, top_index[:, :k]).reshape(b, m * p, c)
        fused = x.reshape(b, m, p, c).permute(0, 1, 3, 2).reshape(b, m * c, *spatial_shape)
        aux: dict[str, Tensor] = {}
        if self.keeps_aux():
            token_expert = expert[:, None].expand(b, m * p).reshape(-1)
            if self.training and k < self.num_experts:
                load = prob_in_top_k(clean, noisy, noise_std, top_values, k)
            else:
                load = (gates > 0).float()
            aux = {"mask": mask, "gate_logits": noisy, "gates": gates, "load": load, "token_expert": token_expert}
        return FusionOutput(fused, aux)

    def attend(self, h: Tensor) -> Tensor:
        """Multi-head self-attention over all tokens of a sample, ``(B, N, C) -> (B, N, C)``."""
        b, n, c = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))

    def experts(self, h: Tensor, gates: Tensor, chosen: Tensor) -> Tensor:
        """``Σ_e gate_e · MLP_e(h)`` per row, each expert run on the rows that chose it only (sparse); every
        expert on every row while exporting (an ONNX graph has no data-dependent loop)."""
        if exporting():
            hidden = F.gelu(torch.einsum("nc,ech->neh", h, self.w1) + self.b1)
            return (gates[:, :, None] * (torch.einsum("neh,ehc->nec", hidden, self.w2) + self.b2)).sum(dim=1)
        out = torch.zeros_like(h)
        for e in torch.unique(chosen).tolist():
            rows = (chosen == e).any(dim=1).nonzero().flatten()
            hidden = F.gelu(h[rows] @ self.w1[e] + self.b1[e])
            out = out.index_add(0, rows, gates[rows, e, None] * (hidden @ self.w2[e] + self.b2[e]))
        return out

    def auxiliary_losses(self, out: FusionOutput, target: Tensor, loss_fn: TaskLoss) -> dict[str, Tensor]:
        """``flexmoe_gate``: the combination-routing cross-entropy and the load balance (module docstring)."""
        if not out.aux:
            return {}
        logits, gates, load, expert = out.aux["gate_logits"], out.aux["gates"], out.aux["load"], out.aux["token_expert"]
        full = expert == 0
        loss = logits.sum() * 0.0
        if bool((~full).any()):
            loss = loss + F.cross_entropy(logits[~full], expert[~full])
            loss = loss + cv_squared(gates[~full, 1:].sum(0)) + cv_squared(load[~full, 1:].sum(0))
        if bool(full.any()):
            loss = loss + cv_squared(gates[full].sum(0)) + cv_squared(load[full].sum(0))
        return {"flexmoe_gate": self.gate_weight * loss}


__all__ = ["FlexMoEFusion", "cv_squared", "prob_in_top_k"]
