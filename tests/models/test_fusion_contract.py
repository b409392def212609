"""The fusion contract (``models/fusion/base.py``), checked on every registered fusion.

``forward(x, mask) -> FusionOutput``: the fused ``(B, out_channels, *S)`` for every combination; a
missing modality never influences the output, the auxiliary losses or the present gradients (NaN, inf
or huge content gives the same bits); every parameter gets a gradient in a training step; a row depends
on its own features and mask only; a training forward keeps what the auxiliary losses need and
``auxiliary_losses(out, target, loss_fn)`` computes them from it — no parameter the forward used is
touched again, no random number is drawn, and the values are those of recomputing the forward's
internals (the contract before the cache); evaluation and export keep nothing. A new fusion is checked
here the day it is registered; what only one fusion does is tested in ``test_fusion_baselines.py`` and
``test_fusion_peers.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from mmanet.config import ConfigError, resolve_run_config
from mmanet.modality import ModalitySpec
from mmanet.models import build_network
from mmanet.models.factory import build_net
from mmanet.models.fusion import FUSIONS, Fusion, FusionOutput, build_fusion, fusion_options
from mmanet.models.fusion.base import per_modality_task_loss, task_logits, to_tokens, zero_missing
from mmanet.models.fusion.dmrnet import kl_to_standard_normal
from mmanet.models.fusion.flexmoe import cv_squared, prob_in_top_k
from mmanet.models.fusion.shaspec import domain_classification_loss, shared_alignment_loss
from mmanet.task import TaskInfo

M, B, C, K = 3, 4, 8, 5
NAMES = FUSIONS.keys()
COMBOS = [c for c in itertools.product([False, True], repeat=M) if any(c)]
SHAPES = {"vector": (), "map": (3, 3)}
#: the auxiliary losses of the fusions that have some (a new fusion without an entry is checked for the rest)
AUX_KEYS = {
    "concat": set(),
    "se_add": set(),
    "hemis": set(),
    "lcr": {"lcr_recon"},
    "rfnet": {"rfnet_sep", "rfnet_prm"},
    "mmformer": {"mmformer_sep"},
    "shaspec": {"shaspec_align", "shaspec_domain"},
    "dmrnet": {"dmrnet_kl", "dmrnet_hard"},
    "flexmoe": {"flexmoe_gate"},
}
#: fusions that draw random numbers in training (DMRNet: the reparameterised sample; Flex-MoE: the noisy gate);
#: reseeded before each pass
STOCHASTIC = {"dmrnet", "flexmoe"}


def make(name: str, shape: tuple[int, ...], seed: int = 0) -> Fusion:
    torch.manual_seed(seed)
    return build_fusion(name, M, C, K, bool(shape))


def features(shape: tuple[int, ...], seed: int = 1, batch: int = B) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, M, C, *shape, generator=g)


def targets(batch: int = B) -> Tensor:
    return torch.arange(batch) % K


def mixed_mask() -> Tensor:
    """Rows with different combinations, every modality present somewhere and missing somewhere."""
    return torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)


def corrupt_missing(x: Tensor, mask: Tensor, value: float | None = None) -> Tensor:
    """The missing modalities' features replaced by huge noise (or a constant such as inf or NaN)."""
    y = x.clone()
    g = torch.Generator().manual_seed(99)
    noise = torch.randn(y.shape, generator=g) * 1e3 if value is None else torch.full(y.shape, value)
    missing = (~mask).reshape(mask.shape + (1,) * (x.dim() - 2)).expand_as(x)
    y[missing] = noise[missing]
    return y


def step(fusion: Fusion, x: Tensor, mask: Tensor, target: Tensor, seed: int = 5):
    """One pass: the fusion's output, its auxiliary losses, and a loss that uses both (the global RNG reseeded)."""
    torch.manual_seed(seed)
    out = fusion(x, mask)
    aux = fusion.auxiliary_losses(out, target, F.cross_entropy)
    return out, aux, out.fused.sum() + sum(aux.values(), torch.zeros(()))


