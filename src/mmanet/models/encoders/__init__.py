"""Per-modality encoders (docs/design.md §2): each returns a feature pyramid and declares its levels.

The contract is in :mod:`mmanet.models.encoders.base`; one module per input kind registers
its encoders in :data:`ENCODERS` (``vector``: mlp; ``sequence``: gru, tcn; ``image``: cnn; ``resnet``: sf_resnet).
A new encoder goes in a module here, subclasses :class:`Encoder` and is registered with
``@register_encoder("name")``.
"""

from mmanet.models.encoders import image, resnet, sequence, vector  # noqa: F401  (register the encoders)
from mmanet.models.encoders.base import (
    ENCODERS,
    Encoder,
    FeatureInfo,
    build_encoder,
    default_encoder_for,
    encoder_options,
    has_batch_statistics,
    register_encoder,
)
from mmanet.models.encoders.image import SmallCNNEncoder
from mmanet.models.encoders.resnet import SFResNetEncoder
from mmanet.models.encoders.sequence import GRUEncoder, TemporalConvEncoder, masked_mean, reverse_valid, valid_steps
from mmanet.models.encoders.vector import MLPEncoder

__all__ = [
    "ENCODERS",
    "Encoder",
    "FeatureInfo",
    "GRUEncoder",
    "MLPEncoder",
    "SFResNetEncoder",
    "SmallCNNEncoder",
    "TemporalConvEncoder",
    "build_encoder",
    "default_encoder_for",
    "encoder_options",
    "has_batch_statistics",
    "masked_mean",
    "register_encoder",
    "reverse_valid",
    "valid_steps",
]
