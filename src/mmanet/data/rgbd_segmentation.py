"""The RGB-D segmentation sample shared by NYUv2, Cityscapes and the synthetic rooms, from decoded frame to tensors.

A sample is ``(inputs, present, target)``: ``inputs["rgb"]`` ``(3, H, W)`` and
``inputs["depth"]`` ``(1, H, W)`` float32, normalised; ``present`` all True; ``target`` an
``(H, W)`` long map of class indices ``0 … K−1`` with void = :data:`IGNORE_INDEX` (255, the
bundle's ``ignore_index``). Each dataset module decodes its own files into an
:class:`RGBDFrame` (its label convention mapped already) through a :class:`FrameReader`;
everything after that is here:

* Evaluation: resize to ``image_size``.
* Training with ``augment``: random scale ``[1.0, 1.4]`` of ``image_size`` → random crop
  ``image_size`` → horizontal flip (one draw for rgb, depth and label) → colour jitter of rgb
  only. Randomness comes from a generator seeded by ``(seed, epoch, index)``
  (:mod:`mmanet.data.epoch`).
* Resampling: rgb bilinear, label nearest, and depth nearest too, so an invalid pixel (0)
  is never blended into its valid neighbours (a bilinear mix of 0 and 3 m is a phantom 1.5 m).
* Normalisation: rgb ``/255`` then ImageNet mean/std; depth ``(d − mean) / std`` with the
  dataset's statistics, except that invalid depth (0) stays exactly 0 in the normalised tensor.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmanet.data.base import ArrayMultimodalDataset, DataBundle, DataError, DataUnavailableError, MultimodalDataset
from mmanet.data.epoch import EpochSeeded
from mmanet.data.face_antispoofing import check_optional_count
from mmanet.data.transforms import (
    ColorJitter,
    Compose,
    Normalize,
    PairedSample,
    PairedTransform,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    Size,
    as_size,
)
from mmanet.modality import ModalitySpec
from mmanet.normalization import Normalization

MODALITIES = ("rgb", "depth")
SPEC = ModalitySpec(MODALITIES)
#: void label of every segmentation bundle (the loss ignores it; metrics skip it)
IGNORE_INDEX = 255
#: the registry's task description
TASK = "segmentation (mIoU)"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: training augmentation: random scale range (relative to image_size) and rgb jitter amount
SCALE_RANGE = (1.0, 1.4)
JITTER = 0.2
#: table entry of a raw label id that must not occur (reading it is a DataError)
UNEXPECTED = -1
#: salts that keep the seeded draws of the validation carve-out and each split's subset apart
_VAL_SALT, _SUBSET_SALT = 1, 2


@dataclass(frozen=True)
class DepthStats:
    """Dataset-wide depth statistics used for normalisation (in the depth's own ``unit``)."""

    mean: float
    std: float
    unit: str


@dataclass(frozen=True)
class RGBDFrame:
    """One decoded frame before transforms, in the shared convention.

    ``rgb`` ``(3, H, W)`` float 0..255; ``depth`` ``(1, H, W)`` float in the dataset's unit
    with 0 = invalid; ``label`` ``(H, W)`` long class indices with void = :data:`IGNORE_INDEX`.
    ``context`` names the frame's source in errors.
    """

    rgb: Tensor
    depth: Tensor
    label: Tensor
    context: str = ""

    def __post_init__(self) -> None:
        shapes = {"rgb": tuple(self.rgb.shape), "depth": tuple(self.depth.shape), "label": tuple(self.label.shape)}
        h, w = shapes["label"][-2:] if self.label.dim() == 2 else (-1, -1)
        if shapes != {"rgb": (3, h, w), "depth": (1, h, w), "label": (h, w)}:
            raise DataError(f"rgb, depth and label of one frame must share H×W, got {shapes} ({self.context})")


class FrameReader(Protocol):
    """Decodes one record (whatever locates a frame: paths, an index) into an :class:`RGBDFrame`."""

    def frame(self, record: Any) -> RGBDFrame: ...

    def label(self, record: Any) -> Tensor:
        """Only the ``(H, W)`` label map (mapped, void = ignore index), e.g. for class weights."""
        ...


# ----------------------------------------------------------------------------- options and checks


def parse_image_size(value: Size, name: str = "image_size") -> tuple[int, int]:
    """``int`` or ``[H, W]`` → ``(H, W)``; a DataError naming the option (``data.options.<name>``) otherwise."""
    try:
        return as_size(tuple(value) if isinstance(value, list) else value)
    except ValueError as err:
        raise DataError(f"data.options.{name} must be a positive integer or [H, W]: {err}") from None


@dataclass(frozen=True)
class SegmentationOptions:
    """Options the on-disk segmentation datasets share (validated by :meth:`parse`)."""

    image_size: tuple[int, int]
    augment: bool
    max_samples_per_split: int | None
    val_fraction: float

    @classmethod
    def parse(
        cls, image_size: Size, augment: bool, max_samples_per_split: int | None, val_fraction: float
    ) -> SegmentationOptions:
        check_optional_count(max_samples_per_split, "max_samples_per_split")
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) or not 0 < val_fraction < 1:
            raise DataError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
        return cls(parse_image_size(image_size), bool(augment), max_samples_per_split, float(val_fraction))


