"""What CASIA-SURF and CeFA share: samples, options, label convention, transforms, the lazy dataset.

Both are face anti-spoofing sets with modalities ``("rgb", "depth", "ir")`` stored as
3-channel JPEG face crops of varying size, listed in text files. A sample is read from
disk in ``__getitem__`` (Pillow), every modality is resized to ``image_size`` and
normalised with ``(x − 127.5) / 128``; training adds the authors' augmentation
(resize to ``image_size · 144/112`` → random rotation ±30° → random crop ``image_size`` →
horizontal flip), with identical geometry for all modalities.

Label convention: the list files hold 0/1 labels; ``real_label`` says which value means
bona fide (real). The class index of a sample IS its list label, so predictions stay in the
list's convention, and the bundle's ``bona_fide_class`` (= ``real_label``) tells the ACER
metric which class is bona fide; ``class_names`` are ordered to match.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmanet.data.base import DataBundle, DataError, DataUnavailableError
from mmanet.data.epoch import EpochSeeded
from mmanet.data.image_io import read_image
from mmanet.data.transforms import (
    Compose,
    Normalize,
    PairedSample,
    PairedTransform,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotation,
    Resize,
    Size,
    as_size,
)
from mmanet.modality import ModalitySpec
from mmanet.normalization import Normalization

MODALITIES = ("rgb", "depth", "ir")
SPEC = ModalitySpec(MODALITIES)
#: target of samples from unlabelled (public) lists
UNLABELLED = -1
#: the authors' pre-crop size relative to the network size (144 for 112)
PRECROP_RATIO = 144 / 112
ROTATION_DEGREES = 30.0
PIXEL_MEAN, PIXEL_STD = 127.5, 128.0


@dataclass(frozen=True)
class FaceSample:
    """One sample: an image path per modality (spec order), its list label, where it was listed."""

    paths: tuple[Path, ...]
    label: int
    #: e.g. ``"val_private_list.txt line 17"``; named in every read error
    context: str
    #: the video a frame belongs to (CeFA), empty when unknown
    video: str = ""


@dataclass(frozen=True)
class FaceOptions:
    """The options CASIA-SURF and CeFA share (validated)."""

    image_size: tuple[int, int] = (112, 112)
    real_label: int = 1
    max_samples_per_split: int | None = None
    augment: bool = True

    @classmethod
    def parse(
        cls,
        image_size: Size = 112,
        real_label: int = 1,
        max_samples_per_split: int | None = None,
        augment: bool = True,
    ) -> FaceOptions:
        try:
            size = as_size(tuple(image_size) if isinstance(image_size, list) else image_size)
        except ValueError as err:
            raise DataError(f"data.options.image_size must be a positive integer or [H, W]: {err}") from None
        if real_label not in (0, 1) or isinstance(real_label, bool):
            raise DataError(f"real_label must be 0 or 1 (the list label that means bona fide), got {real_label!r}")
        check_optional_count(max_samples_per_split, "max_samples_per_split")
        return cls(size, int(real_label), max_samples_per_split, bool(augment))

    @property
    def bona_fide_class(self) -> int:
        return self.real_label

    @property
    def class_names(self) -> list[str]:
        """Class index → name: ``["attack", "real"]`` when 1 = real, ``["real", "attack"]`` when 0 = real."""
        return ["attack", "real"] if self.real_label == 1 else ["real", "attack"]


def check_optional_count(value: object, name: str) -> None:
    """A DataError unless ``value`` is None or a positive integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DataError(f"{name} must be a positive integer or None, got {value!r}")


# ----------------------------------------------------------------------------- list files


def require_lists(root: str | Path | None, names: Sequence[str], dataset: str, layout: str) -> Path:
    """``root`` as a Path once every list file in ``names`` exists; otherwise a DataUnavailableError."""
    if root is None:
        raise DataUnavailableError(f"{dataset} is read from your own copy: set data.root to its directory ({layout})")
    root = Path(root).expanduser()
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DataUnavailableError(f"{dataset} list file(s) {missing} not found under {root}. Expected there: {layout}")
    return root


def list_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, whitespace-separated fields)`` of every non-blank line (trailing spaces are fine)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not a UTF-8 text list: {err}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            yield number, fields


def line_context(path: Path, number: int) -> str:
    return f"{path.name} line {number}"


def expect_fields(fields: list[str], count: int, path: Path, number: int, form: str) -> None:
    if len(fields) != count:
        raise DataError(
            f"{path} line {number}: expected {count} whitespace-separated fields ({form}), got {len(fields)}"
        )


