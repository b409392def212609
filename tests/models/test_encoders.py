"""Per-modality encoders: automatic choice by shape, overrides, sequence encoders that ignore padding,
and the ResNet-18/34/50 pyramid encoder (levels, torchvision weights, the ESANet decoder on ResNet-50)."""

from __future__ import annotations

import pytest
import torch
from test_backbones import fabricated_state_dict

from mmanet.modality import ModalitySpec
from mmanet.models.backbones import BasicBlock, Bottleneck, StateDictMismatchError
from mmanet.models.builder import build_network
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


# --------------------------------------------------------------------------------------------
# The ResNet pyramid encoder (ESANet's): depths 18 / 34 / 50
# --------------------------------------------------------------------------------------------


def rgbd_info(size: int):
    from mmanet.task import TaskInfo

    spec = ModalitySpec(("rgb", "depth"))
    shapes = {"rgb": (3, size, size), "depth": (1, size, size)}
    return TaskInfo(spec, 5, shapes, task="segmentation", ignore_index=255)


def esanet_r50_config(**model):
    from mmanet.config import resolve_run_config

    section = {
        "width": 4,
        "channels": None,
        "encoder": {"type": "resnet", "depth": 50},
        "head": {"type": "esanet_decoder"},
        "fusion": "se_add",
        "dropout": 0.0,
    }
    return resolve_run_config({"model": section | model})


@pytest.mark.parametrize(("depth", "expansion"), [(18, 1), (34, 1), (50, 4)])
@pytest.mark.parametrize("width", [4, 8])
def test_resnet_encoder_declares_and_returns_its_levels(depth, expansion, width):
    torch.manual_seed(0)
    encoder = build_encoder("resnet", (3, 50, 66), None, width=width, depth=depth)
    channels = [expansion * width * k for k in (1, 2, 4, 8)]
    assert [(f.channels, f.stride) for f in encoder.feature_info] == list(zip(channels, (4, 8, 16, 32), strict=True))
    assert not encoder.row_independent  # BatchNorm: the network runs it on present rows only
    assert all(type(block) is (Bottleneck if depth == 50 else BasicBlock) for block in encoder.layer3)
    levels = encoder(torch.randn(2, 3, 50, 66))
    assert [tuple(level.shape) for level in levels] == [
        (2, channels[0], 13, 17),  # ceil(ceil(n / 2) / 2)
        (2, channels[1], 7, 9),
        (2, channels[2], 4, 5),
        (2, channels[3], 2, 3),
    ]


