"""The supervised recipes: SF (one model per combination), the unified baselines (SF-MD and the
mask-aware fusions), ESANet and ESANet-MD for RGB-D segmentation, and the teacher (complete modalities).

They share :class:`~mmanet.methods.base.Method`'s loss (``L_task`` + deep supervision + the fusion's
auxiliary losses); what differs is the plan, the training mask and the evaluated combinations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import Tensor

from mmanet.data.base import MultimodalDataset, complete_part
from mmanet.methods.base import Method, register_method
from mmanet.modality import Combination, ModalitySpec

if TYPE_CHECKING:
    from mmanet.config import RunConfig
    from mmanet.data import DataBundle

def fusion_preset(name: str) -> dict[str, Any]:
    """The preset of a method that stands for fusion ``name``. A section, not the name alone, so that a config
    giving only the fusion's options (``model.fusion: {hard_warmup: 50}``) keeps the method's fusion."""
    return {"model": {"fusion": {"type": name}}}


#: ESANet (Seichter et al. 2021): ResNet encoders per modality, SE-add fusion at every stage, the ESANet decoder
ESANET_MODEL: dict[str, Any] = {
    "fusion": {"type": "se_add"},
    "channels": None,
    "encoder": {"type": "resnet"},
    "head": {"type": "esanet_decoder"},
}


@register_method("sf_md", fusion_preset("concat"), "SF network, modality dropout (the unified baseline)")
@register_method("hemis", fusion_preset("hemis"), "HeMIS: mean/variance fusion of the present modalities")
@register_method("lcr", fusion_preset("lcr"), "LCR: latent correlation representation + attention fusion")
@register_method("rfnet", fusion_preset("rfnet"), "RFNet: region-aware fusion with per-modality heads")
@register_method("mmformer", fusion_preset("mmformer"), "mmFormer: intra-/inter-modal transformer fusion")
@register_method("shaspec", fusion_preset("shaspec"), "ShaSpec: shared and specific features")
@register_method("dmrnet", fusion_preset("dmrnet"), "DMRNet: probabilistic fusion, hard-combination term")
@register_method("flexmoe", fusion_preset("flexmoe"), "Flex-MoE: missing-modality bank, combination experts")
@register_method("esanet_md", {"model": ESANET_MODEL}, "ESANet trained with modality dropout (segmentation)")
class Unified(Method):
    """One model for every combination: modality dropout, ``L_task`` (+ the fusion's auxiliary losses)."""

    stage = "unified"
    plan = "single"


@register_method("sf", fusion_preset("concat"), "one SF model per combination (customized)")
@register_method("esanet", {"model": ESANET_MODEL}, "one ESANet model per combination (segmentation)")
class Customized(Method):
    """One model per combination ("SF"): each is trained and evaluated on its own combination."""

    stage = "customized"
    plan = "per_combination"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.combination is None:
            raise ValueError("a customized model needs its combination")

    def training_mask(self, present: Tensor, dropout: Callable[[Tensor], Tensor]) -> Tensor:
        assert self.combination is not None  # checked in __init__
        return present & self.combination.mask(present.device)

    @classmethod
    def eval_combinations(cls, spec: ModalitySpec, combination: Combination | None = None) -> list[Combination]:
        if combination is None:
            raise ValueError("a customized model is evaluated on its own combination; none was given")
        return [combination]


@register_method("teacher", fusion_preset("concat"), "the teacher alone: complete modalities")
class Teacher(Method):
    """The teacher stage (docs/design.md §4.3): every sample under its data's own (complete) modalities, validated
    on the full combination. Which samples it trains on is ``teacher.samples`` (the runner's split)."""

    stage = "teacher"
    plan = "single"

    @classmethod
    def training_split(cls, bundle: DataBundle, config: RunConfig) -> MultimodalDataset:
        """The labelled part, and of it the complete samples only with ``teacher.samples: complete``."""
        split = super().training_split(bundle, config)
        return complete_part(split, "the teacher") if config.teacher.samples == "complete" else split

    def training_mask(self, present: Tensor, dropout: Callable[[Tensor], Tensor]) -> Tensor:
        return present

    @classmethod
    def eval_combinations(cls, spec: ModalitySpec, combination: Combination | None = None) -> list[Combination]:
        return [spec.full]