# ---------------------------------------------------------------- every combination, every parameter


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "".join("1" if p else "0" for p in c))
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", NAMES)
def test_every_combination_trains_every_parameter(name, shape, combo):
    fusion = make(name, shape).train()
    mask = torch.tensor(combo).expand(B, M).clone()  # the same combination batch-wide
    x = features(shape).requires_grad_(True)
    out, aux, loss = step(fusion, x, mask, targets())
    assert isinstance(out, FusionOutput)
    assert out.fused.shape == (B, fusion.out_channels, *shape) and out.spatial == shape
    assert torch.isfinite(out.fused).all()
    assert set(aux) == AUX_KEYS.get(name, set(aux))
    assert all(v.dim() == 0 and torch.isfinite(v) for v in aux.values())
    loss.backward()
    for pname, p in fusion.named_parameters():  # DDP without find_unused_parameters: any mask, every parameter
        assert p.grad is not None, f"{name}.{pname} got no gradient for {combo}"
        assert torch.isfinite(p.grad).all(), pname
    assert torch.isfinite(x.grad).all()
    assert (x.grad[~mask] == 0).all(), "a missing modality received gradient"
    assert x.grad[mask].abs().sum() > 0, "the present modalities received no gradient"


# ---------------------------------------------------------------- the leak test


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_missing_content_never_leaks(name, shape, train):
    """NaN, inf, huge or random content of a missing modality gives the same output, losses and gradients, bit
    for bit, and a missing modality receives no gradient; the present modalities' content does reach the output."""
    fusion = make(name, shape).train(train)
    mask = mixed_mask()
    x = features(shape).requires_grad_(True)
    ref_out, ref_aux, ref_loss = step(fusion, x, mask, targets())
    ref_loss.backward()
    ref_grad = x.grad.clone()
    ref_params = {n: p.grad for n, p in fusion.named_parameters()}  # (eval: none for the auxiliary heads)
    for value in (float("nan"), float("inf"), -1e30, None):
        fusion.zero_grad(set_to_none=True)
        y = corrupt_missing(x.detach(), mask, value).requires_grad_(True)
        out, aux, loss = step(fusion, y, mask, targets())
        assert torch.equal(out.fused, ref_out.fused), value
        assert aux.keys() == ref_aux.keys() and all(torch.equal(aux[k], ref_aux[k]) for k in aux), value
        loss.backward()
        assert torch.equal(y.grad, ref_grad), value
        for n, p in fusion.named_parameters():
            assert (p.grad is None and ref_params[n] is None) or torch.equal(p.grad, ref_params[n]), (value, n)
    changed = corrupt_missing(x.detach(), ~mask)  # now the PRESENT modalities' content changes
    assert not torch.allclose(step(fusion, changed, mask, targets())[0].fused, ref_out.fused, atol=1e-3)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_rows_are_independent(name, shape, train):
    """A row's output depends only on its own features and mask (no batch statistics), in both modes."""
    fusion = make(name, shape).train(train)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fusion.modules())
    mask, x = mixed_mask(), features(shape)
    with torch.no_grad():
        torch.manual_seed(3)
        batch_out = fusion(x, mask).fused
        for i in range(B):
            other_m, other_x = torch.ones_like(mask), features(shape, seed=7)
            other_m[i], other_x[i] = mask[i], x[i]
            torch.manual_seed(3)  # a sampling fusion draws the same noise for the same batch shape
            torch.testing.assert_close(fusion(other_x, other_m).fused[i], batch_out[i], atol=1e-5, rtol=1e-5)
            if not train or name not in STOCHASTIC:
                alone = fusion(x[i : i + 1], mask[i : i + 1]).fused
                torch.testing.assert_close(alone, batch_out[i : i + 1], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- computed once


class ParameterUse(TorchFunctionMode):
    """Records which of ``module``'s parameters the torch calls inside the block take as an argument."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.names = {id(p): n for n, p in module.named_parameters()}
        self.used: set[str] = set()

    def _note(self, value: object) -> None:
        if isinstance(value, Tensor) and id(value) in self.names:
            self.used.add(self.names[id(value)])
        elif isinstance(value, list | tuple):
            for item in value:
                self._note(item)
        elif isinstance(value, dict):
            for item in value.values():
                self._note(item)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self._note(args)
        self._note(kwargs)
        return func(*args, **kwargs)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", NAMES)
def test_auxiliary_losses_do_not_run_the_fusion_again(name, shape):
    """The auxiliary losses use what the training forward kept: no parameter the forward used is used again
    (a recomputation of the forward's internals would), and no random number is drawn."""
    fusion = make(name, shape).train()
    x, mask = features(shape), mixed_mask()
    with ParameterUse(fusion) as forward_use:
        out = fusion(x, mask)
    state = torch.get_rng_state()
    with ParameterUse(fusion) as aux_use:
        aux = fusion.auxiliary_losses(out, targets(), F.cross_entropy)
    assert torch.equal(torch.get_rng_state(), state), "the auxiliary losses drew random numbers"
    assert forward_use.used or not list(fusion.parameters()), "the parameter recorder saw nothing"
    again = forward_use.used & aux_use.used
    assert not again, f"the auxiliary losses ran parameters of the forward again: {sorted(again)}"
    assert set(aux) == AUX_KEYS.get(name, set(aux))
    if aux:  # what the losses read is the forward's own (the mask included)
        assert out.aux and out.aux["mask"] is mask


@pytest.mark.parametrize("name", NAMES)
def test_a_network_training_step_fuses_each_level_once(name):
    """The network's training step: one fusion forward per level, the auxiliary losses from its output."""
    torch.manual_seed(0)
    spec = ModalitySpec(("a", "b", "c"))
    shapes = {"a": (5,), "b": (7,), "c": (1, 6, 6)}
    net = build_network(spec, shapes, K, channels=C, fusion=name, head_hidden=16).train()
    calls = []
    for fusion in net.fusions:
        fusion.register_forward_hook(lambda module, args, output: calls.append(module))
    inputs = {m: torch.randn(B, *s) for m, s in shapes.items()}
    mask = mixed_mask()
    out = net.fuse_predict(net.encode(inputs, mask), mask)
    aux = net.auxiliary_losses(out, targets(), F.cross_entropy)
    assert len(calls) == len(net.fusions) == len(out.fusion_outputs)
    assert [o.fused for o in out.fusion_outputs] == out.fused
    assert set(aux) == AUX_KEYS.get(name, set(aux))
    loss = F.cross_entropy(out.logits, targets()) + sum(aux.values(), torch.zeros(()))
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
    assert len(calls) == len(net.fusions)  # the backward ran nothing again either


def _recomputed_lcr(fusion, x, mask, target, loss_fn):
    _, r, masked = fusion._representations(x, mask)
    others = mask.sum(dim=1, keepdim=True) - mask.long()
    eligible = mask & (others > 0)
    err = (r - masked).abs().flatten(2).mean(dim=2)
    loss = torch.where(eligible, err, torch.zeros((), dtype=err.dtype)).sum()
    return {"lcr_recon": loss / eligible.sum().clamp_min(1).to(err.dtype)}


def _recomputed_rfnet(fusion, x, mask, target, loss_fn):
    spatial = tuple(x.shape[3:])
    tokens, cat = fusion._tokens(x, mask)
    return {
        "rfnet_sep": per_modality_task_loss(fusion.sep_head, tokens, mask, spatial, target, loss_fn),
        "rfnet_prm": loss_fn(task_logits(fusion.prm_net(cat), spatial, target), target),
    }


def _recomputed_mmformer(fusion, x, mask, target, loss_fn):
    tokens = to_tokens(zero_missing(x, mask))
    return {"mmformer_sep": per_modality_task_loss(fusion.sep_head, tokens, mask, tuple(x.shape[3:]), target, loss_fn)}


def _recomputed_shaspec(fusion, x, mask, target, loss_fn):
    specific, shared = fusion.features(x, mask)
    return {
        "shaspec_align": fusion.align_weight * shared_alignment_loss(shared, mask),
        "shaspec_domain": fusion.domain_weight * domain_classification_loss(fusion.domain_head(specific.mean(2)), mask),
    }


def _recomputed_dmrnet(fusion, x, mask, target, loss_fn):
    """The deterministic term (the hard-combination term is on the forward's sample: test_fusion_peers.py)."""
    return {"dmrnet_kl": fusion.kl_weight * kl_to_standard_normal(*fusion.gaussian(x, mask))}


def _recomputed_flexmoe(fusion, x, mask, target, loss_fn):
    """The gate loss from scratch, with the noise of step()'s forward (its first random draw)."""
    torch.manual_seed(5)
    b, m, c = x.shape[:3]
    tokens = to_tokens(x)
    expert = fusion.expert_index(mask)
    filled = torch.where(
        mask[:, :, None, None].expand_as(tokens), tokens, fusion.bank[expert][:, :, None, :].expand_as(tokens)
    )
    h = (filled + fusion.modality_embed[None, :, None, :]).reshape(b, -1, c)
    h = fusion.norm2(h + fusion.attend(fusion.norm1(h))).reshape(-1, c)
    clean = h @ fusion.w_gate
    std = F.softplus(h @ fusion.w_noise) + 1e-2
    noisy = clean + torch.randn_like(clean) * std
    top_values, top_index = noisy.topk(fusion.top_k + 1, dim=1)
    gates = torch.zeros_like(noisy).scatter(
        1, top_index[:, : fusion.top_k], torch.softmax(top_values[:, : fusion.top_k], dim=1)
    )
    load = prob_in_top_k(clean, noisy, std, top_values, fusion.top_k)
    token_expert = expert[:, None].expand(b, h.shape[0] // b).reshape(-1)
    full = token_expert == 0
    loss = noisy.sum() * 0.0
    loss = loss + F.cross_entropy(noisy[~full], token_expert[~full])
    loss = loss + cv_squared(gates[~full, 1:].sum(0)) + cv_squared(load[~full, 1:].sum(0))
    loss = loss + cv_squared(gates[full].sum(0)) + cv_squared(load[full].sum(0))
    return {"flexmoe_gate": fusion.gate_weight * loss}


#: the auxiliary losses as the fusions computed them before the cache: a second pass over the forward's internals
RECOMPUTED: dict[str, Callable[..., dict[str, Tensor]]] = {
    "lcr": _recomputed_lcr,
    "rfnet": _recomputed_rfnet,
    "mmformer": _recomputed_mmformer,
    "shaspec": _recomputed_shaspec,
    "dmrnet": _recomputed_dmrnet,
    "flexmoe": _recomputed_flexmoe,
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", NAMES)
def test_auxiliary_losses_equal_the_recomputed_ones(name, shape):
    """On the same inputs, the losses from the forward's cache are those of recomputing its internals, bit for bit."""
    if AUX_KEYS.get(name) == set():
        pytest.skip(f"{name} has no auxiliary losses")
    assert name in RECOMPUTED, f"{name}: say how its auxiliary losses are computed from scratch (RECOMPUTED)"
    fusion = make(name, shape).train()
    x, mask = features(shape), mixed_mask()
    for target in (targets(), torch.randint(0, K, (B, 6, 6), generator=torch.Generator().manual_seed(0))):
        if target.dim() > 1 and not shape:
            continue  # dense targets go with feature maps
        _, aux, _ = step(fusion, x, mask, target)
        expected = RECOMPUTED[name](fusion, x, mask, target, F.cross_entropy)
        for key, value in expected.items():
            assert torch.equal(aux[key], value), (key, aux[key].item(), value.item())


# ---------------------------------------------------------------- evaluation and export keep nothing


@pytest.mark.parametrize("name", NAMES)
def test_evaluation_keeps_nothing_and_draws_nothing(name):
    fusion = make(name, (3, 3)).eval()
    state = torch.get_rng_state()
    with torch.no_grad():
        out = fusion(features((3, 3)), mixed_mask())
        assert out.aux == {} and fusion.auxiliary_losses(out, targets(), F.cross_entropy) == {}
    assert torch.equal(torch.get_rng_state(), state)


class Fused(torch.nn.Module):
    """A fusion's fused feature (what a network passes on), for tracing a fusion alone."""

    def __init__(self, fusion: Fusion) -> None:
        super().__init__()
        self.fusion = fusion
        self.kept: list[bool] = []

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        out = self.fusion(x, mask)
        self.kept.append(bool(out.aux))
        return out.fused


@pytest.mark.parametrize("name", NAMES)
def test_a_traced_training_forward_keeps_nothing(name):
    wrapped = Fused(make(name, ()).train())
    with torch.no_grad():
        torch.jit.trace(wrapped, (features(()), torch.ones(B, M, dtype=torch.bool)), check_trace=False)
    assert wrapped.kept == [False]


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", NAMES)
def test_fusion_onnx_parity_on_every_combination(tmp_path, name, shape):
    """TorchScript exporter (dynamo=False), dynamic batch; onnxruntime matches eval-mode PyTorch."""
    ort = pytest.importorskip("onnxruntime")
    wrapped = Fused(make(name, shape)).eval()
    path = tmp_path / f"{name}.onnx"
    with torch.no_grad():
        torch.onnx.export(
            wrapped,
            (features(shape, batch=2), torch.ones(2, M, dtype=torch.bool)),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["features", "present"],
            output_names=["fused"],
            dynamic_axes={"features": {0: "batch"}, "present": {0: "batch"}, "fused": {0: "batch"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    mask = torch.tensor(COMBOS, dtype=torch.bool)
    x = features(shape, seed=2, batch=len(COMBOS))
    with torch.no_grad():
        expected = wrapped(x, mask).numpy()
    got = session.run(["fused"], {"features": x.numpy(), "present": mask.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    assert not any(wrapped.kept)


@pytest.mark.parametrize("name", NAMES)
def test_network_onnx_parity(tmp_path, name):
    pytest.importorskip("onnxruntime")
    from mmanet.deploy.onnx import check_parity, export_onnx

    torch.manual_seed(0)
    spec = ModalitySpec(("a", "b", "c"))
    shapes = {"a": (5,), "b": (7,), "c": (3,)}
    net = build_network(spec, shapes, K, channels=C, fusion=name, head_hidden=16)
    path = export_onnx(net, shapes, tmp_path / f"{name}.onnx")
    assert check_parity(net, shapes, path) < 1e-4


# ---------------------------------------------------------------- networks with real encoders


@pytest.mark.parametrize("name", NAMES)
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


# ---------------------------------------------------------------- options from the config


#: an option of each fusion that has some, with a value other than its default, and how the built fusion shows it
OPTION_EXAMPLES: dict[str, tuple[dict, Callable[[Fusion], bool]]] = {
    "se_add": ({"reduction": 4}, lambda f: f.se[0].hidden == 2),
    "lcr": ({"hidden": 6, "reduction": 4}, lambda f: f.est_w1.shape[2] == 6),
    "rfnet": ({"hidden": 6}, lambda f: f.prm_net[0].out_features == 6),
    "mmformer": ({"heads": 2, "mlp_ratio": 3}, lambda f: f.inter.heads == 2),
    "shaspec": ({"align_weight": 0.5, "domain_weight": 0.0}, lambda f: (f.align_weight, f.domain_weight) == (0.5, 0)),
    "dmrnet": ({"hard_warmup": 50, "num_hard": 2}, lambda f: (f.hard_warmup, f.num_hard) == (50, 2)),
    "flexmoe": (
        {"top_k": 2, "heads": 2, "gate_weight": 0.5, "hidden_ratio": 1},
        lambda f: (f.top_k, f.heads) == (2, 2),
    ),
}


@pytest.mark.parametrize("name", NAMES)
def test_options_come_from_the_config_and_unknown_ones_are_named(name):
    """``model.fusion: {type: name, <option>: …}`` reaches the constructor of every level's fusion; an unknown
    option is a config error naming the key and listing the valid ones (when the config is read)."""
    info = TaskInfo(ModalitySpec(("a", "b", "c")), K, {"a": (5,), "b": (7,), "c": (3,)})
    plain = build_net(resolve_run_config({"model": {"fusion": name, "channels": C}}), info)
    assert type(plain.fusion) is FUSIONS.get(name)
    valid = fusion_options(name)
    assert set(valid) == set(OPTION_EXAMPLES.get(name, ({}, None))[0]) | set(valid)
    if valid:
        assert name in OPTION_EXAMPLES, f"{name} takes options {valid}: add one to OPTION_EXAMPLES"
        options, shows = OPTION_EXAMPLES[name]
        config = resolve_run_config({"model": {"fusion": {"type": name, **options}, "channels": C}})
        assert config.model.fusion.options() == options
        assert shows(build_net(config, info).fusion)
    with pytest.raises(ConfigError, match=rf"model\.fusion\.nonsense: fusion '{name}' has no option .*valid"):
        resolve_run_config({"model": {"fusion": {"type": name, "nonsense": 1}}})
    with pytest.raises(ValueError, match=rf"fusion '{name}' has no option\(s\) \['nonsense'\]; valid"):
        build_network(info.spec, info.input_shapes, K, channels=C, fusion={"type": name, "nonsense": 1})
