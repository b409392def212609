"""The encoder contract (docs/design.md §2): one modality's input → a feature pyramid with declared levels.

Every registered encoder

* is built as ``Encoder(input_shape, out_channels, **options)`` from its own config section
  (``model.encoder`` / ``model.encoders.<modality>``), where ``out_channels`` is the width of
  its LAST level (the network's common channel count ``model.channels``);
* declares, before any forward, :attr:`Encoder.feature_info`: one :class:`FeatureInfo`
  (channels, stride) per level, from fine to coarse. ``stride`` is the input-to-level
  reduction of a feature map; ``stride=None`` marks a *global* level — a vector ``(B, C)``
  (MLP and sequence encoders have exactly one, pooled image encoders end with one);
* returns ``forward(x, lengths=None) -> list[Tensor]``, one tensor per declared level:
  ``(B, C_l)`` for a global level, ``(B, C_l, H / s_l, W / s_l)`` for a map.

Encoders never see the present mask. An encoder whose output for one row depends on other
rows in training mode (BatchNorm) declares ``row_independent = False``; the network then runs
it on the rows whose modality is present only (:meth:`~mmanet.models.MultimodalNet.encode`),
so missing-modality rows never influence the output of present rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from mmanet.registry import Registry


@dataclass(frozen=True)
class FeatureInfo:
    """One pyramid level: ``channels`` and ``stride`` (``None``: a global feature vector)."""

    channels: int
    stride: int | None

    @property
    def is_global(self) -> bool:
        return self.stride is None


class Encoder(nn.Module):
    """Base class of every registered encoder (see the module docstring for the contract)."""

    feature_info: list[FeatureInfo]
    #: False when a row's output depends on other rows in training mode (BatchNorm)
    row_independent: bool = True

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> list[Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def out_channels(self) -> int:
        return self.feature_info[-1].channels


ENCODERS: Registry[type[Encoder]] = Registry("encoder")
register_encoder = ENCODERS.register


def has_batch_statistics(module: nn.Module) -> bool:
    """True when ``module`` holds a BatchNorm layer (its training-mode output mixes rows)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def default_encoder_for(input_shape: Sequence[int]) -> str:
    """Encoder chosen from the per-sample shape: (F,) → mlp, (T, F) → gru, (C, H, W) → cnn."""
    rank = len(input_shape)
    if rank == 1:
        return "mlp"
    if rank == 2:
        return "gru"
    if rank == 3:
        return "cnn"
    raise ValueError(
        f"no default encoder for per-sample shape {tuple(input_shape)}; expected (F,), (T, F) or (C, H, W)"
    )


def encoder_options(name: str) -> list[str]:
    """The option names the encoder ``name`` accepts from its config section."""
    params = inspect.signature(ENCODERS.get(name).__init__).parameters
    return [p for p in params if p not in ("self", "input_shape", "out_channels")]


def build_encoder(name: str, input_shape: Sequence[int], out_channels: int | None, **options) -> Encoder:
    """Build encoder ``name``; an unknown option is a ``ValueError`` listing the valid ones.

    ``out_channels=None`` keeps the encoder's natural width where it has one (e.g. ``sf_resnet``).
    """
    cls = ENCODERS.get(name)
    if out_channels is None and inspect.signature(cls.__init__).parameters["out_channels"].default is inspect._empty:
        raise ValueError(f"encoder {name!r} needs model.channels (its output width)")
    valid = encoder_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"encoder {name!r} has no option(s) {unknown}; valid options: {valid}")
    encoder = cls(input_shape, out_channels, **options)
    if not getattr(encoder, "feature_info", None):
        raise TypeError(f"encoder {name!r} does not declare its feature_info")
    if has_batch_statistics(encoder):
        encoder.row_independent = False
    return encoder
