"""Per-modality encoders: automatic choice by shape, overrides, and sequence encoders that ignore padding."""

from __future__ import annotations

import pytest
import torch

from mmanet.modality import ModalitySpec
from mmanet.models.encoders import (
    ENCODERS,
    GRUEncoder,
    MLPEncoder,
    SmallCNNEncoder,
    TemporalConvEncoder,
    build_encoder,
    default_encoder_for,
    reverse_valid,
    valid_steps,
)
from mmanet.models.network import build_network
from mmanet.registry import UnknownKeyError

B, T, F, C = 5, 12, 4, 8


def last(encoder, *args):
    """The encoder's last (here: only, global) pyramid level."""
    return encoder(*args)[-1]
SHAPES = {"vec": (6,), "seq": (T, F), "img": (1, 8, 8)}


def seq_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, F, generator=g), torch.tensor([12, 1, 5, 7, 3])


def test_default_encoder_by_per_sample_shape():
    assert default_encoder_for((6,)) == "mlp"
    assert default_encoder_for((T, F)) == "gru"
    assert default_encoder_for((3, 8, 8)) == "cnn"
    with pytest.raises(ValueError, match=r"\(F,\), \(T, F\) or \(C, H, W\)"):
        default_encoder_for((1, 2, 3, 4))
    assert {"mlp", "gru", "cnn", "tcn"} <= set(ENCODERS.keys())


def test_build_network_chooses_automatically_and_honours_overrides():
    spec = ModalitySpec(("vec", "seq", "img"))
    net = build_network(spec, SHAPES, 3, channels=C)
    assert isinstance(net.encoders["vec"], MLPEncoder)
    assert isinstance(net.encoders["seq"], GRUEncoder)
    assert isinstance(net.encoders["img"], SmallCNNEncoder)
    net = build_network(spec, SHAPES, 3, channels=C, encoders={"seq": "tcn"})
    assert isinstance(net.encoders["seq"], TemporalConvEncoder) and isinstance(net.encoders["vec"], MLPEncoder)
    x, lengths = seq_batch()
    inputs = {"vec": torch.randn(B, 6), "seq": x, "lengths_seq": lengths, "img": torch.randn(B, 1, 8, 8)}
    assert net(inputs, torch.ones(B, 3, dtype=torch.bool)).shape == (B, 3)
    with pytest.raises(UnknownKeyError, match="tcn"):
        build_network(spec, SHAPES, 3, encoders={"seq": "lstm"})


def test_config_encoders_override_reaches_the_network():
    from mmanet.config import resolve_run_config
    from mmanet.models.factory import build_net
    from mmanet.training.module import TaskInfo

    config = resolve_run_config({"model": {"channels": C, "encoder": {"hidden": 16}, "encoders": {"seq": "tcn"}}})
    info = TaskInfo(ModalitySpec(("vec", "seq", "img")), 3, SHAPES)
    net = build_net(config, info)
    assert isinstance(net.encoders["seq"], TemporalConvEncoder)
    assert isinstance(net.encoders["img"], SmallCNNEncoder)


@pytest.mark.parametrize(("name", "shape"), [("mlp", (6,)), ("gru", (T, F)), ("tcn", (T, F)), ("cnn", (1, 8, 8))])
def test_output_shape_and_every_parameter_gets_a_gradient(name, shape):
    torch.manual_seed(0)
    encoder = build_encoder(name, shape, C, hidden=16)
    x = torch.randn(B, *shape)
    lengths = torch.tensor([T, 1, 5, 7, 3]) if len(shape) == 2 else None
    out = last(encoder, x, lengths)
    assert out.shape == (B, C)
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


@pytest.mark.parametrize("name", ["gru", "tcn"])
def test_sequence_encoders_ignore_padding_content_and_padded_length(name):
    torch.manual_seed(0)
    encoder = build_encoder(name, (T, F), C, hidden=16).eval()
    x, lengths = seq_batch()
    reference = last(encoder, x, lengths)
    garbage = x.clone()
    beyond = torch.arange(T)[None, :] >= lengths[:, None]
    garbage[beyond] = torch.randn(int(beyond.sum()), F) * 1e3
    assert torch.allclose(last(encoder, garbage, lengths), reference, atol=1e-5)
    garbage[beyond] = float("nan")
    assert torch.allclose(last(encoder, garbage, lengths), reference, atol=1e-5)
    # each sample alone and unpadded gives the same feature as inside the padded batch
    for i, n in enumerate(lengths.tolist()):
        alone = last(encoder, x[i : i + 1, :n], None)
        assert torch.allclose(alone, reference[i : i + 1], atol=1e-5), (name, i)
    # more padding (a longer T) changes nothing either
    longer = torch.cat([x, torch.randn(B, 7, F)], dim=1)
    assert torch.allclose(last(encoder, longer, lengths), reference, atol=1e-5)
    # no lengths = every step valid
    full = torch.full((B,), T)
    assert torch.allclose(last(encoder, x, None), last(encoder, x, full), atol=1e-6)


def test_gru_is_bidirectional():
    """The feature depends on the order of the steps (not a bag of steps) in both directions."""
    torch.manual_seed(0)
    encoder = build_encoder("gru", (T, F), C, hidden=16).eval()
    x, lengths = seq_batch()
    valid = valid_steps(x, lengths)
    flipped = reverse_valid(x, valid)
    assert torch.equal(reverse_valid(flipped, valid), x)
    assert torch.equal(flipped[0], x[0].flip(0)) and torch.equal(flipped[1], x[1])
    assert torch.equal(flipped[2, :5], x[2, :5].flip(0)) and torch.equal(flipped[2, 5:], x[2, 5:])
    # reversing the sequence swaps the roles of the two GRUs: swapping their weights undoes it
    swapped = build_encoder("gru", (T, F), C, hidden=16).eval()
    swapped.forward_gru.load_state_dict(encoder.backward_gru.state_dict())
    swapped.backward_gru.load_state_dict(encoder.forward_gru.state_dict())
    w = encoder.proj[1].weight.data
    swapped.proj[1].weight.data = torch.cat([w[:, 16:], w[:, :16]], dim=1)
    swapped.proj[1].bias.data = encoder.proj[1].bias.data.clone()
    assert torch.allclose(last(swapped, flipped, lengths), last(encoder, x, lengths), atol=1e-5)
    assert not torch.allclose(last(encoder, flipped, lengths), last(encoder, x, lengths), atol=1e-3)


def test_zero_length_of_a_missing_sample_gives_a_finite_feature():
    torch.manual_seed(0)
    x, _ = seq_batch()
    for name in ("gru", "tcn"):
        encoder = build_encoder(name, (T, F), C, hidden=16)
        assert torch.isfinite(last(encoder, x, torch.zeros(B, dtype=torch.long))).all()


def test_tcn_options_and_shape_errors():
    encoder = TemporalConvEncoder((T, F), C, hidden=16, kernel_size=5, num_layers=2)
    assert last(encoder, torch.randn(2, T, F)).shape == (2, C)
    with pytest.raises(ValueError, match="odd"):
        TemporalConvEncoder((T, F), C, kernel_size=4)
    for cls in (TemporalConvEncoder, GRUEncoder):
        with pytest.raises(ValueError, match=r"\(T, F\)"):
            cls((6,), C)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        SmallCNNEncoder((T, F), C)
