"""Multiply-accumulates of a network's parts (forward hooks on every Conv/Linear layer) and the FLOP floor
of a line that runs n combinations against one full pass."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mmanet.models.network import MultimodalNet


def count_macs(modules: nn.Module | list[nn.Module], fn: Callable[[], object]) -> int:
    """Multiply-accumulates of the Conv/Linear layers inside ``modules`` while ``fn`` runs (forward hooks)."""
    modules = modules if isinstance(modules, list) else [modules]
    total = 0

    def conv(m: nn.Conv2d | nn.Conv1d, _inp, out) -> None:
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear(m: nn.Linear, _inp, out) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for root in modules:
        for m in root.modules():
            if isinstance(m, nn.Conv2d | nn.Conv1d):
                handles.append(m.register_forward_hook(conv))
            elif isinstance(m, nn.Linear):
                handles.append(m.register_forward_hook(linear))
    try:
        with torch.no_grad():
            fn()
    finally:
        for h in handles:
            h.remove()
    return total


def encoder_head_macs(net: MultimodalNet, inputs: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(E, T): MACs per sample of all encoders and of one fuse + head pass (full combination)."""
    b = next(iter(inputs.values())).shape[0]
    present = torch.ones(b, len(net.spec), dtype=torch.bool)
    was = net.training
    net.eval()
    e = count_macs(list(net.encoders.values()), lambda: net.encode(inputs, present))
    with torch.no_grad():
        features = net.encode(inputs, present)
    t = count_macs([*net.fusions, net.head], lambda: net.fuse_predict(features, present))
    net.train(was)
    return e // b, t // b


def floor_of(e: int, t: int, n: int) -> float:
    """FLOP floor of encode-once + n head passes ÷ encode + 1 head pass."""
    return (e + n * t) / (e + t)


@dataclass(frozen=True)
class CombinationMacs:
    """MACs per sample of the all-combination path: encoders ``e``, one fuse + head pass ``t``, and with
    the head's split prefix (concat fusion): the prefix ``p`` (once per batch) and the rest ``r`` (per
    combination: the sum of the M partials, M·|partial| multiply-adds, + ``forward_from_partials``).
    Without a split path ``p = 0`` and ``r = t``."""

    e: int
    t: int
    p: int
    r: int

    def floor(self, n: int) -> float:
        """FLOP floor of ``predict_combinations`` with n combinations ÷ one full-modality pass."""
        return (self.e + self.p + n * self.r) / (self.e + self.t) if n > 1 else 1.0

    def describe(self, scale: float, unit: str) -> str:
        def f(value: int) -> str:
            return f"{value / scale:.3g}{unit}/sample"

        split = f" split_prefix={f(self.p)}(once) rest={f(self.r)}(per_combination)" if self.p else ""
        return f"E={f(self.e)} T={f(self.t)}{split}"


def combination_macs(net: MultimodalNet, inputs: dict[str, torch.Tensor]) -> CombinationMacs:
    """:class:`CombinationMacs` of ``net`` (eval mode; forward hooks on Conv/Linear, see :func:`count_macs`)."""
    e, t = encoder_head_macs(net, inputs)
    b = next(iter(inputs.values())).shape[0]
    was = net.training
    net.eval()
    with torch.no_grad():
        features = net.encode(inputs, torch.ones(b, len(net.spec), dtype=torch.bool))[-1]
        partials = net.head.split_prefix(features) if net.fusion.masked_concat and len(net.fusions) == 1 else None
    net.train(was)
    if partials is None:
        return CombinationMacs(e, t, 0, t)
    summed = partials.sum(dim=1)
    rest = count_macs(net.head, lambda: net.head.forward_from_partials(summed)) // b
    return CombinationMacs(e, t, t - rest, rest + partials[0].numel())


def floor_note(target: float, floor: float, ratio: float, unsplit: float | None = None) -> str:
    """The FLOP floor (and, when the split prefix lowered it, the floor without the split), and whether the
    target is below it. A time ratio well below the floor means per-call overhead, not arithmetic,
    dominates the measurement (the floor then binds less)."""
    note = f"flop_floor={floor:.2f}"
    if ratio < 0.75 * floor:
        note += "(time_ratio_well_below_it:partly_overhead-bound)"
    if unsplit is not None and unsplit != floor:
        note += f" flop_floor_without_split={unsplit:.2f}"
    if target < floor:
        note += " TARGET_BELOW_FLOP_FLOOR(the_head_after_its_split_prefix_runs_once_per_combination)"
    return note


def combination_note(macs: CombinationMacs, n: int, target: float, ratio: float, scale: float, unit: str) -> str:
    """MACs and FLOP floors of a line that runs n combinations against one full pass."""
    floor, unsplit = macs.floor(n), floor_of(macs.e, macs.t, n)
    return f"{macs.describe(scale, unit)} {floor_note(target, floor, ratio, unsplit)}"
