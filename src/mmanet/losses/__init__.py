"""Training losses of the method: MAD (docs/design.md §4.1), MAR (docs/design.md §4.2) and logit distillation
(KD) — pure functions on tensors (MAR's state and mining pass: :mod:`mmanet.methods.mar`)."""

from mmanet.losses.kd import KDLoss, kd_loss
from mmanet.losses.mad import REDUCTIONS, VARIANTS, MADLoss, entropy_weights, mad_loss, sp_loss
from mmanet.losses.mar import (
    MARLoss,
    combination_membership,
    kl_discrepancy,
    mar_loss,
    mar_loss_official,
    prediction_distribution,
    single_modality_weak_set,
)

__all__ = [
    "REDUCTIONS",
    "VARIANTS",
    "KDLoss",
    "MADLoss",
    "MARLoss",
    "combination_membership",
    "entropy_weights",
    "kd_loss",
    "kl_discrepancy",
    "mad_loss",
    "mar_loss",
    "mar_loss_official",
    "prediction_distribution",
    "single_modality_weak_set",
    "sp_loss",
]
