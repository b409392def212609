"""MultimodalNet: encode once (mask-independent), fuse per combination, predict (docs/design.md §2, §3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmanet.modality import ModalityError, ModalitySpec, all_combinations
from mmanet.models import MultimodalNet, build_network
from mmanet.models.encoders import Encoder, FeatureInfo
from mmanet.models.fusion import build_fusion
from mmanet.models.heads import ClassificationHead
from mmanet.models.network import lengths_key

SPEC = ModalitySpec(("a", "b", "c"))
SHAPES = {"a": (6,), "b": (5,), "c": (4,)}
B, C, K = 5, 8, 3


def make_net(seed: int = 0, **kwargs) -> MultimodalNet:
    torch.manual_seed(seed)
    return build_network(SPEC, SHAPES, K, channels=C, head_hidden=16, **kwargs).eval()


def make_inputs(seed: int = 1, batch: int = B) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, *s, generator=g) for m, s in SHAPES.items()}


def full_mask(batch: int = B) -> torch.Tensor:
    return torch.ones(batch, len(SPEC), dtype=torch.bool)


def test_build_network_for_vector_modalities_and_output_shape():
    net = make_net()
    assert set(net.encoders) == set(SPEC.names)
    assert net.num_modalities == 3
    assert net.fusion.out_channels == 3 * C
    out = net.forward_all(make_inputs(), full_mask())
    assert out.logits.shape == (B, K)
    assert len(out.features) == 1 and out.features[0].shape == (B, 3, C)
    assert len(out.fused) == 1 and out.fused[0].shape == (B, 3 * C)
    assert net.feature_names == ("fused", "embedding")
    assert out.feature("fused") is out.fused[-1]
    with pytest.raises(KeyError, match=r"unknown feature 'logits'.*\['embedding', 'fused'\]"):
        out.feature("logits")
    assert out.embedding.shape == (B, 16)
    assert net(make_inputs(), full_mask()).shape == (B, K)


@pytest.mark.parametrize("combo", all_combinations(SPEC), ids=lambda c: c.name)
def test_dropped_modality_content_never_changes_the_output(combo):
    net = make_net()
    inputs = make_inputs()
    mask = combo.mask().expand(B, -1).clone()
    reference = net(inputs, mask)
    g = torch.Generator().manual_seed(7)
    for m in SPEC.names:
        changed = dict(inputs)
        changed[m] = torch.randn(inputs[m].shape, generator=g) * 1e3 + 50
        out = net(changed, mask)
        if combo.contains(m):
            # a present modality's content matters for every sample
            assert ((out - reference).abs().amax(dim=1) > 1e-4).all(), (combo.name, m)
        else:
            torch.testing.assert_close(out, reference, rtol=0, atol=1e-6)
    # even non-finite content of every dropped modality cannot leak through
    poisoned = {m: torch.full_like(v, float("nan")) if not combo.contains(m) else v for m, v in inputs.items()}
    torch.testing.assert_close(net(poisoned, mask), reference, rtol=0, atol=1e-6)


def test_per_sample_masks_are_independent():
    """Each row follows its own mask; other rows' content never matters (no batch mixing)."""
    net = make_net()
    inputs = make_inputs(batch=7)
    mask = torch.stack([c.mask() for c in all_combinations(SPEC)])  # one combination per row
    out = net(inputs, mask)
    for i, combo in enumerate(all_combinations(SPEC)):
        alone = net({m: v[i : i + 1] for m, v in inputs.items()}, combo.mask()[None])
        torch.testing.assert_close(out[i : i + 1], alone, rtol=1e-5, atol=1e-6)
    changed = {m: v.clone() for m, v in inputs.items()}
    changed["a"][0] += 10  # row 0 only
    torch.testing.assert_close(net(changed, mask)[1:], out[1:], rtol=0, atol=1e-6)


def test_encode_is_mask_independent_and_fuse_predict_equals_forward():
    net = make_net()
    inputs = make_inputs()
    features = net.encode(inputs)
    assert len(features) == 1 and features[0].shape == (B, 3, C)
    for combo in all_combinations(SPEC):
        mask = combo.mask().expand(B, -1)
        out = net.forward_all(inputs, mask)
        torch.testing.assert_close(out.features[0], features[0], rtol=0, atol=0)
        torch.testing.assert_close(net.fuse_predict(features, mask).logits, net(inputs, mask), rtol=0, atol=0)
    # modality m's feature depends only on modality m's input
    changed = dict(inputs)
    changed["b"] = inputs["b"] + 1
    new = net.encode(changed)[0]
    torch.testing.assert_close(new[:, [0, 2]], features[0][:, [0, 2]], rtol=0, atol=0)
    assert not torch.allclose(new[:, 1], features[0][:, 1])


