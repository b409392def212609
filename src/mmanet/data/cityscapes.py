"""Cityscapes (rgb/depth segmentation, 19 classes + void), read from the user's copy in the official layout.

::

    ROOT/leftImg8bit/{split}/{city}/{city}_{seq:06}_{frame:06}_leftImg8bit.png   8-bit RGB
    ROOT/disparity/{split}/{city}/{city}_{seq:06}_{frame:06}_disparity.png       16-bit
    ROOT/camera/{split}/{city}/{city}_{seq:06}_{frame:06}_camera.json            extrinsic.baseline, intrinsic.fx
    ROOT/gtFine/{split}/{city}/{city}_{seq:06}_{frame:06}_gtFine_labelIds.png    8-bit label ids 0..33

Frames are the ``*_leftImg8bit.png`` files of a split (sorted); the other three files of each
frame must exist (checked at load, the missing ones are named).

Depth: a disparity pixel ``p > 0`` means ``d = (p − 1) / 256`` pixels, and depth (metres) =
``baseline · fx / d`` with the frame's camera file. ``p = 0`` is invalid, and so is ``p = 1``
(``d = 0``, infinitely far): both give depth 0. Normalisation: rgb /255 then ImageNet
mean/std; depth (m) mean 31.72, std 38.70, with invalid depth (0) kept at exactly 0.

Label convention: the standard labelId → trainId mapping (7 road → 0, … 33 bicycle → 18);
every other id is void and becomes 255, the bundle's ``ignore_index``; ``num_classes = 19``.

Splits: the official test split has no public labels, so the official ``val`` (500 frames)
is the test split and is never used for model selection. With ``validation="carve"``
(default) validation is a seeded random ``val_fraction`` (default 0.1) of the training
frames (seed = the ``seed`` argument) and train keeps the rest; the carve-out is per frame, so
validation frames share cities with training frames. ``validation="official"`` uses the
official val for validation AND test (all of train is trained on; then model selection sees
the test frames — report that). Augmentation and resampling: see
:mod:`mmanet.data.rgbd_segmentation`; ``image_size`` defaults to ``[512, 1024]`` (the
paper's 1024×512), and metrics are computed at that size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mmanet.data.base import DataBundle, DataError, DataUnavailableError
from mmanet.data.image_io import read_image
from mmanet.data.registry import DatasetEntry, register_dataset
from mmanet.data.rgbd_segmentation import (
    IGNORE_INDEX,
    MODALITIES,
    TASK,
    DepthStats,
    RGBDFrame,
    SegmentationOptions,
    carve_validation,
    label_table,
    lazy_datasets,
    map_labels,
    require_files,
    require_root,
    segmentation_bundle,
)
from mmanet.data.transforms import Size

#: labelId → trainId of the 19 evaluated classes (every other labelId is void)
TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
NUM_CLASSES = len(CLASS_NAMES)
#: 8-bit labelId → class index (void → IGNORE_INDEX)
LABEL_TABLE = label_table(TRAIN_IDS, 256, default=IGNORE_INDEX)
DEPTH = DepthStats(mean=31.72, std=38.70, unit="m")
VALIDATION = ("carve", "official")
#: the folders of the layout and the suffix that replaces ``leftImg8bit.png`` in each
FOLDERS = {"rgb": "leftImg8bit", "disparity": "disparity", "camera": "camera", "label": "gtFine"}
SUFFIXES = {
    "rgb": "leftImg8bit.png",
    "disparity": "disparity.png",
    "camera": "camera.json",
    "label": "gtFine_labelIds.png",
}
LAYOUT = (
    "leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png with the matching "
    "disparity/…_disparity.png (16-bit), camera/…_camera.json (extrinsic.baseline, intrinsic.fx) and "
    "gtFine/…_gtFine_labelIds.png (8-bit label ids) in the same split/city folders"
)
SPLITS = ("train", "val")


@dataclass(frozen=True)
class CityscapesFrame:
    """The four files of one frame; ``context`` is ``split/city/stem`` for error messages."""

    rgb: Path
    disparity: Path
    camera: Path
    label: Path
    context: str


def read_camera(path: Path, context: str) -> tuple[float, float]:
    """``(baseline m, fx px)`` from a ``*_camera.json`` file; a DataError naming it if malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        baseline, fx = float(data["extrinsic"]["baseline"]), float(data["intrinsic"]["fx"])
    except FileNotFoundError:
        raise DataError(f"camera file not found ({context}: {path})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"camera file needs extrinsic.baseline and intrinsic.fx ({context}: {path}): {err}") from None
    if not (baseline > 0 and fx > 0):
        raise DataError(f"camera baseline and fx must be positive, got {baseline}, {fx} ({context}: {path})")
    return baseline, fx


def disparity_to_depth(pixels: Tensor, baseline: float, fx: float) -> Tensor:
    """16-bit disparity PNG values → depth in metres (``baseline · fx / ((p − 1) / 256)``; 0 where invalid)."""
    disparity = (pixels.double() - 1.0) / 256.0
    valid = disparity > 0
    depth = torch.where(valid, baseline * fx / disparity.clamp_min(1e-12), torch.zeros((), dtype=torch.float64))
    return depth.float()


class CityscapesReader:
    """Decodes :class:`CityscapesFrame` records (Pillow via :func:`~mmanet.data.image_io.read_image`)."""

    def frame(self, record: CityscapesFrame) -> RGBDFrame:
        rgb = read_image(record.rgb, "RGB", record.context)
        baseline, fx = read_camera(record.camera, record.context)
        depth = disparity_to_depth(read_image(record.disparity, "I;16", record.context), baseline, fx)
        return RGBDFrame(rgb, depth, self.label(record), f"{record.context}: {record.rgb}")

    def label(self, record: CityscapesFrame) -> Tensor:
        raw = read_image(record.label, "L", record.context)[0]
        return map_labels(raw, LABEL_TABLE, f"{record.context}: {record.label}")


def read_split(root: Path, split: str) -> list[CityscapesFrame]:
    """Every frame of ``split`` (sorted by city and name); missing companion files are a DataError."""
    images = root / FOLDERS["rgb"] / split
    if not images.is_dir():
        raise DataUnavailableError(f"Cityscapes folder {images} not found. Expected under {root}: {LAYOUT}")
    frames = []
    for rgb in sorted(images.glob(f"*/*_{SUFFIXES['rgb']}")):
        stem = rgb.name[: -len(SUFFIXES["rgb"])]
        city = rgb.parent.name
        paths = {kind: root / folder / split / city / f"{stem}{SUFFIXES[kind]}" for kind, folder in FOLDERS.items()}
        frames.append(CityscapesFrame(**paths, context=f"{split}/{city}/{stem.rstrip('_')}"))
    if not frames:
        raise DataError(f"no *_{SUFFIXES['rgb']} images in {images}/<city>/. Expected: {LAYOUT}")
    for kind in ("disparity", "camera", "label"):
        require_files([getattr(f, kind) for f in frames], f"Cityscapes {split} {FOLDERS[kind]} files")
    return frames


def availability(root: str | Path | None) -> tuple[bool, str]:
    try:
        base = require_root(root, "Cityscapes", LAYOUT)
    except DataError as err:
        return False, str(err)
    missing = [
        f"{folder}/{split}" for folder in FOLDERS.values() for split in SPLITS if not (base / folder / split).is_dir()
    ]
    if missing:
        return False, f"Cityscapes folder(s) {missing} not found under {base}. Expected: {LAYOUT}"
    return True, f"Cityscapes in {base}"


def load(
    root: str | Path | None = None,
    seed: int = 0,
    image_size: Size = (512, 1024),
    augment: bool = True,
    max_samples_per_split: int | None = None,
    val_fraction: float = 0.1,
    validation: str = "carve",
) -> DataBundle:
    """Train / val / test with test = the official val split (see the module docstring).

    ``image_size``: ``[H, W]`` of every sample (default ``[512, 1024]``); ``augment``: training
    augmentation on/off; ``max_samples_per_split``: a seeded random subset per split;
    ``validation``: ``"carve"`` (default; val = seeded ``val_fraction`` of train) or
    ``"official"`` (val = test = the official val split).
    """
    options = SegmentationOptions.parse(image_size, augment, max_samples_per_split, val_fraction)
    if validation not in VALIDATION:
        raise DataError(f"unknown Cityscapes validation {validation!r}; valid: {list(VALIDATION)}")
    base = require_root(root, "Cityscapes", LAYOUT)
    train, official_val = read_split(base, "train"), read_split(base, "val")
    if validation == "carve":
        keep, held_out = carve_validation(len(train), options.val_fraction, seed)
        records = {"train": [train[i] for i in keep], "val": [train[i] for i in held_out], "test": official_val}
    else:
        records = {"train": train, "val": official_val, "test": official_val}
    reader = CityscapesReader()
    splits = {split: (reader, items) for split, items in records.items()}
    datasets = lazy_datasets(splits, options, DEPTH, seed, "Cityscapes")
    return segmentation_bundle("cityscapes", datasets, CLASS_NAMES, depth=DEPTH)


register_dataset(
    DatasetEntry(
        name="cityscapes",
        modalities=MODALITIES,
        task=TASK,
        description="Cityscapes RGB-D segmentation, 19 classes + void (255), from data.root with leftImg8bit/, "
        "disparity/, camera/ and gtFine/ (train, val); test = official val, validation = seeded val_fraction of "
        "train (options: image_size, augment, max_samples_per_split, val_fraction, validation)",
        load=load,
        availability=availability,
    )
)
