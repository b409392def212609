"""ESANet's decoder as a head over the fused RGB-D pyramid (Seichter et al., ICRA 2021; docs/baselines.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.models.backbones import DecoderModule, PyramidPoolingContext, SkipAdapter
from mmanet.models.encoders.base import FeatureInfo
from mmanet.models.heads.base import Head, HeadOutput, register_head


@register_head("esanet_decoder")
class ESANetDecoderHead(Head):
    """Fused maps at 1/4, 1/8, 1/16, 1/32 → context module → 3 decoder modules with skips → logits.

    * Context: pyramid pooling (bins 1 and 5) on the 1/32 map.
    * Decoder module i: 3×3 conv-BN-ReLU, ``blocks`` NonBottleneck-1D blocks, learned ×2 upsampling,
      plus the fused skip at the next finer scale through a 1×1 conv-BN-ReLU adapter.
    * Output: 1×1 conv to the classes at 1/4, bilinear ×4 to the input size.
    * Training only: side outputs (1×1 conv) on each decoder module's features before its
      upsampling — at 1/32, 1/16, 1/8 — supervised with the same loss (multi-scale supervision).

    Named features (what per-pixel MAD may distil, besides the fused 1/32 map ``"fused"``):

    * ``"context"``: the context module's output at 1/32;
    * ``"skip16"``, ``"skip8"``, ``"skip4"``: the fused encoder maps at 1/16, 1/8, 1/4 after their
      skip adapters — the encoder-side maps ESANet adds into the decoder. The MMANet authors distil
      ``context``, ``skip16`` and ``skip8`` (summed; ``mad.feature: [context, skip16, skip8]``);
    * ``"decoder"``: the last decoder module's output at 1/4.

    Decoder widths: ``decoder_channels = [d16, d8, d4]`` — the context module maps the 1/32 map to
    ``d16``, decoder module i outputs ``d_i``, and each skip adapter projects its fused encoder map to
    that width (a ResNet-50 encoder's 1024/512/256 channels → 512/256/128). ``"esanet"``: ESANet's
    ``[8, 4, 2] · width`` (``[512, 256, 128]`` at ``model.width: 64``, smaller with the width of a CPU
    run). ``None`` (default): the decoder follows the skip levels' own widths (``c16, c8, c4``; the
    context module keeps ``c32``) — ESANet's widths for a ResNet-18/34 encoder up to the context.
    """

    levels = "all"
    feature_names = ("context", "skip16", "skip8", "skip4", "decoder")
    task = "segmentation"

    def __init__(
        self,
        fused_info: list[FeatureInfo],
        num_classes: int,
        blocks: int = 1,
        context_bins: Sequence[int] = (1, 5),
        dropout: float = 0.0,
        decoder_channels: Sequence[int] | str | None = None,
        width: int = 64,
    ) -> None:
        super().__init__()
        if len(fused_info) != 4 or any(info.is_global for info in fused_info):
            raise ValueError(
                f"the esanet_decoder head needs four feature-map levels (1/4 … 1/32), got {fused_info}; "
                "use the resnet encoder"
            )
        c4, c8, c16, c32 = (info.channels for info in fused_info)
        widths: tuple[int, ...]
        if decoder_channels is None:
            widths, context_out = (c16, c8, c4), c32
        elif isinstance(decoder_channels, str):
            if decoder_channels != "esanet":
                raise ValueError(f"decoder_channels must be [d16, d8, d4], 'esanet' or null, got {decoder_channels!r}")
            widths = (8 * width, 4 * width, 2 * width)
            context_out = widths[0]
        else:
            widths = tuple(int(c) for c in decoder_channels)
            if len(widths) != 3 or any(c < 1 for c in widths):
                raise ValueError(f"decoder_channels must be three positive widths [d16, d8, d4], got {widths}")
            context_out = widths[0]
        self.context = PyramidPoolingContext(c32, context_out, bins=tuple(context_bins))
        ins = (context_out, *widths[:2])
        self.decoders = nn.ModuleList(DecoderModule(i, o, blocks, dropout) for i, o in zip(ins, widths, strict=True))
        self.skips = nn.ModuleList(SkipAdapter(c, w) for c, w in zip((c16, c8, c4), widths, strict=True))
        self.side = nn.ModuleList(nn.Conv2d(o, num_classes, 1) for o in widths)
        self.classifier = nn.Conv2d(widths[2], num_classes, 1)
        self.stride = int(fused_info[0].stride or 1)  # a map level (checked above): it has a stride
        self.num_classes = num_classes

    def forward(self, fused: list[Tensor]) -> HeadOutput:
        x = self.context(fused[3])
        named = {"context": x}
        skips = (fused[2], fused[1], fused[0])
        side_logits = []
        for name, decoder, adapter, side, skip in zip(
            ("skip16", "skip8", "skip4"), self.decoders, self.skips, self.side, skips, strict=True
        ):
            named[name] = adapter(skip)
            x, before_upsample = cast(DecoderModule, decoder).forward_features(x, named[name])
            if self.training:
                side_logits.append(side(before_upsample))
        named["decoder"] = x
        logits = F.interpolate(self.classifier(x), scale_factor=self.stride, mode="bilinear", align_corners=False)
        return HeadOutput(logits, named, side_logits)
