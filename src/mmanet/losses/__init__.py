"""Training losses of the method: MAD (DESIGN §4.1) and MAR (DESIGN §4.2)."""

from mmanet.losses.mad import VARIANTS, MADLoss, entropy_weights, mad_loss, sp_loss
from mmanet.losses.mar import (
    FixedWeakSet,
    MARLoss,
    WeakCombinationMiner,
    combination_membership,
    kl_discrepancy,
    mar_loss,
    prediction_distribution,
    single_modality_weak_set,
)

__all__ = [
    "VARIANTS",
    "FixedWeakSet",
    "MADLoss",
    "MARLoss",
    "WeakCombinationMiner",
    "combination_membership",
    "entropy_weights",
    "kl_discrepancy",
    "mad_loss",
    "mar_loss",
    "prediction_distribution",
    "single_modality_weak_set",
    "sp_loss",
]