def test_resnet50_encoder_projection_and_depth_errors():
    encoder = build_encoder("resnet", (1, 32, 32), 24, width=4, depth=50)
    assert [f.channels for f in encoder.feature_info] == [16, 32, 64, 24]
    assert encoder(torch.randn(2, 1, 32, 32))[-1].shape == (2, 24, 1, 1)
    with pytest.raises(ValueError, match=r"\[18, 34, 50\]"):
        build_encoder("resnet", (3, 32, 32), None, depth=101)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_resnet50_torchvision_file_loads_through_model_pretrained(tmp_path, suffix):
    """``model.pretrained`` with a torchvision-format ResNet-50 file fills both encoders of a
    ``depth: 50`` RGB-D network, the depth encoder's 1-channel conv1 with the summed RGB kernel."""
    from mmanet.models.backbones import load_state_dict_file
    from mmanet.models.factory import build_net

    state = fabricated_state_dict(width=4, seed=7, depth=50)
    path = tmp_path / f"resnet50{suffix}"
    if suffix == ".safetensors":
        safetensors_torch = pytest.importorskip("safetensors.torch")
        safetensors_torch.save_file(state, str(path))
    else:
        torch.save(state, path)
    assert set(load_state_dict_file(path)) == set(state)
    net = build_net(esanet_r50_config(width=4, pretrained=str(path)), rgbd_info(32))
    for m in ("rgb", "depth"):
        enc = net.encoders[m]
        torch.testing.assert_close(enc.layer1[0].conv3.weight, state["layer1.0.conv3.weight"])
        torch.testing.assert_close(enc.layer1[0].downsample[0].weight, state["layer1.0.downsample.0.weight"])
        torch.testing.assert_close(enc.layer3[5].bn3.running_var, state["layer3.5.bn3.running_var"])
        torch.testing.assert_close(enc.layer4[2].conv2.weight, state["layer4.2.conv2.weight"])
        torch.testing.assert_close(enc.stem.bn1.running_mean, state["bn1.running_mean"])
    torch.testing.assert_close(net.encoders["rgb"].stem.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(net.encoders["depth"].stem.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    summary = net.encoders["depth"].load_torchvision(state)
    assert summary.ok and summary.adapted == ("stem.conv1.weight",) and len(summary.loaded) == len(state) - 2


def test_wrong_depth_file_into_resnet_encoder_is_a_clear_error(tmp_path):
    from mmanet.models.factory import build_net

    r50 = build_encoder("resnet", (3, 32, 32), None, width=8, depth=50)
    before = r50.layer1[0].conv1.weight.detach().clone()
    r18_state = fabricated_state_dict(width=8, depth=18)
    with pytest.raises(StateDictMismatchError, match=r"ResNet-18 but this encoder is a ResNet-50") as err:
        r50.load_torchvision(r18_state)
    assert "layer1.0.conv3.weight" in err.value.missing and "missing" in str(err.value)
    torch.testing.assert_close(r50.layer1[0].conv1.weight, before)  # nothing was loaded
    r18 = build_encoder("resnet", (3, 32, 32), None, width=8, depth=18)
    with pytest.raises(StateDictMismatchError, match=r"ResNet-50 but this encoder is a ResNet-18"):
        r18.load_torchvision(fabricated_state_dict(width=8, depth=50))
    # the right depth at the wrong width: the shapes are listed, no depth hint
    with pytest.raises(StateDictMismatchError, match=r"shape mismatch.*conv1\.weight") as err:
        r50.load_torchvision(fabricated_state_dict(width=4, depth=50))
    assert err.value.hint is None
    # the same through the config, as a run would meet it: a configuration error naming model.pretrained
    from mmanet.config import ConfigError

    path = tmp_path / "resnet18.pth"
    torch.save(r18_state, path)
    with pytest.raises(ConfigError, match=r"model\.pretrained=.*resnet18\.pth does not fit .*encoder\.depth: 50"):
        build_net(esanet_r50_config(width=8, pretrained=str(path)), rgbd_info(32))


def test_esanet_decoder_runs_on_the_resnet50_encoder_through_build_net():
    """The config path (``model.encoder: {type: resnet, depth: 50}``, ``model.width: 4``): two
    bottleneck encoders, SE-add fusion at each level, the ESANet decoder, then a backward pass —
    batch 2 at 32×32 with both modalities, and at 64×64 with a weak row (depth missing), where the
    depth encoder sees one row (its 1/32 map is 2×2: BatchNorm still has four values a channel)."""
    from mmanet.models.encoders.resnet import ResNetEncoder
    from mmanet.models.factory import build_net

    torch.manual_seed(0)
    net = build_net(esanet_r50_config(), rgbd_info(32))
    for m in ("rgb", "depth"):
        enc = net.encoders[m]
        assert isinstance(enc, ResNetEncoder) and enc.depth == 50
        assert [(f.channels, f.stride) for f in enc.feature_info] == [(16, 4), (32, 8), (64, 16), (128, 32)]
    full, weak_row = torch.ones(2, 2, dtype=torch.bool), torch.tensor([[True, True], [True, False]])
    for size, mask in ((32, full), (64, weak_row)):
        inputs = {"rgb": torch.randn(2, 3, size, size), "depth": torch.randn(2, 1, size, size)}
        target = torch.randint(0, 5, (2, size, size))
        net.zero_grad()
        out = net.train().forward_all(inputs, mask)
        n = size // 32  # side of the 1/32 map
        assert [tuple(f.shape) for f in out.fused] == [  # the fused pyramid the head reads
            (2, 16, 8 * n, 8 * n),
            (2, 32, 4 * n, 4 * n),
            (2, 64, 2 * n, 2 * n),
            (2, 128, n, n),
        ]
        assert out.logits.shape == (2, 5, size, size) and torch.isfinite(out.logits).all()
        assert [tuple(a.shape[-2:]) for a in out.aux_logits] == [(n, n), (2 * n, 2 * n), (4 * n, 4 * n)]
        loss = torch.nn.functional.cross_entropy(out.logits, target)
        loss = loss + sum(a.square().mean() for a in out.aux_logits)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None for p in net.head.parameters())
        assert all(p.grad is not None for p in net.encoders["rgb"].parameters())
        stem_grad = net.encoders["depth"].stem.conv1.weight.grad
        assert stem_grad is not None and stem_grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        inputs = {"rgb": torch.randn(2, 3, 32, 32), "depth": torch.randn(2, 1, 32, 32)}
        assert net(inputs, torch.tensor([[True, False], [False, True]])).shape == (2, 5, 32, 32)
