"""Imbalanced missing rates: each modality removed from its own fraction of the *training* samples.

``data.missing_rates: {modality: rate}`` (PASSION's protocol, ACM MM 2024: a cheap sensor is often
missing, an expensive one rarely; their splits ``mr1379`` lose the four MRI modalities at 10, 30, 70
and 90 %). The draw is, for every modality ``m`` and every class ``c`` (classification; segmentation
has one stratum):

1. ``k = round(rate_m · n_c)`` samples of the class, chosen uniformly at random and independently of
   the other modalities, lose ``m`` (a sample whose data already lacks ``m`` may be chosen: it counts);
2. a sample left with no modality gets back one of the modalities its data has, chosen at random, and
   a random sample of the same class that still holds that modality and at least one other loses it
   instead, so every per-class count stays exactly ``k`` (infeasible rates are a config error).

The draw is seeded by ``data.split_seed``: every method and training seed of a benchmark sees the same
training data, so paired differences compare methods, not masks. Validation and test stay as the data
gives them, so every combination is evaluated as before. What was drawn is recorded in results.json
(:attr:`MissingRatesReport.summary`). Simplification: input statistics (``(x − mean)/std``) are fitted
by the loaders before the draw, on every training sample's values.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmanet.config import ConfigError
from mmanet.data.base import ArrayMultimodalDataset, DataBundle, MultimodalDataset, present_matrix, unaugmented
from mmanet.modality import Combination, ModalitySpec

#: mixed into ``data.split_seed`` so the draw does not repeat the split's random numbers
_SALT = 0x6D72


@dataclass(frozen=True)
class MissingRatesReport:
    """What :func:`with_missing_rates` drew on the training split."""

    requested: dict[str, float]
    #: per modality, the fraction of training samples that lack it now (data and draw together)
    missing: dict[str, float]
    #: training samples per combination of present modalities
    combinations: dict[str, int]

    @property
    def summary(self) -> dict[str, Any]:
        return {"requested": self.requested, "train_missing": self.missing, "train_combinations": self.combinations}


def draw_keep(present: Tensor, strata: Tensor, rates: Mapping[int, float], seed: int) -> Tensor:
    """``BoolTensor[N, M]``: which modalities each sample keeps (module docstring, steps 1–2); ``present``:
    what the data holds, ``strata``: the class of each sample (all zeros: one stratum), ``rates``: modality
    index → rate. Raises ``ValueError`` (naming the class) when the rates leave a sample with nothing."""
    rng = np.random.default_rng([seed, _SALT])
    keep = present.clone().numpy()
    dropped = np.zeros_like(keep)
    for stratum in torch.unique(strata).tolist():
        rows = np.flatnonzero(strata.numpy() == stratum)
        for m, rate in sorted(rates.items()):
            chosen = rng.choice(rows, size=int(round(rate * len(rows))), replace=False)
            dropped[chosen, m] = True
        for s in rows.tolist():
            if (keep[s] & ~dropped[s]).any():
                continue
            if not _give_back_one(s, rows, keep, dropped, rng):
                raise ValueError(f"class {stratum}")
    return torch.from_numpy(keep & ~dropped)


def _give_back_one(s: int, rows: np.ndarray, keep: np.ndarray, dropped: np.ndarray, rng: np.random.Generator) -> bool:
    """Sample ``s`` has nothing left: it keeps one of its data's modalities, and another sample of the stratum
    that holds that modality and one more loses it instead (the count of each modality stays)."""
    for m in rng.permutation(np.flatnonzero(keep[s])):
        left = keep[rows] & ~dropped[rows]
        partners = rows[left[:, m] & (left.sum(axis=1) >= 2)]
        if len(partners):
            dropped[s, m] = False
            dropped[rng.choice(partners), m] = True
            return True
    return False


def check_rates(rates: Mapping[str, float], spec: ModalitySpec) -> dict[int, float]:
    """``data.missing_rates`` against the data: known modalities only (a ConfigError naming the key)."""
    unknown = [name for name in rates if name not in spec.names]
    if unknown:
        raise ConfigError(
            f"data.missing_rates names {unknown[0]!r}, which is not a modality of the data {list(spec.names)}"
        )
    return {spec.index(name): float(rate) for name, rate in rates.items()}


def with_missing_rates(
    bundle: DataBundle, rates: Mapping[str, float], seed: int
) -> tuple[DataBundle, MissingRatesReport]:
    """``bundle`` whose training split lacks each modality at its rate (module docstring); val and test unchanged."""
    by_index = check_rates(rates, bundle.spec)
    train = bundle.train
    present = present_matrix(train)
    if present is None:
        present = torch.ones(len(train), len(bundle.spec), dtype=torch.bool)
    targets = getattr(train, "targets", None)
    classes = isinstance(targets, Tensor) and targets.dim() == 1 and bundle.task == "classification"
    strata = targets.long() if classes else torch.zeros(len(train), dtype=torch.long)  # type: ignore[union-attr]
    try:
        keep = draw_keep(present, strata, by_index, seed)
    except ValueError as err:
        raise ConfigError(
            f"data.missing_rates {dict(rates)} cannot leave one modality in every training sample ({err}: too few "
            f"samples hold another modality to take the place of the last one); lower the rates — with "
            f"{len(bundle.spec)} modalities they may sum to at most {len(bundle.spec) - 1}"
        ) from None
    if isinstance(train, ArrayMultimodalDataset):
        masked: MultimodalDataset = ArrayMultimodalDataset(
            train.spec, train.arrays, train.targets, present=keep, lengths=train.lengths
        )
    else:
        masked = MissingModalities(train, keep)
    report = MissingRatesReport(
        requested={name: float(rate) for name, rate in rates.items()},
        missing={name: round(1.0 - float(keep[:, i].float().mean()), 4) for i, name in enumerate(bundle.spec.names)},
        combinations=_combination_counts(bundle.spec, keep),
    )
    return replace(bundle, train=masked), report


def _combination_counts(spec: ModalitySpec, keep: Tensor) -> dict[str, int]:
    patterns, counts = torch.unique(keep, dim=0, return_counts=True)
    named = {Combination.from_mask(spec, p): int(c) for p, c in zip(patterns, counts, strict=True)}
    return {combo.name: named[combo] for combo in sorted(named)}


class MissingModalities(Dataset):
    """A lazy dataset (images read per sample) whose samples lack the modalities ``keep`` marks False: their
    inputs are zeros and ``present`` says so, as for data that is genuinely missing (docs/design.md §6). ``rows``:
    the base's samples this view holds (all, in order, when None)."""

    def __init__(self, base: MultimodalDataset, keep: Tensor, rows: Tensor | None = None) -> None:
        self.base = base
        self.keep = keep.bool()
        self.rows = rows
        self.spec = base.spec
        self.present = self.keep.clone()
        targets = getattr(base, "targets", None)
        if isinstance(targets, Tensor):
            self.targets = targets if rows is None else targets[rows]

    def __len__(self) -> int:
        return int(self.keep.shape[0])

    def _row(self, index: int) -> int:
        return index if self.rows is None else int(self.rows[index])

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        inputs, present, target = self.base[self._row(index)]
        keep = self.keep[index]
        inputs = {
            name: torch.zeros_like(value) if name in self.spec.names and not keep[self.spec.index(name)] else value
            for name, value in inputs.items()
        }
        return inputs, present & keep, target

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.base.input_shapes()

    def set_epoch(self, epoch: int) -> None:
        set_epoch = getattr(self.base, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def without_augmentation(self) -> MissingModalities:
        return MissingModalities(unaugmented(self.base), self.keep, self.rows)

    def subset(self, indices: Tensor) -> MissingModalities:
        index = torch.as_tensor(indices, dtype=torch.long)
        rows = index if self.rows is None else self.rows[index]
        return MissingModalities(self.base, self.keep[index], rows)

    def label_maps(self) -> Iterator[Tensor]:
        """The un-augmented label maps of this view's samples (segmentation class weights)."""
        plain = unaugmented(self.base)
        label_maps = getattr(plain, "label_maps", None)
        if self.rows is None and callable(label_maps):
            yield from label_maps()
            return
        for index in range(len(self)):
            yield plain[self._row(index)][2]
