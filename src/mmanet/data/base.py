"""The data contract (docs/design.md §6): samples are ``(inputs: dict[str, Tensor], present: BoolTensor[M], target)``.

:class:`MultimodalDataset` is the protocol every dataset follows (in memory or read lazily
from disk); :class:`ArrayMultimodalDataset` is the in-memory implementation, with batched
access (``__getitems__``: one indexing operation per batch, no per-sample Python loop).
Loaders use :func:`collate_samples`, which accepts both per-sample lists and such batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from mmanet.errors import MMANetError
from mmanet.modality import ModalitySpec
from mmanet.normalization import Normalization, check_normalizations, fit_normalization, normalize

Task = Literal["classification", "segmentation"]


class DataError(MMANetError):
    """Bad or missing data; the message names the file/array and how to fix it."""


class DataUnavailableError(DataError):
    """The dataset is not on this machine; the message says how to get it."""


Sample = tuple[dict[str, Tensor], Tensor, Tensor]

#: the class label of an unlabelled training sample (classification; only the distillation terms use it)
UNLABELLED = -1


@runtime_checkable
class MultimodalDataset(Protocol):
    """What every dataset provides (docs/design.md §6).

    ``__getitem__`` returns ``(inputs, present, target)``: ``inputs[m]`` the modality's tensor
    (zeros when absent; sequence modalities may add ``lengths_<m>``), ``present`` a
    ``BoolTensor[M]`` with at least one True, ``target`` a 0-dim class index or an ``(H, W)``
    label map. ``input_shapes()`` gives every modality's per-sample shape as the network sees
    it (after transforms). Datasets with random augmentation also have ``set_epoch(epoch)``
    and draw from a generator seeded by (seed, epoch, index), never from the global RNG.
    """

    spec: ModalitySpec

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def input_shapes(self) -> dict[str, tuple[int, ...]]: ...


class SampleBatch(Sequence):
    """A batch a dataset assembled with one indexing operation per array (``__getitems__``).

    :func:`collate_samples` returns :attr:`batched` as it is; any other collate function (e.g.
    a plain ``DataLoader``'s ``default_collate``) still sees a sequence of single samples.
    """

    def __init__(self, batched: Sample) -> None:
        self.batched = batched

    def __len__(self) -> int:
        return int(self.batched[2].shape[0])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        inputs, present, target = self.batched
        return {k: v[i] for k, v in inputs.items()}, present[i], target[i]


def collate_samples(samples) -> Sample:
    """``default_collate`` for a list of samples; a :class:`SampleBatch` is returned already batched."""
    if isinstance(samples, SampleBatch):
        return samples.batched
    return default_collate(samples)


class ArrayMultimodalDataset(Dataset):
    """In-memory multimodal dataset over per-modality arrays with a leading sample axis.

    ``arrays[m]``: ``(N, *shape_m)``; ``present``: ``BoolTensor[N, M]`` (False = genuinely
    missing, its values are zero-filled and ignored); ``targets``: ``(N,)`` or ``(N, H, W)``;
    ``lengths[m]``: optional ``(N,)`` valid lengths of sequence modality m.
    """

    def __init__(
        self,
        spec: ModalitySpec,
        arrays: Mapping[str, Tensor],
        targets: Tensor,
        present: Tensor | None = None,
        lengths: Mapping[str, Tensor] | None = None,
    ) -> None:
        n = int(targets.shape[0])
        for name in spec.names:
            if name not in arrays:
                raise DataError(f"no array for modality {name!r}")
            if arrays[name].shape[0] != n:
                raise DataError(f"modality {name!r} has {arrays[name].shape[0]} samples but there are {n} labels")
        if present is None:
            present = torch.ones(n, len(spec), dtype=torch.bool)
        present = present.bool()  # an integer mask would break `~` and torch.where below
        if present.shape != (n, len(spec)):
            raise DataError(f"present mask has shape {tuple(present.shape)}, expected {(n, len(spec))}")
        empty = (~present.any(dim=1)).nonzero().flatten()
        if empty.numel():
            raise DataError(f"{empty.numel()} sample(s) have no present modality (first: index {int(empty[0])})")
        self.spec = spec
        # zero-fill genuinely missing entries so their content can never matter
        self.arrays = {}
        for i, name in enumerate(spec.names):
            values = arrays[name].float()
            keep = present[:, i].reshape((n,) + (1,) * (values.dim() - 1))
            self.arrays[name] = torch.where(keep, values, torch.zeros((), dtype=values.dtype))
        self.targets = targets.long()
        self.present = present
        self.lengths = {k: v.long() for k, v in (lengths or {}).items()}

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        inputs = {name: values[index] for name, values in self.arrays.items()}
        for name, lengths in self.lengths.items():
            inputs[f"lengths_{name}"] = lengths[index]
        return inputs, self.present[index], self.targets[index]

    def __getitems__(self, indices: list[int]) -> SampleBatch:
        """A whole batch with one indexing operation per array (DataLoader's batched fetch)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        inputs = {name: values[index] for name, values in self.arrays.items()}
        for name, lengths in self.lengths.items():
            inputs[f"lengths_{name}"] = lengths[index]
        return SampleBatch((inputs, self.present[index], self.targets[index]))

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(values.shape[1:]) for name, values in self.arrays.items()}

    def subset(self, indices: Tensor) -> ArrayMultimodalDataset:
        """The samples at ``indices`` (a new dataset sharing nothing mutable with this one)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return ArrayMultimodalDataset(
            self.spec,
            {name: values[index] for name, values in self.arrays.items()},
            self.targets[index],
            present=self.present[index],
            lengths={name: lengths[index] for name, lengths in self.lengths.items()},
        )


def unlabelled_rows(target: Tensor) -> Tensor:
    """``BoolTensor[B]``: the classification samples whose label is :data:`UNLABELLED`."""
    if target.dim() != 1:  # segmentation maps: unlabelled pixels are the void label, not whole samples
        return torch.zeros(target.shape[0], dtype=torch.bool, device=target.device)
    return target == UNLABELLED


def labelled_part(dataset: MultimodalDataset) -> MultimodalDataset:
    """The dataset without its unlabelled samples (itself when it has none or cannot say).

    Only in-memory datasets (:class:`ArrayMultimodalDataset`: mfeat, npz, …) can hold unlabelled samples.
    """
    if not isinstance(dataset, ArrayMultimodalDataset):
        return dataset
    unlabelled = unlabelled_rows(dataset.targets)
    if not bool(unlabelled.any()):
        return dataset
    if bool(unlabelled.all()):
        raise DataError("the training split has no labelled sample (every label is -1)")
    return dataset.subset((~unlabelled).nonzero().flatten())


def present_matrix(dataset: MultimodalDataset) -> Tensor | None:
    """``BoolTensor[N, M]``: which modalities each sample's data has, or None when every sample is complete.

    Only in-memory datasets (:class:`ArrayMultimodalDataset`: npz, toy, …) hold genuinely missing
    modalities; the lazy image datasets (CASIA-SURF, CeFA, NYUv2, Cityscapes, rooms) are complete by
    construction (their ``present`` is all True).
    """
    present = getattr(dataset, "present", None)
    if isinstance(present, Tensor) and present.dim() == 2 and not bool(present.all()):
        return present.bool()
    return None


def complete_part(dataset: MultimodalDataset, what: str = "the teacher") -> MultimodalDataset:
    """The samples whose data has every modality (itself when all are complete); what the paper's teacher
    trains on (docs/design.md §4.3). A dataset without a single complete sample is an error naming ``what``."""
    present = present_matrix(dataset)
    if present is None:
        return dataset
    complete = present.all(dim=1)
    if not bool(complete.any()):
        raise DataError(
            f"the training split has no sample with every modality present, which {what} needs (the MMANet "
            "family trains its teacher on complete samples); set teacher.samples: all and "
            "teacher.distill_samples: all to use incomplete samples instead"
        )
    # only an in-memory ArrayMultimodalDataset holds incomplete samples (present_matrix): it has subset()
    return cast(ArrayMultimodalDataset, dataset).subset(complete.nonzero().flatten())


def unaugmented(dataset: MultimodalDataset) -> MultimodalDataset:
    """The same samples without random augmentation (``without_augmentation()`` where a dataset augments):
    what MAR mining reads, so that it sees the same inputs every epoch (docs/design.md §4.2)."""
    view = getattr(dataset, "without_augmentation", None)
    return view() if callable(view) else dataset


def count_unlabelled(dataset: MultimodalDataset) -> int:
    targets = getattr(dataset, "targets", None)
    return int(unlabelled_rows(targets).sum()) if isinstance(targets, Tensor) else 0


@dataclass
class DataBundle:
    """Everything a run needs from a dataset: the three splits and their description."""

    name: str
    spec: ModalitySpec
    task: Task
    num_classes: int
    train: MultimodalDataset
    val: MultimodalDataset
    test: MultimodalDataset
    class_names: list[str] = field(default_factory=list)
    #: classification: index of the bona fide class for ACER (None: plain error rate)
    bona_fide_class: int | None = None
    ignore_index: int | None = None
    #: per modality, the ``(x − mean) / std`` the datasets applied (None: inputs are used as they are);
    #: stored with every trained model (see :mod:`mmanet.normalization`)
    normalization: dict[str, Normalization] | None = None
    #: what ``data.missing_rates`` removed from the training split (None: the data as it is); in results.json
    missing_rates: dict[str, Any] | None = None

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.train.input_shapes()

    def split(self, name: str) -> MultimodalDataset:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}; valid: ['train', 'val', 'test']")
        return getattr(self, name)


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Seeded stratified split of sample indices into parts of the given fractions (sum 1).

    Within each class the indices are shuffled and cut at the rounded cumulative fractions,
    so every part keeps the class proportions (up to rounding).
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    cumulative = np.cumsum(fractions)
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        cuts = np.round(cumulative * len(idx)).astype(int)
        start = 0
        for p, stop in enumerate(cuts):
            parts[p].append(idx[start:stop])
            start = stop
    return [np.sort(np.concatenate(p)) for p in parts]


def per_class_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """A seeded subset with ``per_class`` samples of each class (the ``low_label`` protocol)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        if len(idx) < per_class:
            raise DataError(f"class {cls} has only {len(idx)} training samples, fewer than {per_class}")
        chosen.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def checked_normalization(
    normalization: Mapping[str, Normalization] | None, names: Sequence[str], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, Normalization]:
    """A trained model's stored statistics checked against the data's modalities and per-sample shapes
    (a :class:`DataError` saying what disagrees)."""
    try:
        return check_normalizations(normalization, tuple(names), {m: tuple(shapes[m]) for m in names})
    except ValueError as err:
        raise DataError(str(err)) from None


class Standardizer:
    """Per-modality, per-feature standardisation fitted on the present rows of the training split only
    (:func:`~mmanet.normalization.fit_normalization`, a constant feature's std clamped to ``eps``), applied
    with :func:`~mmanet.normalization.normalize`."""

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = eps
        self.mean: dict[str, Tensor] = {}
        self.std: dict[str, Tensor] = {}

    def fit(self, arrays: Mapping[str, Tensor], present: Tensor, spec: ModalitySpec) -> Standardizer:
        present = present.bool()  # an integer mask would index rows instead of selecting them
        for i, name in enumerate(spec.names):
            values = arrays[name][present[:, i]]
            if values.shape[0] == 0:
                raise DataError(f"modality {name!r} is missing in every training sample")
            norm = fit_normalization(values.detach().cpu().numpy(), min_std=self.eps, small_std="clamp")
            self.mean[name], self.std[name] = norm.tensors()
        return self

    def transform(self, arrays: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {name: normalize(arrays[name], self.mean[name], self.std[name]) for name in arrays}

    def normalization(self) -> dict[str, Normalization]:
        """The fitted statistics, to store with a trained model."""
        return {name: Normalization.from_arrays(self.mean[name], self.std[name]) for name in self.mean}

    @classmethod
    def from_normalization(
        cls, normalization: Mapping[str, Normalization], spec: ModalitySpec, shapes: Mapping[str, tuple[int, ...]]
    ) -> Standardizer:
        """A standardizer with a trained model's stored statistics instead of fitted ones."""
        scaler = cls()
        for name, norm in checked_normalization(normalization, spec.names, shapes).items():
            scaler.mean[name], scaler.std[name] = norm.tensors()
        return scaler
