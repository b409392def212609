"""The split-prefix path of ``predict_combinations`` (concat fusion + a head whose prefix is linear).

Every test compares against fusing each combination separately (``fuse_predict`` with the mask
``present ∧ c``), on tiny networks (width 8, 32×32 images) with randomised BatchNorm statistics, so
a wrong split (bias counted per modality, BatchNorm before the sum, weight blocks in the wrong
order, the two convolutions swapped) fails.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmanet.modality import ModalityError, ModalitySpec, all_combinations
from mmanet.models import MultimodalNet, build_network

SPEC = ModalitySpec(("a", "b", "c"))
VECTORS = {"a": (6,), "b": (5,), "c": (4,)}
IMAGES = {m: (3, 32, 32) for m in SPEC.names}
B, K = 6, 3
COMBOS = torch.stack([c.mask() for c in all_combinations(SPEC)])  # (7, 3)

#: (head, encoder, input shapes): the vector classification head, the classification head on pooled
#: maps, and the SF trunk (layer3 + layer4)
NETWORKS = {
    "classification": ("classification", "auto", VECTORS),
    "classification_maps": ("classification", "sf_resnet", IMAGES),
    "resnet_trunk": ("resnet_trunk", "sf_resnet", IMAGES),
}


def make_net(kind: str, fusion: str = "concat", seed: int = 0) -> MultimodalNet:
    head, encoder, shapes = NETWORKS[kind]
    torch.manual_seed(seed)
    channels = 8 if encoder == "auto" else None
    net = build_network(SPEC, shapes, K, channels=channels, encoder=encoder, head=head, fusion=fusion, width=8)
    g = torch.Generator().manual_seed(seed + 1)
    for module in net.modules():  # BatchNorm away from the identity: applying it before the sum must show
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.5 * torch.randn(n, generator=g))
            module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            module.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            module.bias.data.copy_(0.3 * torch.randn(n, generator=g))
    return net.eval()


def make_inputs(kind: str, seed: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(B, *s, generator=g) for m, s in NETWORKS[kind][2].items()}


def incomplete_present() -> torch.Tensor:
    """Row 1 lacks `a`, row 3 has only `c`, row 4 lacks `b` and `c`; the others are complete."""
    present = torch.ones(B, len(SPEC), dtype=torch.bool)
    present[1, 0] = False
    present[3, :2] = False
    present[4, 1:] = False
    return present


def reference(net: MultimodalNet, features, present: torch.Tensor, combos: torch.Tensor) -> torch.Tensor:
    """Each combination fused on its own (``present ∧ c``; the placeholder ``present`` where that is empty)."""
    out = []
    for combo in combos:
        mask = present & combo
        mask = torch.where(mask.any(dim=1, keepdim=True), mask, present)
        out.append(net.fuse_predict(features, mask).logits)
    return torch.stack(out)


def spy(net: MultimodalNet) -> list[tuple[int, ...]]:
    """Record the shape of every summed-partials tensor the head receives."""
    calls: list[tuple[int, ...]] = []
    original = net.head.forward_from_partials

    def recorded(summed):
        calls.append(tuple(summed.shape))
        return original(summed)

    net.head.forward_from_partials = recorded
    return calls


@pytest.mark.parametrize("complete", [False, True], ids=["incomplete", "complete"])
@pytest.mark.parametrize("kind", sorted(NETWORKS))
def test_split_prefix_equals_fusing_each_combination(kind, complete):
    net = make_net(kind)
    present = torch.ones(B, len(SPEC), dtype=torch.bool) if complete else incomplete_present()
    inputs = make_inputs(kind)
    with torch.no_grad():
        features = net.encode(inputs, present)
        calls = spy(net)
        out = net.predict_combinations(features, present, COMBOS)
        expected = reference(net, features, present, COMBOS)
    assert len(calls) == 1 and calls[0][0] == len(COMBOS) * B  # the split path ran, in one chunk
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(out.valid, (present.unsqueeze(0) & COMBOS.unsqueeze(1)).any(dim=2))
    assert out.valid.all() if complete else not (out.valid[:, 3].all() or out.valid[:, 4].all())
    # predict_all (what evaluation and mining call) takes the same path
    with torch.no_grad():
        torch.testing.assert_close(net.predict_all(inputs, present, COMBOS).logits, out.logits, rtol=0, atol=0)


@pytest.mark.parametrize("kind", sorted(NETWORKS))
def test_split_prefix_head_algebra(kind):
    """``forward_from_partials(Σ_m split_prefix(f)[:, m]) == head(concat f)``, logits and named features."""
    net = make_net(kind)
    with torch.no_grad():
        features = net.encode(make_inputs(kind))[0]
        partials = net.head.split_prefix(features)
        assert partials.shape[:2] == features.shape[:2]
        split = net.head.forward_from_partials(partials.sum(dim=1))
        whole = net.head([features.flatten(1, 2)])
    torch.testing.assert_close(split.logits, whole.logits, rtol=1e-5, atol=1e-6)
    assert set(split.features) == set(whole.features) == set(net.head.feature_names)
    for name in whole.features:
        torch.testing.assert_close(split.features[name], whole.features[name], rtol=1e-5, atol=1e-6)


def run_poisoned(kind: str, poison) -> tuple[list, object, torch.Tensor]:
    """``predict_combinations`` on an encoded incomplete batch after ``poison(features, present)`` (in
    place), the summed-partials calls it made, and the per-combination reference on the same features."""
    net = make_net(kind)
    present = incomplete_present()
    with torch.no_grad():
        features = net.encode(make_inputs(kind), present)[0].clone()
        poison(features, present)
        calls = spy(net)
        out = net.predict_combinations([features], present, COMBOS)
        expected = reference(net, [features], present, COMBOS)
    return calls, out, expected


@pytest.mark.parametrize("kind", ["classification", "resnet_trunk"])
def test_absent_modalities_content_cannot_leak_into_the_split(kind):
    """NaN features of absent modalities (the fusion selects them away) stay out of every combination."""

    def poison(features, present):
        features[~present] = float("nan")

    calls, out, expected = run_poisoned(kind, poison)
    assert len(calls) == 1 and torch.isfinite(out.logits).all()
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-6)


def test_non_finite_present_features_fall_back_to_the_fused_path():
    """``0 · inf`` would be NaN where the fusion gives 0: non-finite partials take today's path."""

    def poison(features, present):
        features[0, 1, 0] = float("inf")  # row 0 has `b`

    calls, out, expected = run_poisoned("classification", poison)
    assert calls == []
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert torch.isfinite(out.logits[~COMBOS[:, 1]]).all()


