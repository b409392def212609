"""Modalities, modality combinations and modality dropout (docs/design.md §1, §3).

A dataset declares its modalities in a fixed order (:class:`ModalitySpec`). A
:class:`Combination` is a non-empty subset of them; ``M`` modalities give ``2**M - 1``
combinations. The *present mask* of a batch is a ``BoolTensor[B, M]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from mmanet.errors import MMANetError

PRESENT_MARK = "●"
MISSING_MARK = "○"


class ModalityError(MMANetError):
    """Raised for an unknown modality, an empty combination or an all-missing sample."""


@dataclass(frozen=True)
class ModalitySpec:
    """The modalities of a dataset, in their declared order."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        names = tuple(self.names)
        object.__setattr__(self, "names", names)
        if len(names) == 0:
            raise ModalityError("a dataset needs at least one modality")
        if len(set(names)) != len(names):
            raise ModalityError(f"duplicate modality names in {list(names)}")
        for name in names:
            if not name or "+" in name or not name.isidentifier():
                raise ModalityError(
                    f"modality name {name!r} must be a Python identifier without '+' (it is used in "
                    "canonical combination names such as 'rgb+ir')"
                )

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def index(self, name: str) -> int:
        """Position of ``name`` in the declared order; a clear error for an unknown name."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ModalityError(f"unknown modality {name!r}; this dataset has {list(self.names)}") from None

    @property
    def full(self) -> Combination:
        return Combination(self, (True,) * len(self))

    def combination(self, members: Iterable[str] | str) -> Combination:
        """Build a combination from member names or a canonical name (``"rgb+ir"``)."""
        if isinstance(members, str):
            members = [m for m in members.split("+") if m != ""] if members else []
        wanted = {self.index(m) for m in members}
        return Combination(self, tuple(i in wanted for i in range(len(self))))


@dataclass(frozen=True)
class Combination:
    """A non-empty subset of a dataset's modalities (value type, hashable, ordered)."""

    spec: ModalitySpec
    present: tuple[bool, ...]

    def __post_init__(self) -> None:
        present = tuple(bool(p) for p in self.present)
        object.__setattr__(self, "present", present)
        if len(present) != len(self.spec):
            raise ModalityError(f"combination has {len(present)} flags but the dataset has {len(self.spec)} modalities")
        if not any(present):
            raise ModalityError("a combination needs at least one modality (all modalities missing)")

    @classmethod
    def from_mask(cls, spec: ModalitySpec, mask: Tensor | Sequence[bool]) -> Combination:
        values = mask.tolist() if isinstance(mask, Tensor) else list(mask)
        return cls(spec, tuple(bool(v) for v in values))

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(n for n, p in zip(self.spec.names, self.present, strict=True) if p)

    @property
    def name(self) -> str:
        """Canonical name: member names in declared order joined by ``+``."""
        return "+".join(self.members)

    @property
    def size(self) -> int:
        return sum(self.present)

    @property
    def is_full(self) -> bool:
        return all(self.present)

    def render(self) -> str:
        """``●``/``○`` per modality, in declared order (``●○●`` for rgb+ir of rgb/depth/ir)."""
        return "".join(PRESENT_MARK if p else MISSING_MARK for p in self.present)

    def mask(self, device: torch.device | str | None = None) -> Tensor:
        return torch.tensor(self.present, dtype=torch.bool, device=device)

    def bits(self) -> int:
        """Integer code: bit m is set when modality m is present."""
        return sum(1 << i for i, p in enumerate(self.present) if p)

    def issubset(self, other: Combination) -> bool:
        return all(o or not s for s, o in zip(self.present, other.present, strict=True))

    def contains(self, modality: str) -> bool:
        return self.present[self.spec.index(modality)]

    def sort_key(self) -> tuple:
        # Table order: fewer modalities first, then by declared order (as the paper's tables).
        return (self.size, tuple(not p for p in self.present))

    def __lt__(self, other: Combination) -> bool:
        return self.sort_key() < other.sort_key()

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Combination({self.name!r})"


def all_combinations(spec: ModalitySpec) -> list[Combination]:
    """Every non-empty combination (``2**M - 1``), smallest first, then in declared order."""
    combos = [Combination(spec, flags) for flags in itertools.product((False, True), repeat=len(spec)) if any(flags)]
    return sorted(combos)


def leave_one_out_combinations(spec: ModalitySpec) -> list[Combination]:
    """The ``M`` combinations that miss exactly one modality (docs/design.md §4.2, step 1)."""
    if len(spec) < 2:
        raise ModalityError("leave-one-out combinations need at least two modalities")
    return [Combination(spec, tuple(j != i for j in range(len(spec)))) for i in range(len(spec))]


