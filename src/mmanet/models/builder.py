"""Build a :class:`~mmanet.models.network.MultimodalNet` from per-sample shapes and the model section.

Resolves each modality's encoder section (the shared default plus its own, strict, options),
plans the fused levels the head needs (:func:`~mmanet.models.network.plan_levels`), builds one
fusion module per fused level and the head with the options it accepts. Option errors name the
component and list the valid options.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, cast

from torch import nn

from mmanet.modality import ModalityError, ModalitySpec
from mmanet.models.encoders import Encoder, FeatureInfo, build_encoder, default_encoder_for, encoder_options
from mmanet.models.fusion import build_fusion
from mmanet.models.heads import HEADS
from mmanet.models.network import MultimodalNet, plan_levels


def _section(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"type": value}
    return dict(value)


def resolve_encoder_section(
    name: str,
    shape: Sequence[int],
    default: Mapping[str, Any],
    override: Mapping[str, Any],
    dropout: float,
    width: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """The encoder type and options of one modality from the default and its own section.

    The default section's options apply where the chosen encoder has them (they are shared
    defaults, e.g. ``hidden``); the modality's own section is strict (an unknown option is an
    error listing the valid ones). ``dropout`` defaults to ``model.dropout``.
    """
    kind = override.get("type", default.get("type", "auto"))
    if kind == "auto":
        kind = default_encoder_for(shape)
    valid = encoder_options(kind)
    options = {k: v for k, v in default.items() if k != "type" and k in valid}
    own = {k: v for k, v in override.items() if k != "type"}
    unknown = sorted(set(own) - set(valid))
    if unknown:
        raise ValueError(f"encoder section of modality {name!r}: {kind!r} has no option(s) {unknown}; valid: {valid}")
    options.update(own)
    if "dropout" in valid:
        options.setdefault("dropout", dropout)
    if width is not None and "width" in valid:
        options.setdefault("width", width)
    return kind, options


def build_network(
    spec: ModalitySpec,
    input_shapes: Mapping[str, Sequence[int]],
    num_classes: int,
    *,
    channels: int | None = 64,
    fusion: str | Mapping[str, Any] = "concat",
    encoder: str | Mapping[str, Any] = "auto",
    encoders: Mapping[str, str | Mapping[str, Any]] | None = None,
    head: str = "classification",
    head_options: Mapping[str, Any] | None = None,
    head_hidden: int = 128,
    dropout: float = 0.1,
    width: int | None = None,
) -> MultimodalNet:
    """Build a :class:`MultimodalNet` from the data's per-sample shapes and the model config.

    ``encoder`` is the default encoder section of every modality (a type name or a mapping
    ``{type: ..., <options>}``), ``encoders`` the per-modality sections; ``fusion`` likewise (its options
    go to the fusion of every fused level; an unknown one is an error listing the valid ones).
    ``channels=None`` lets each encoder keep its natural last-level width; ``width`` goes to every encoder
    and head that take it.
    """
    sections = {k: _section(v) for k, v in (encoders or {}).items()}
    unknown = [m for m in sections if m not in spec.names]
    if unknown:
        raise ModalityError(f"encoder section for unknown modality {unknown[0]!r}; the data has {list(spec.names)}")
    no_shape = [m for m in spec.names if m not in input_shapes]
    if no_shape:
        raise ModalityError(f"no input shape for modalities {no_shape}; shapes given for {sorted(input_shapes)}")
    default = _section(encoder)
    modules = nn.ModuleDict()
    for name in spec.names:
        shape = tuple(input_shapes[name])
        kind, options = resolve_encoder_section(name, shape, default, sections.get(name, {}), dropout, width)
        modules[name] = build_encoder(kind, shape, channels, **options)
    head_cls = HEADS.get(head)
    plans = plan_levels(spec, {m: cast(Encoder, modules[m]).feature_info for m in spec.names}, head_cls.levels)
    fusion_section = _section(fusion)
    fusion_kind = fusion_section.pop("type", "concat")
    fusions = [
        build_fusion(fusion_kind, len(spec), p.info.channels, num_classes, not p.info.is_global, **fusion_section)
        for p in plans
    ]
    fused_info = [FeatureInfo(f.out_channels, p.info.stride) for f, p in zip(fusions, plans, strict=True)]
    options = dict(head_options or {})
    accepted = inspect.signature(head_cls.__init__).parameters
    if head == "classification":
        options.setdefault("hidden", head_hidden)
    if "dropout" in accepted:
        options.setdefault("dropout", dropout)
    if width is not None and "width" in accepted:
        options.setdefault("width", width)
    bad = sorted(set(options) - set(accepted))
    if bad:
        valid = [p for p in accepted if p not in ("self", "fused_info", "num_classes")]
        raise ValueError(f"head {head!r} has no option(s) {bad}; valid: {valid}")
    return MultimodalNet(spec, modules, fusions, head_cls(fused_info, num_classes, **options), plans)