@pytest.mark.parametrize("kind", ["classification", "resnet_trunk"])
def test_chunking_bound_still_holds_on_the_split_path(kind):
    net = make_net(kind)
    present = incomplete_present()
    with torch.no_grad():
        features = net.encode(make_inputs(kind), present)
        whole = net.predict_combinations(features, present, COMBOS)
        per_row = net.head.split_prefix(features[0])[0, 0].numel()  # one summed partial per (combination, sample)
        calls = spy(net)
        chunked = net.predict_combinations(features, present, COMBOS, max_elements=3 * per_row * B)
    assert [c[0] for c in calls] == [3 * B, 3 * B, B]  # 3 combinations per chunk, then the remaining one
    assert all(math.prod(c) <= 3 * per_row * B for c in calls)
    torch.testing.assert_close(chunked.logits, whole.logits, rtol=1e-6, atol=1e-7)
    assert torch.equal(chunked.valid, whole.valid)


def test_training_mode_single_combination_and_other_fusions_keep_the_fused_path():
    present = incomplete_present()
    net = make_net("resnet_trunk")
    with torch.no_grad():
        features = net.encode(make_inputs("resnet_trunk"), present)
        calls = spy(net)
        net.head.layer3[0].bn1.train()  # one BatchNorm in training mode: not affine, no split
        net.predict_combinations(features, present, COMBOS)
        net.eval().predict_combinations(features, present, COMBOS[:1])  # one combination: nothing to share
        assert calls == []
        net.train().predict_combinations(features, present, COMBOS)
        assert calls == []
        other = make_net("classification", fusion="hemis")
        assert not other.fusion.masked_concat
        other_calls = spy(other)
        other.predict_combinations(other.encode(make_inputs("classification")), present, COMBOS)
        assert other_calls == []


def test_a_sample_without_any_modality_still_raises():
    net = make_net("classification")
    present = incomplete_present()
    present[2] = False
    features = net.encode(make_inputs("classification"))
    with pytest.raises(ModalityError, match="every modality missing.*batch index 2"):
        net.predict_combinations(features, present, COMBOS)
