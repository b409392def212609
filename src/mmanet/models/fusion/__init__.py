"""Mask-aware fusion modules, one per file, registered by name in :data:`FUSIONS`."""

# register the fusions
from mmanet.models.fusion import concat, dmrnet, hemis, lcr, mmformer, rfnet, se_add, shaspec  # noqa: F401
from mmanet.models.fusion.base import FUSIONS, Fusion, mask_like, register_fusion

__all__ = ["FUSIONS", "Fusion", "build_fusion", "mask_like", "register_fusion"]


def build_fusion(name: str, num_modalities: int, channels: int, num_classes: int, spatial: bool) -> Fusion:
    return FUSIONS.get(name)(num_modalities, channels, num_classes, spatial)