def require_root(root: str | Path | None, dataset: str, layout: str) -> Path:
    """``root`` as a directory Path, or a DataUnavailableError that describes the expected ``layout``."""
    if root is None:
        raise DataUnavailableError(f"{dataset} is read from your own copy: set data.root to its directory ({layout})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataUnavailableError(f"{dataset} root {path} is not a directory. Expected there: {layout}")
    return path


def require_files(paths: Sequence[Path], what: str) -> None:
    """A DataError naming the first missing files (and how many) unless every path is a file."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise DataError(f"{what}: {len(missing)} of {len(paths)} file(s) missing, e.g. {shown}")


def label_table(mapping: Mapping[int, int] | Sequence[int], size: int, default: int = UNEXPECTED) -> Tensor:
    """A lookup table ``raw id → class index`` of ``size`` entries; ids not in ``mapping`` get ``default``."""
    table = torch.full((size,), default, dtype=torch.long)
    items = mapping.items() if isinstance(mapping, Mapping) else enumerate(mapping)
    for raw, mapped in items:
        table[int(raw)] = int(mapped)
    return table


def map_labels(raw: Tensor, table: Tensor, where: str) -> Tensor:
    """Raw label ids → class indices via ``table``; an id outside it or mapped to :data:`UNEXPECTED` is a
    DataError naming ``where`` and the offending ids."""
    ids = raw.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(table)):
        bad = (ids < 0) | (ids >= len(table))
    else:
        mapped = table[ids]
        bad = mapped == UNEXPECTED
        if not bad.any():
            return mapped
    found = ids[bad].unique()[:8].tolist()
    valid = (table != UNEXPECTED).nonzero().flatten()
    raise DataError(f"unexpected label id(s) {found}; valid ids are {int(valid.min())}..{int(valid.max())} ({where})")


# ----------------------------------------------------------------------------- splits


def carve_validation(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of ``range(count)`` into (train, validation) positions, both sorted and non-empty.

    The validation part has ``round(fraction · count)`` samples (at least 1, at most ``count − 1``).
    """
    if count < 2:
        raise DataError(f"cannot carve a validation split out of {count} training sample(s); need at least 2")
    size = min(count - 1, max(1, round(fraction * count)))
    order = np.random.default_rng((int(seed), _VAL_SALT)).permutation(count)
    return sorted(order[size:].tolist()), sorted(order[:size].tolist())


def seeded_subset(records: Sequence[Any], limit: int | None, seed: int, salt: int) -> list[Any]:
    """At most ``limit`` records, a seeded random choice kept in their original order (``salt``: the split)."""
    if limit is None or len(records) <= limit:
        return list(records)
    chosen = np.random.default_rng((int(seed), _SUBSET_SALT, salt)).choice(len(records), size=limit, replace=False)
    return [records[i] for i in sorted(chosen.tolist())]


# ----------------------------------------------------------------------------- the dataset


def build_transform(
    image_size: tuple[int, int], depth: DepthStats, augment: bool, ignore_index: int = IGNORE_INDEX
) -> Compose:
    """The pipeline of the module docstring: geometry (augmented or a plain resize), then normalisation."""
    if augment:
        ops: list[PairedTransform] = [
            RandomScale(*SCALE_RANGE, base_size=image_size, nearest=("depth",)),
            RandomCrop(image_size, pad_value=0.0, label_pad=ignore_index),
            RandomHorizontalFlip(0.5),
            ColorJitter(JITTER, JITTER, JITTER, modalities=("rgb",)),
        ]
    else:
        ops = [Resize(image_size, nearest=("depth",))]
    rgb_mean = [255.0 * m for m in IMAGENET_MEAN]
    rgb_std = [255.0 * s for s in IMAGENET_STD]
    return Compose(
        [
            *ops,
            Normalize(rgb_mean, rgb_std, modalities=("rgb",)),
            Normalize(depth.mean, depth.std, modalities=("depth",), keep_zero=True),
        ]
    )


class RGBDSegmentationDataset(EpochSeeded, Dataset):
    """Frames decoded on access by ``reader`` from ``records``, transformed per the module docstring.

    Follows the dataset protocol: ``__getitem__(i)`` → ``(inputs, present, target)``; with
    ``augment`` the draws of sample ``i`` in epoch ``e`` come from ``(seed, e, i)`` (see
    :meth:`set_epoch`). :meth:`label_maps` yields the un-augmented label maps (class weights).
    """

    def __init__(
        self,
        records: Sequence[Any],
        reader: FrameReader,
        image_size: Size,
        depth: DepthStats,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.spec = SPEC
        self.records = list(records)
        self.reader = reader
        self.image_size = as_size(image_size)
        self.augment = augment
        self.depth = depth
        self.seed = seed
        self.transform = build_transform(self.image_size, depth, augment)
        self.init_epoch(seed)

    def __len__(self) -> int:
        return len(self.records)

    def without_augmentation(self) -> RGBDSegmentationDataset:
        """The same frames with the evaluation transform (a plain resize): what MAR mining reads."""
        if not self.augment:
            return self
        return RGBDSegmentationDataset(self.records, self.reader, self.image_size, self.depth, False, self.seed)

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        index = int(index)
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.records)} samples")
        frame = self.reader.frame(self.records[index])
        sample = PairedSample({"rgb": frame.rgb, "depth": frame.depth}, frame.label)
        out = self.transform(sample, self.generator(index))
        assert out.label is not None  # the transforms keep the frame's label map, which every frame has
        return out.images, torch.ones(len(self.spec), dtype=torch.bool), out.label

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"rgb": (3, *self.image_size), "depth": (1, *self.image_size)}

    def label_maps(self) -> Iterator[Tensor]:
        """Every record's ``(H, W)`` label map at its stored size, before any transform."""
        for record in self.records:
            yield self.reader.label(record)