def combinations_to_mask(combos: Sequence[Combination], device: torch.device | str | None = None) -> Tensor:
    """Stack combinations into a ``BoolTensor[len(combos), M]``."""
    return torch.tensor([c.present for c in combos], dtype=torch.bool, device=device)


def check_present(present: Tensor) -> None:
    """Raise a clear error when a sample has no modality at all (never fed to a network)."""
    if present.dtype != torch.bool or present.dim() != 2:
        raise ModalityError(f"present mask must be a BoolTensor[B, M], got {present.dtype} {tuple(present.shape)}")
    empty = (~present.any(dim=1)).nonzero().flatten()
    if empty.numel() > 0:
        raise ModalityError(
            f"{empty.numel()} sample(s) have every modality missing (first at batch index {int(empty[0])}); "
            "an all-missing input cannot be predicted"
        )


DropoutMode = Literal["uniform", "bernoulli"]


class ModalityDropout:
    """Draw a keep-mask δ_i ∈ {0,1}^M per sample (docs/design.md §3, the Bernoulli indicator).

    * ``uniform``: δ_i uniform over the non-empty combinations (restricted to those that
      contain every ``never_drop`` modality).
    * ``bernoulli``: modality m kept independently with probability ``p[m]``; an all-zero
      draw is redrawn. ``never_drop`` modalities are always kept.

    δ_i is ANDed with the present mask; when that leaves nothing, one of the sample's
    available modalities (chosen uniformly) is kept. Uses the global torch RNG unless a
    generator is given, so that seeding and checkpointed RNG state make it reproducible.
    """

    def __init__(
        self,
        spec: ModalitySpec,
        mode: DropoutMode = "uniform",
        p: Sequence[float] | float | None = None,
        never_drop: Sequence[str] = (),
    ) -> None:
        if mode not in ("uniform", "bernoulli"):
            raise ValueError(f"unknown modality dropout mode {mode!r}; valid: 'uniform', 'bernoulli'")
        self.spec = spec
        self.mode = mode
        m = len(spec)
        self.never_drop = torch.zeros(m, dtype=torch.bool)
        for name in never_drop:
            self.never_drop[spec.index(name)] = True
        self.keep_prob: Tensor | None
        if mode == "bernoulli":
            if p is None:
                p = 0.5
            probs = [float(p)] * m if isinstance(p, int | float) else [float(v) for v in p]
            if len(probs) != m:
                raise ValueError(f"bernoulli dropout needs {m} keep probabilities, got {len(probs)}")
            if any(not 0.0 < v <= 1.0 for v in probs):
                raise ValueError(f"keep probabilities must be in (0, 1], got {probs}")
            self.keep_prob = torch.tensor(probs)
        else:
            if p is not None:
                raise ValueError("keep probabilities 'p' only apply to mode='bernoulli'")
            self.keep_prob = None
        codes = torch.arange(1, 2**m)
        table = ((codes[:, None] >> torch.arange(m)[None, :]) & 1).bool()
        table = table[(table | ~self.never_drop).all(dim=1)]
        self._uniform_table = table  # the allowed non-empty combinations

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw δ for ``batch_size`` samples, before ANDing with the present mask."""
        m = len(self.spec)
        if self.mode == "uniform":
            idx = torch.randint(len(self._uniform_table), (batch_size,), generator=generator)
            return self._uniform_table[idx].clone()
        keep = torch.zeros(batch_size, m, dtype=torch.bool)
        todo = torch.ones(batch_size, dtype=torch.bool)
        assert self.keep_prob is not None  # bernoulli mode
        while todo.any():
            n = int(todo.sum())
            draw = torch.rand(n, m, generator=generator) < self.keep_prob
            draw |= self.never_drop
            keep[todo] = draw
            todo = ~keep.any(dim=1)
        return keep

    def __call__(self, present: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Keep-mask ∧ present mask, never all-missing. ``present``: ``BoolTensor[B, M]``."""
        check_present(present)
        if present.shape[1] != len(self.spec):
            raise ModalityError(f"present mask has {present.shape[1]} modalities, the dataset has {len(self.spec)}")
        device = present.device
        keep = self.sample(present.shape[0], generator).to(device) & present
        empty = ~keep.any(dim=1)
        if empty.any():
            # keep one available modality, chosen uniformly among the present ones
            scores = torch.rand(int(empty.sum()), present.shape[1], generator=generator).to(device)
            scores = scores.masked_fill(~present[empty], -1.0)
            choice = scores.argmax(dim=1)
            rows = keep[empty]
            rows[torch.arange(rows.shape[0], device=device), choice] = True
            keep[empty] = rows
        return keep