def parse_label(token: str, path: Path, number: int) -> int:
    if token not in ("0", "1"):
        raise DataError(f"{path} line {number}: label must be 0 or 1, got {token!r}")
    return int(token)


def subsample(samples: list[FaceSample], limit: int | None, seed: int, salt: int) -> list[FaceSample]:
    """A seeded random subset of at most ``limit`` samples, in list order (``salt`` separates splits)."""
    if limit is None or len(samples) <= limit:
        return samples
    chosen = np.random.default_rng((seed, salt)).choice(len(samples), size=limit, replace=False)
    return [samples[i] for i in sorted(chosen.tolist())]


# ----------------------------------------------------------------------------- the dataset


def build_transform(image_size: tuple[int, int], augment: bool) -> Compose:
    """The authors' pipeline: augmented (training) or plain resize (evaluation), then ``(x − 127.5)/128``."""
    if augment:
        h, w = image_size
        precrop = (round(h * PRECROP_RATIO), round(w * PRECROP_RATIO))
        ops: list[PairedTransform] = [
            Resize(precrop),
            RandomRotation(ROTATION_DEGREES),
            RandomCrop(image_size),
            RandomHorizontalFlip(0.5),
        ]
    else:
        ops = [Resize(image_size)]
    return Compose([*ops, Normalize(PIXEL_MEAN, PIXEL_STD)])


class FaceAntiSpoofingDataset(EpochSeeded, Dataset):
    """Lazy on-disk face anti-spoofing dataset following the dataset protocol.

    ``__getitem__(i)`` → ``(inputs, present, target)``: ``inputs[m]`` a ``(3, H, W)`` float
    tensor per modality, ``present`` all True, ``target`` a 0-dim long tensor (the list
    label; :data:`UNLABELLED` for public lists). Random augmentation for sample ``i`` in
    epoch ``e`` draws from a generator seeded by ``(seed, e, i)`` (see :meth:`set_epoch`).
    """

    def __init__(
        self,
        samples: Sequence[FaceSample],
        image_size: Size = 112,
        augment: bool = False,
        seed: int = 0,
        spec: ModalitySpec = SPEC,
    ) -> None:
        self.spec = spec
        self.samples = list(samples)
        for sample in self.samples:
            if len(sample.paths) != len(spec):
                raise DataError(f"{sample.context}: {len(sample.paths)} paths for modalities {list(spec.names)}")
        self.image_size = as_size(image_size)
        self.augment = augment
        self.seed = seed
        self.init_epoch(seed)  # the epoch in shared memory: set_epoch reaches persistent workers
        self.transform = build_transform(self.image_size, augment)
        self.targets = torch.tensor([s.label for s in self.samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def without_augmentation(self) -> FaceAntiSpoofingDataset:
        """The same samples with the evaluation transform (a plain resize): what MAR mining reads."""
        if not self.augment:
            return self
        return FaceAntiSpoofingDataset(self.samples, self.image_size, False, self.seed, self.spec)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: (3, *self.image_size) for name in self.spec.names}

    def videos(self) -> list[str]:
        """The video of every sample (CeFA frames), to aggregate frame scores per video."""
        return [s.video for s in self.samples]

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        index = int(index)
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.samples)} samples")
        sample = self.samples[index]
        images = {m: read_image(p, "RGB", sample.context) for m, p in zip(self.spec.names, sample.paths, strict=True)}
        out = self.transform(PairedSample(images), self.generator(index))
        present = torch.ones(len(self.spec), dtype=torch.bool)
        return out.images, present, self.targets[index].clone()


def make_bundle(
    name: str,
    splits: dict[str, list[FaceSample]],
    options: FaceOptions,
    seed: int,
) -> DataBundle:
    """The three lazy datasets (augmentation on ``train`` only when ``options.augment``) as a DataBundle."""
    datasets = {}
    for salt, split in enumerate(("train", "val", "test")):
        if not splits[split]:
            raise DataError(f"{name}: the {split} list has no samples")
        samples = subsample(splits[split], options.max_samples_per_split, seed, salt)
        augment = options.augment and split == "train"
        datasets[split] = FaceAntiSpoofingDataset(samples, options.image_size, augment, seed)
    return DataBundle(
        name=name,
        spec=SPEC,
        task="classification",
        num_classes=2,
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        class_names=options.class_names,
        bona_fide_class=options.bona_fide_class,
        normalization={m: Normalization.from_arrays(PIXEL_MEAN, PIXEL_STD) for m in SPEC.names},
    )
