"""The ESANet decoder head: its named features (what per-pixel MAD distils) and its decoder widths."""

from __future__ import annotations

import pytest
import torch

from mmanet.models.encoders.base import FeatureInfo
from mmanet.models.heads.esanet import ESANetDecoderHead


def pyramid(channels=(16, 32, 64, 128)) -> list[FeatureInfo]:
    return [FeatureInfo(c, s) for c, s in zip(channels, (4, 8, 16, 32), strict=True)]


def maps(channels=(16, 32, 64, 128), b: int = 2, size: int = 64) -> list[torch.Tensor]:
    return [torch.randn(b, c, size // s, size // s) for c, s in zip(channels, (4, 8, 16, 32), strict=True)]


def test_named_features_are_the_encoder_side_maps_and_the_decoder_output():
    head = ESANetDecoderHead(pyramid(), num_classes=5).train()
    out = head(maps())
    shapes = {name: tuple(f.shape) for name, f in out.features.items()}
    assert list(out.features) == ["context", "skip16", "skip8", "skip4", "decoder"] == list(head.feature_names)
    assert shapes == {
        "context": (2, 128, 2, 2),  # the context module at 1/32
        "skip16": (2, 64, 4, 4),  # each fused encoder map through its skip adapter
        "skip8": (2, 32, 8, 8),
        "skip4": (2, 16, 16, 16),
        "decoder": (2, 16, 16, 16),  # the last decoder module at 1/4
    }
    assert out.logits.shape == (2, 5, 64, 64) and len(out.aux_logits) == 3
    # skip16 is the adapter's output on the 1/16 fused map, the very tensor the first decoder adds in
    fused = maps()
    torch.testing.assert_close(head.eval()(fused).features["skip16"], head.skips[0](fused[2]))


@pytest.mark.parametrize(("option", "widths"), [("esanet", (64, 32, 16)), ([24, 12, 6], (24, 12, 6))])
def test_decoder_channels_project_the_skips_to_the_decoder_widths(option, widths):
    channels = (32, 64, 128, 256)  # a bottleneck (ResNet-50) pyramid at width 8
    head = ESANetDecoderHead(pyramid(channels), num_classes=3, decoder_channels=option, width=8).eval()
    out = head(maps(channels))
    assert out.features["context"].shape[1] == widths[0]
    assert [out.features[n].shape[1] for n in ("skip16", "skip8", "skip4")] == list(widths)
    assert out.features["decoder"].shape[1] == widths[2] and out.logits.shape == (2, 3, 64, 64)


def test_without_decoder_channels_the_decoder_follows_the_skip_widths():
    head = ESANetDecoderHead(pyramid(), num_classes=3)
    assert [s.conv.in_channels for s in head.skips] == [s.conv.out_channels for s in head.skips] == [64, 32, 16]
    assert head.context.out_channels == 128


def test_esanet_widths_keep_a_resnet50_decoder_small():
    """At width 64 a ResNet-50 pyramid (256…2048) would give a decoder of skip widths; ESANet's 512/256/128
    keeps it at about a quarter (measured at 40 classes, 3 blocks: 88.4 M → 23.3 M parameters, most of the
    rest in the context module on the 2048-channel map)."""
    channels = (256, 512, 1024, 2048)
    own = ESANetDecoderHead(pyramid(channels), num_classes=40, blocks=3)
    esanet = ESANetDecoderHead(pyramid(channels), num_classes=40, blocks=3, decoder_channels="esanet", width=64)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(esanet) < count(own) / 3


def test_bad_decoder_channels_are_errors():
    with pytest.raises(ValueError, match="three positive widths"):
        ESANetDecoderHead(pyramid(), num_classes=3, decoder_channels=[8, 4])
    with pytest.raises(ValueError, match="'esanet' or null"):
        ESANetDecoderHead(pyramid(), num_classes=3, decoder_channels="wide")
