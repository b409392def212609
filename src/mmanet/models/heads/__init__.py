"""Prediction heads, registered by name in :data:`HEADS` (contract: :mod:`mmanet.models.heads.base`)."""

from mmanet.models.heads import classification, segmentation  # noqa: F401  (register the heads)
from mmanet.models.heads.base import HEADS, Head, HeadOutput, register_head
from mmanet.models.heads.classification import ClassificationHead
from mmanet.models.heads.segmentation import SegmentationHead

__all__ = ["HEADS", "ClassificationHead", "Head", "HeadOutput", "SegmentationHead", "register_head"]
