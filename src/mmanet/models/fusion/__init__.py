"""Mask-aware fusion modules, one per file, registered by name in :data:`FUSIONS`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# register the fusions
from mmanet.models.fusion import concat, dmrnet, flexmoe, hemis, lcr, mmformer, rfnet, se_add, shaspec  # noqa: F401
from mmanet.models.fusion.base import (
    FUSIONS,
    Fusion,
    FusionOutput,
    fusion_options,
    grouped_uniform_,
    mask_like,
    register_fusion,
    zero_missing,
)

__all__ = [
    "FUSIONS",
    "Fusion",
    "FusionOutput",
    "build_fusion",
    "fusion_options",
    "grouped_uniform_",
    "mask_like",
    "register_fusion",
    "zero_missing",
]


def build_fusion(
    name: str, num_modalities: int, channels: int, num_classes: int, spatial: bool, **options: Any
) -> Fusion:
    """The registered fusion ``name`` with its ``options``; an unknown option is a ValueError naming the valid ones."""
    check_fusion_options(name, options)
    return FUSIONS.get(name)(num_modalities, channels, num_classes, spatial, **options)


def check_fusion_options(name: str, options: Mapping[str, Any]) -> None:
    """A ValueError listing the valid options when ``options`` holds one that fusion ``name`` does not take."""
    valid = fusion_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"fusion {name!r} has no option(s) {unknown}; valid: {valid}")
