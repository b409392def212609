"""Backbone building blocks in plain ``torch.nn`` (no torchvision/timm): ResNet-18/34/50 pieces with
torchvision-compatible names (:mod:`.resnet`), loading torchvision-format weights into them
(:mod:`.torchvision_weights`), and ESANet decoder/context pieces (:mod:`.esanet`)."""

from mmanet.models.backbones.esanet import (
    ConvBNReLU,
    DecoderModule,
    LearnedUpsample,
    NonBottleneck1D,
    PyramidPoolingContext,
    SkipAdapter,
    adaptive_avg_pool2d,
    resize_bilinear,
)
from mmanet.models.backbones.resnet import (
    RESNET_BLOCKS,
    RESNET_LAYERS,
    BasicBlock,
    Bottleneck,
    SqueezeExcitation,
    init_resnet_weights,
    make_layer,
    resnet_layers,
    resnet_stem,
    resnet_widths,
)
from mmanet.models.backbones.torchvision_weights import (
    TORCHVISION_PREFIX_MAP,
    LoadSummary,
    StateDictMismatchError,
    load_state_dict_file,
    load_torchvision_resnet,
    torchvision_resnet_depth,
)

__all__ = [
    "RESNET_BLOCKS",
    "RESNET_LAYERS",
    "TORCHVISION_PREFIX_MAP",
    "BasicBlock",
    "Bottleneck",
    "ConvBNReLU",
    "DecoderModule",
    "LearnedUpsample",
    "LoadSummary",
    "NonBottleneck1D",
    "PyramidPoolingContext",
    "SkipAdapter",
    "SqueezeExcitation",
    "StateDictMismatchError",
    "adaptive_avg_pool2d",
    "init_resnet_weights",
    "load_state_dict_file",
    "load_torchvision_resnet",
    "make_layer",
    "resize_bilinear",
    "resnet_layers",
    "resnet_stem",
    "resnet_widths",
    "torchvision_resnet_depth",
]
