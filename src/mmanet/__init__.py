"""mmanet: one deployment model for every modality combination (MMANet, CVPR 2023)."""

from mmanet.modality import Combination, ModalityDropout, ModalitySpec, all_combinations

__all__ = ["Combination", "ModalityDropout", "ModalitySpec", "all_combinations", "__version__"]
__version__ = "0.1.0"