def test_every_parameter_gets_a_gradient_even_when_a_modality_is_dropped():
    net = make_net().train()
    mask = full_mask()
    mask[:, 0] = False  # `a` dropped in every sample
    net(make_inputs(), mask).sum().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
    assert all(float(p.grad.abs().sum()) == 0 for p in net.encoders["a"].parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in net.encoders["b"].parameters())


def test_input_errors():
    net = make_net()
    inputs = make_inputs()
    with pytest.raises(ModalityError, match=r"unknown modality 'd'.*\['a', 'b', 'c'\]"):
        net({**inputs, "d": torch.zeros(B, 2)}, full_mask())
    with pytest.raises(ModalityError, match="input for modality 'b' is missing"):
        net({"a": inputs["a"], "c": inputs["c"]}, full_mask())
    with pytest.raises(ModalityError, match=r"present mask shape \(5, 2\) does not match features \(B, M\) = \(5, 3\)"):
        net(inputs, torch.ones(B, 2, dtype=torch.bool))
    with pytest.raises(ModalityError, match=r"mask shape \(4, 3\)"):
        net(inputs, torch.ones(4, 3, dtype=torch.bool))
    mask = full_mask()
    mask[3] = False
    with pytest.raises(ModalityError, match="every modality missing.*batch index 3"):
        net(inputs, mask)
    with pytest.raises(ModalityError, match="BoolTensor"):
        net(inputs, torch.ones(B, 3))


def test_construction_errors():
    encoders = make_net().encoders
    fusion = build_fusion("concat", 3, C, K, spatial=False)
    head = ClassificationHead(3 * C, K)
    with pytest.raises(ModalityError, match=r"no encoder for modalities \['c'\]"):
        MultimodalNet(SPEC, nn.ModuleDict({"a": encoders["a"], "b": encoders["b"]}), fusion, head)
    with pytest.raises(ModalityError, match="encoder section for unknown modality 'rgb'"):
        build_network(SPEC, SHAPES, K, encoders={"rgb": "mlp"})
    with pytest.raises(ModalityError, match=r"no input shape for modalities \['c'\]"):
        build_network(SPEC, {"a": (6,), "b": (5,)}, K)


def test_new_head_same_architecture_different_weights():
    net = make_net()
    head = net.new_head()
    assert type(head) is type(net.head)
    assert repr(head) == repr(net.head)
    old = dict(net.head.named_parameters())
    new = dict(head.named_parameters())
    assert old.keys() == new.keys()
    for name, param in new.items():
        assert param.shape == old[name].shape
        assert param.data_ptr() != old[name].data_ptr()
        assert not torch.equal(param, old[name]), name
    fused = torch.randn(B, 3 * C)
    assert head([fused]).logits.shape == (B, K)
    before = net.head.classifier.weight.clone()
    with torch.no_grad():
        head.classifier.weight.add_(1.0)
    assert torch.equal(net.head.classifier.weight, before)


class RecordingEncoder(Encoder):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(size, C)
        self.seen: list[torch.Tensor | None] = []
        self.feature_info = [FeatureInfo(C, None)]

    def forward(self, x, lengths=None):
        self.seen.append(lengths)
        return [self.proj(x)]


def test_lengths_keys_reach_their_encoders():
    assert lengths_key("b") == "lengths_b"
    encoders = nn.ModuleDict({m: RecordingEncoder(s[0]) for m, s in SHAPES.items()})
    net = MultimodalNet(SPEC, encoders, build_fusion("concat", 3, C, K, spatial=False), ClassificationHead(3 * C, K))
    lengths = torch.tensor([1, 2, 3, 4, 5])
    net({**make_inputs(), "lengths_b": lengths}, full_mask())
    assert encoders["a"].seen == [None] and encoders["c"].seen == [None]
    assert encoders["b"].seen[0] is lengths


def test_sequence_modality_lengths_mask_the_padding():
    spec = ModalitySpec(("img", "audio"))
    torch.manual_seed(0)
    net = build_network(spec, {"img": (6,), "audio": (9, 4)}, K, channels=C).eval()
    assert type(net.encoders["audio"]).__name__ == "GRUEncoder"
    g = torch.Generator().manual_seed(3)
    inputs = {"img": torch.randn(2, 6, generator=g), "audio": torch.randn(2, 9, 4, generator=g)}
    lengths = torch.tensor([5, 9])
    mask = torch.ones(2, 2, dtype=torch.bool)
    reference = net({**inputs, "lengths_audio": lengths}, mask)
    padded = {**inputs, "audio": inputs["audio"].clone()}
    padded["audio"][0, 5:] = 100.0  # beyond sample 0's length
    torch.testing.assert_close(net({**padded, "lengths_audio": lengths}, mask), reference, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(net(padded, mask)[0], reference[0])  # without lengths the padding counts
