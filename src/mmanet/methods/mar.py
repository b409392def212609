"""Modality-aware regularization, MAR (docs/design.md §4.2, paper Eqs. 9–16) — in one module.

Everything MAR does outside its pure functions (:mod:`mmanet.losses.mar`) lives here:

* the weak-set state: :class:`WeakCombinationMiner` (memory bank of ``D_c`` per warm-up epoch, the
  strong-modality selection at ``e = ω``) and :class:`FixedWeakSet` (the SR ablation);
* the mining data pass (:func:`mine_discrepancies`: the network's batched pass over the candidates
  on the mining split without augmentation, probability sums all-reduced across processes) and the
  callback that runs it after each warm-up epoch (:class:`MiningCallback`);
* the schedule (mining after epochs ``e < ω``, selection at the start of epoch ω, regularisation
  from ω on — written once, in :class:`ModalityAwareRegularization`);
* the regularization head and its term (``mar.variant``: the paper's or the authors' code's);
* what MAR writes to checkpoints and results, and how readers get it back (:func:`weak_set_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mmanet.config import ConfigError
from mmanet.data import DataBundle, DataError, collate_samples
from mmanet.data.base import unaugmented, unlabelled_rows
from mmanet.distributed import all_reduce_sum
from mmanet.losses.mar import (
    DEFAULT_IGNORE_INDEX,
    candidate_discrepancies,
    combination_membership,
    mar_loss,
    mar_loss_official,
    probability_sums,
    single_modality_weak_set,
)
from mmanet.methods.base import EpochEndHook, labels_at
from mmanet.modality import (
    Combination,
    ModalitySpec,
    all_combinations,
    combinations_to_mask,
    leave_one_out_combinations,
)
from mmanet.models.heads.base import HeadOutput

if TYPE_CHECKING:
    from mmanet.config import RunConfig
    from mmanet.methods.base import StepContext
    from mmanet.models.network import MultimodalNet

__all__ = [
    "FixedWeakSet",
    "MiningCallback",
    "ModalityAwareRegularization",
    "WeakCombinationMiner",
    "mine_discrepancies",
    "mining_loader",
    "weak_set_of",
]


# --------------------------------------------------------------------------- weak-set state


def _weak_set_from_names(spec: ModalitySpec, names: Iterable[str]) -> list[Combination]:
    return sorted(spec.combination(name) for name in names)


class FixedWeakSet:
    """A weak set given up front (e.g. SR: :func:`single_modality_weak_set`); same interface as the miner."""

    def __init__(self, combinations: Sequence[Combination]) -> None:
        combos = list(combinations)
        if not combos:
            raise ValueError("a weak set needs at least one combination")
        specs = {c.spec for c in combos}
        if len(specs) != 1:
            raise ValueError("the combinations of a weak set must come from one ModalitySpec")
        self.spec = combos[0].spec
        self._weak_set = sorted(set(combos))

    @classmethod
    def single_modality(cls, spec: ModalitySpec) -> FixedWeakSet:
        """The SR ablation (docs/design.md §4.2)."""
        return cls(single_modality_weak_set(spec))

    @property
    def weak_set(self) -> list[Combination]:
        return list(self._weak_set)

    def weak_mask(self, keep_mask: Tensor) -> Tensor:
        """``m_i`` (docs/design.md §4.2): True where sample i's combination is in the weak set."""
        return combination_membership(keep_mask, self._weak_set)

    def state_dict(self) -> dict[str, Any]:
        return {"modalities": list(self.spec.names), "weak_set": [c.name for c in self._weak_set]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_modalities(self.spec, state)
        self._weak_set = _weak_set_from_names(self.spec, state["weak_set"])


def _check_modalities(spec: ModalitySpec, state: Mapping[str, Any]) -> None:
    saved = list(state.get("modalities", spec.names))
    if saved != list(spec.names):
        raise DataError(f"MAR's state was saved for modalities {saved}, this run has {list(spec.names)}")


# --------------------------------------------------------------------------- mining


class WeakCombinationMiner:
    """The memory bank and weak-set selection of MAR mining (docs/design.md §4.2, Eqs. 9–16).

    ``candidates`` = [full] + the ``M`` leave-one-out combinations. The data pass that forms
    each candidate's prediction distribution is :func:`mine_discrepancies` below;
    :meth:`record` keeps one epoch's ``D_c`` in the memory bank (epoch → {name: D_c}),
    :meth:`select` picks the ``num_strong`` strong modalities from the mean ``D̄_c`` and fixes
    the weak set, and :meth:`weak_mask` gives ``m_i``. Pure state, no data loop.
    """

    def __init__(
        self, spec: ModalitySpec, num_strong: int = 1, eps: float = 1e-8, *, ignore_index: int = DEFAULT_IGNORE_INDEX
    ) -> None:
        self.spec = spec
        self.leave_one_out = leave_one_out_combinations(spec)
        self._check_num_strong(num_strong)
        self.num_strong = int(num_strong)
        self.eps = eps
        self.ignore_index = ignore_index
        self.memory_bank: dict[int, dict[str, float]] = {}
        self._weak_set: list[Combination] | None = None
        self._strong: list[str] | None = None

    def _check_num_strong(self, num_strong: int) -> None:
        m = len(self.spec)
        if not 1 <= num_strong < m:
            raise ConfigError(
                f"mar.num_strong must be in [1, {m - 1}] for {m} modalities (with {num_strong} strong "
                "modalities no weak combination would remain)"
                if num_strong >= m
                else f"mar.num_strong must be at least 1, got {num_strong}"
            )

    @property
    def candidates(self) -> list[Combination]:
        return [self.spec.full, *self.leave_one_out]

    @property
    def weak_set(self) -> list[Combination] | None:
        return None if self._weak_set is None else list(self._weak_set)

    @property
    def strong_modalities(self) -> list[str] | None:
        return None if self._strong is None else list(self._strong)

    def record(self, epoch: int, discrepancies: Mapping[str, float]) -> None:
        """Store one epoch's ``D_c`` in the memory bank (§4.2 step 4)."""
        expected = {c.name for c in self.leave_one_out}
        got = set(discrepancies)
        if got != expected:
            raise ValueError(
                f"discrepancies must have one value per leave-one-out candidate {sorted(expected)}; "
                f"missing {sorted(expected - got)}, unknown {sorted(got - expected)}"
            )
        self.memory_bank[int(epoch)] = {name: float(discrepancies[name]) for name in sorted(expected)}

    def mean_discrepancies(self) -> dict[str, float]:
        """``D̄_c``: the mean over the recorded epochs (§4.2 step 4)."""
        if not self.memory_bank:
            raise ValueError("the memory bank is empty: mine at least one warm-up epoch before select()")
        epochs = list(self.memory_bank.values())
        return {c.name: sum(e[c.name] for e in epochs) / len(epochs) for c in self.leave_one_out}

    def select(self) -> list[Combination]:
        """Fix the weak set from ``D̄_c`` (docs/design.md §4.2, at e = ω) and return it.

        The ``num_strong`` leave-one-out candidates with the largest ``D̄_c`` (ties: declared
        order) each lack one strong modality; ``W`` = every non-empty combination with none of them.
        """
        self._check_num_strong(self.num_strong)
        means = self.mean_discrepancies()
        ranked = sorted(self.leave_one_out, key=lambda c: -means[c.name])  # stable: ties in declared order
        # the modality each top-ranked candidate lacks is strong
        strong_idx = sorted(c.present.index(False) for c in ranked[: self.num_strong])
        self._strong = [self.spec.names[i] for i in strong_idx]
        self._weak_set = [c for c in all_combinations(self.spec) if not any(c.present[i] for i in strong_idx)]
        return list(self._weak_set)

    def weak_mask(self, keep_mask: Tensor) -> Tensor:
        """``m_i`` (docs/design.md §4.2): True where sample i's combination is in the weak set."""
        if self._weak_set is None:
            raise RuntimeError("the weak set is not selected yet: call select() after the warm-up")
        return combination_membership(keep_mask, self._weak_set)

    # ----------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Plain Python types only (safe for ``torch.load(weights_only=True)``)."""
        return {
            "modalities": list(self.spec.names),
            "num_strong": self.num_strong,
            "memory_bank": {int(e): dict(d) for e, d in self.memory_bank.items()},
            "weak_set": None if self._weak_set is None else [c.name for c in self._weak_set],
            "strong_modalities": None if self._strong is None else list(self._strong),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_modalities(self.spec, state)
        num_strong = int(state["num_strong"])
        self._check_num_strong(num_strong)
        self.num_strong = num_strong
        self.memory_bank = {int(e): {str(k): float(v) for k, v in d.items()} for e, d in state["memory_bank"].items()}
        weak = state.get("weak_set")
        self._weak_set = None if weak is None else _weak_set_from_names(self.spec, weak)
        strong = state.get("strong_modalities")
        self._strong = None if strong is None else [str(s) for s in strong]


# --------------------------------------------------------------------------- the mining pass


@torch.no_grad()
def mine_discrepancies(
    net: MultimodalNet,
    loader: Iterable,
    candidates: list[Combination],
    *,
    ignore_index: int = DEFAULT_IGNORE_INDEX,
    eps: float = 1e-8,
) -> tuple[dict[str, float], dict[str, int]]:
    """``D_c`` for every candidate after the first (the full combination), and the skipped counts.

    ``loader`` yields ``(inputs, present, target)``. Samples without any modality of a
    candidate are skipped for it. The network is put in eval mode; its modules' training
    flags are restored afterwards. Sums and counts are all-reduced across processes (DDP).
    """
    modes = [(module, module.training) for module in net.modules()]
    net.eval()
    param = next(iter(net.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    masks = combinations_to_mask(candidates, device=device)
    sums: Tensor | None = None
    counts: Tensor | None = None
    skipped: Tensor | None = None
    try:
        for inputs, present, target in loader:
            inputs = {k: v.to(device) for k, v in inputs.items()}
            present = present.to(device).bool()
            target = target.to(device)
            out = net.predict_all(inputs, present, masks)
            dense_target = target if out.logits.dim() > 3 else None
            s, c = probability_sums(out.logits, out.valid, dense_target, ignore_index=ignore_index)
            n_skipped = (~out.valid).sum(dim=1).double()
            sums, counts = (s, c) if sums is None or counts is None else (sums + s, counts + c)
            skipped = n_skipped if skipped is None else skipped + n_skipped
    finally:
        for module, mode in modes:
            module.training = mode
    if sums is None or counts is None or skipped is None:
        raise DataError("MAR's mining split (mar.mining_split) yielded no batch: it has no sample")
    sums, counts, skipped = all_reduce_sum(sums, counts, skipped)
    empty = [c.name for c, n in zip(candidates, counts.tolist(), strict=True) if n == 0]
    if empty:
        raise DataError(
            f"no sample of the mining split (mar.mining_split) has a modality of candidate(s) {empty}; "
            "cannot form their prediction distributions"
        )
    kl = candidate_discrepancies(sums, counts, eps)
    discrepancies = {c.name: float(v) for c, v in zip(candidates[1:], kl.tolist(), strict=True)}
    return discrepancies, {c.name: int(s) for c, s in zip(candidates, skipped.tolist(), strict=True)}


def mining_loader(bundle: DataBundle, config: RunConfig) -> DataLoader:
    """The MAR mining split (``mar.mining_split``) in order, without augmentation (the same inputs every
    epoch, docs/design.md §4.2; sharded across processes under DDP)."""
    split = cast(Dataset, unaugmented(bundle.train) if config.mar.mining_split == "train" else bundle.val)
    sampler: DistributedSampler | None = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = DistributedSampler(split, shuffle=False)
    return DataLoader(split, batch_size=config.data.batch_size, sampler=sampler, collate_fn=collate_samples)


class MiningCallback:
    """After each warm-up epoch e < ω: mine ``D_c`` with the deployment network and record it in the
    miner; logs ``mar/kl_<candidate>``. An epoch-end hook (:class:`~mmanet.methods.base.EpochEndHook`):
    the training layer runs it at the end of every training epoch, before that epoch's checkpoints are
    written, so the saved checkpoint holds the updated memory bank. Lightning-free (like every method).
    """

    def __init__(
        self,
        miner: WeakCombinationMiner,
        net: MultimodalNet,
        loader_factory: Callable[[], Iterable],
        warmup_epochs: int,
    ) -> None:
        self.miner = miner
        self.net = net
        self.loader_factory = loader_factory
        self.warmup_epochs = warmup_epochs

    def __call__(self, epoch: int, log: Callable[[str, float], None]) -> None:
        if epoch >= self.warmup_epochs:
            return
        miner = self.miner
        discrepancies, _ = mine_discrepancies(
            self.net, self.loader_factory(), miner.candidates, ignore_index=miner.ignore_index, eps=miner.eps
        )
        miner.record(epoch, discrepancies)
        for name, value in discrepancies.items():
            log(f"mar/kl_{name}", float(value))


# --------------------------------------------------------------------------- the regularization


class ModalityAwareRegularization:
    """MAR of one training run: the weak set (mined or fixed), its schedule and the regularization term.

    ``mar.mode``: ``mined`` (a :class:`WeakCombinationMiner`, mining after each epoch ``e < ω``, the
    weak set fixed at the start of epoch ω), ``single`` (the SR ablation: every single modality, no
    mining). The regularization head ``p^r`` is a second instance of the network's head with its own
    weights (:meth:`~mmanet.models.MultimodalNet.new_head`), trained, checkpointed, never deployed.
    """

    def __init__(self, config: RunConfig, spec: ModalitySpec, net: MultimodalNet, ignore_index: int) -> None:
        cfg = config.mar
        self.config = config
        self.variant = cfg.variant
        self.beta = cfg.beta
        self.warmup_epochs = cfg.warmup_epochs
        self.ignore_index = ignore_index
        self.head = net.new_head()
        self.miner: WeakCombinationMiner | None = None
        self.weak_set: FixedWeakSet | WeakCombinationMiner | None = None
        if cfg.mode == "single":
            self.weak_set = FixedWeakSet(single_modality_weak_set(spec))
        else:
            self.miner = WeakCombinationMiner(spec, num_strong=cfg.num_strong, ignore_index=ignore_index)

    # ----------------------------------------------------------------- schedule
    def active(self, epoch: int) -> bool:
        """Regularisation from epoch ω on (docs/design.md §4.2)."""
        return epoch >= self.warmup_epochs

    def on_train_epoch_start(self, epoch: int, say: Callable[[str], None]) -> None:
        """At the first epoch ≥ ω: fix the weak set from the memory bank."""
        if self.miner is not None and self.active(epoch) and self.weak_set is None:
            self.miner.select()
            self.weak_set = self.miner
            n = len(self.miner.weak_set or [])
            say(
                f"MAR: strong modalities {self.miner.strong_modalities}; weak set = the "
                f"{n} combination{'s' if n != 1 else ''} without them"
            )

    def epoch_end_hooks(self, net: MultimodalNet, bundle: DataBundle) -> list[EpochEndHook]:
        if self.miner is None:
            return []
        return [MiningCallback(self.miner, net, lambda: mining_loader(bundle, self.config), self.warmup_epochs)]

    def weak_mask(self, keep: Tensor, epoch: int) -> Tensor:
        """``m_i``: True where sample i's dropout combination is in the weak set (all False before ω)."""
        if self.weak_set is None or not self.active(epoch):
            return torch.zeros(keep.shape[0], dtype=torch.bool, device=keep.device)
        return self.weak_set.weak_mask(keep)

    # ----------------------------------------------------------------- the term
    def term(self, ctx: StepContext, weak: Tensor, class_weights: Tensor | None) -> Tensor:
        """``L_MAR`` (unweighted) of ``mar.variant`` over the labelled rows (unlabelled ones carry no label).

        ``paper``: ``(1/B) Σ_i m_i CE(p^r_i, y_i)`` (docs/design.md §4.2); ``official``: the authors' code
        (:func:`~mmanet.losses.mar.mar_loss_official`; segmentation: with the side outputs and class
        weights, as their loss). The regularization head runs on every row of the batch — weak or not,
        labelled or not — so that its BatchNorm layers (the SF trunk, ESANet's decoder) always see the
        whole batch, whatever the number of weak rows (0, 1, some or all), and every parameter stays
        in the graph (DDP); the cross-entropy is masked to the weak labelled rows afterwards.
        """
        reg = self.head(ctx.out.fused)
        labelled = ~unlabelled_rows(ctx.target)
        target = ctx.target
        if not bool(labelled.all()):
            if not bool(labelled.any()):
                return reg.logits.sum() * 0.0
            keep = labelled.nonzero().flatten()
            reg = HeadOutput(reg.logits[keep], reg.features, [a[keep] for a in reg.aux_logits])
            target, weak = target[keep], weak[keep]
        ignore = self.ignore_index
        if self.variant == "paper":
            # the formula reads the head's prediction; its training-only side outputs stay in the graph at
            # zero weight (every parameter must take part in every step under DDP)
            unused = sum((side.sum() * 0.0 for side in reg.aux_logits), reg.logits.new_zeros(()))
            return mar_loss(reg.logits, target, weak, ignore_index=ignore) + unused
        weight = class_weights.to(reg.logits.device) if class_weights is not None else None
        scales = [reg.logits, *reg.aux_logits] if reg.logits.dim() > 2 else [reg.logits]
        return cast(
            Tensor,
            sum(
                mar_loss_official(logits, labels_at(logits, target), weak, ignore_index=ignore, weight=weight)
                for logits in scales
            ),
        )

    # ----------------------------------------------------------------- state and results
    def state_dict(self) -> dict[str, Any]:
        """What checkpoints keep (plain Python types): the miner's memory bank and weak set."""
        return {"miner": self.miner.state_dict()} if self.miner is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.miner is not None and "miner" in state:
            self.miner.load_state_dict(state["miner"])
            if self.miner.weak_set is not None:
                self.weak_set = self.miner

    @staticmethod
    def results_of(state: Mapping[str, Any]) -> dict[str, Any]:
        """``results.json``'s ``miner``: the memory bank, the weak set and the strong modalities (read back by
        :func:`weak_set_of` and :func:`mining_history`)."""
        return {"miner": state["miner"]} if "miner" in state else {}


def weak_set_of(summary: Mapping[str, Any]) -> list[str] | None:
    """The weak set a run's results (``results.json``) record, by combination name (None: no MAR mining)."""
    miner = summary.get("miner") or {}
    weak = miner.get("weak_set")
    return list(weak) if weak else None


def mining_history(summary: Mapping[str, Any]) -> tuple[dict[int, dict[str, float]], list[str], list[str]] | None:
    """``(memory bank by epoch, weak set, strong modalities)`` a run's results record (None without)."""
    miner = summary.get("miner") or {}
    if not (miner.get("memory_bank") and miner.get("weak_set")):
        return None
    bank = {int(e): dict(v) for e, v in miner["memory_bank"].items()}
    return bank, list(miner["weak_set"]), list(miner.get("strong_modalities") or [])
