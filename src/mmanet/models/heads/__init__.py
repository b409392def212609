"""Prediction heads, registered by name in :data:`HEADS` (contract: :mod:`mmanet.models.heads.base`)."""

from mmanet.models.heads import classification, esanet, resnet_trunk, segmentation  # noqa: F401  (register)
from mmanet.models.heads.base import HEADS, Head, HeadOutput, register_head
from mmanet.models.heads.classification import ClassificationHead
from mmanet.models.heads.esanet import ESANetDecoderHead
from mmanet.models.heads.resnet_trunk import ResNetTrunkHead
from mmanet.models.heads.segmentation import SegmentationHead

__all__ = [
    "HEADS",
    "ClassificationHead",
    "ESANetDecoderHead",
    "Head",
    "HeadOutput",
    "ResNetTrunkHead",
    "SegmentationHead",
    "register_head",
]