def materialise(dataset: RGBDSegmentationDataset) -> ArrayMultimodalDataset:
    """All samples of an un-augmented dataset stacked in memory (batched access via ``__getitems__``)."""
    if dataset.augment:
        raise ValueError("materialise() freezes one augmentation draw; use it on un-augmented datasets only")
    samples = [dataset[i] for i in range(len(dataset))]
    arrays = {m: torch.stack([inputs[m] for inputs, _, _ in samples]) for m in MODALITIES}
    return ArrayMultimodalDataset(SPEC, arrays, torch.stack([target for _, _, target in samples]))


def lazy_datasets(
    splits: Mapping[str, tuple[FrameReader, Sequence[Any]]],
    options: SegmentationOptions,
    depth: DepthStats,
    seed: int,
    dataset: str,
) -> dict[str, RGBDSegmentationDataset]:
    """One lazy dataset per split (``split → (reader, records)``); augmentation on train only.

    ``max_samples_per_split`` keeps a seeded random subset of each split.
    """
    datasets = {}
    for salt, split in enumerate(("train", "val", "test")):
        reader, records = splits[split]
        if not records:
            raise DataError(f"{dataset}: the {split} split has no samples")
        chosen = seeded_subset(records, options.max_samples_per_split, seed, salt)
        augment = options.augment and split == "train"
        datasets[split] = RGBDSegmentationDataset(chosen, reader, options.image_size, depth, augment, seed)
    return datasets


def segmentation_normalization(depth) -> dict[str, Normalization]:
    """What the pipeline applies to RAW inputs (rgb 0..255, depth in ``depth.unit`` with 0 = invalid),
    recorded with the model so exports and ``predict`` take raw images."""
    rgb_mean = [[[255.0 * m]] for m in IMAGENET_MEAN]
    rgb_std = [[[255.0 * s]] for s in IMAGENET_STD]
    return {
        "rgb": Normalization.from_arrays(rgb_mean, rgb_std),
        "depth": Normalization.from_arrays(depth.mean, depth.std, keep_zero=True),
    }


def segmentation_bundle(
    name: str, datasets: Mapping[str, MultimodalDataset], class_names: Sequence[str], depth=None
) -> DataBundle:
    """A segmentation DataBundle: ``num_classes = len(class_names)``, void = :data:`IGNORE_INDEX`;
    with ``depth`` statistics, the input normalisation is recorded (:func:`segmentation_normalization`)."""
    return DataBundle(
        name=name,
        spec=SPEC,
        task="segmentation",
        num_classes=len(class_names),
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        class_names=list(class_names),
        ignore_index=IGNORE_INDEX,
        normalization=segmentation_normalization(depth) if depth is not None else None,
    )
