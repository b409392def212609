"""NYUv2 (rgb/depth segmentation, 40 classes + void), read from the user's copy in one of two published forms.

``data.root`` holds either form (``source="auto"`` takes the prepared layout when both are there):

* **prepared** (the common RGB-D segmentation preparation scripts)::

      ROOT/train.txt  ROOT/test.txt                 one 4-digit index per line (0003, 0004 …)
      ROOT/{train,test}/rgb/0003.png                8-bit RGB
      ROOT/{train,test}/depth/0003.png              uint16 millimetres (inpainted)
      ROOT/{train,test}/depth_raw/0003.png          uint16 millimetres, 0 = invalid
      ROOT/{train,test}/labels_40/0003.png          uint8, 0 = void, 1..40 classes

* **mat**: ``ROOT/nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5, read lazily with h5py, one
  frame per access; keys ``images`` 1449×3×640×480 uint8, ``depths`` / ``rawDepths``
  1449×640×480 metres, ``labels`` 1449×640×480 with 0 = unlabelled and 1..894, all with the
  two image axes stored as W×H and transposed here), ``ROOT/classMapping40.mat`` (``mapClass``:
  the 894 → 40 mapping) and ``ROOT/splits.mat`` (``trainNdxs`` / ``testNdxs``, 1-based). The
  two small files may be MATLAB v5 (scipy) or v7.3 (h5py). Depth in metres becomes millimetres
  (× 1000, kept as float; the prepared PNGs hold the same values truncated to whole mm).
  This form needs h5py (and scipy for v5 files), imported only when it is read.

Label convention: class index = NYUv2 40-class id − 1 (0 = wall … 39 = otherprop); void
(0 in ``labels_40``, 0 = unlabelled in the .mat) becomes 255, the bundle's ``ignore_index``.
So ``num_classes = 40`` and ``class_names`` start at wall.

Splits: NYUv2 has train (795) and test (654) only. Validation is carved out of train: a
seeded random ``val_fraction`` (default 0.1) of the training frames, drawn with the ``seed``
argument; train keeps the rest and test is the official test split, untouched. The
carve-out is per frame, so validation frames may come from the same rooms as training frames
(the official split is room-disjoint): use validation for model selection, report on test.

Depth: ``depth="inpainted"`` (default: ``depth/`` or ``depths``) or ``"raw"`` (``depth_raw/``
or ``rawDepths``, 0 = invalid). Normalisation: rgb /255 then ImageNet mean/std; depth (mm)
mean 2841.95, std 1417.26, with invalid depth (0) kept at exactly 0. Augmentation and
resampling: see :mod:`mmanet.data.rgbd_segmentation`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmanet.data.base import DataBundle, DataError, DataUnavailableError
from mmanet.data.face_antispoofing import line_context, list_lines
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

CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
    "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)  # fmt: skip
NUM_CLASSES = len(CLASS_NAMES)
DEPTH = DepthStats(mean=2841.95, std=1417.26, unit="mm")
DEPTH_KINDS = ("inpainted", "raw")
SOURCES = ("auto", "prepared", "mat")

LISTS = {"train": "train.txt", "test": "test.txt"}
#: prepared layout: depth folder per depth kind
DEPTH_FOLDERS = {"inpainted": "depth", "raw": "depth_raw"}
LABEL_FOLDER = "labels_40"
MAT_FILE, MAPPING_FILE, SPLITS_FILE = "nyu_depth_v2_labeled.mat", "classMapping40.mat", "splits.mat"
#: mat form: dataset key per depth kind
MAT_DEPTH_KEYS = {"inpainted": "depths", "raw": "rawDepths"}
MAT_SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs"}

PREPARED_LAYOUT = (
    "train.txt and test.txt (one 4-digit index per line) with {train,test}/rgb/<index>.png (8-bit RGB), "
    "{train,test}/depth/<index>.png and depth_raw/<index>.png (uint16 mm), {train,test}/labels_40/<index>.png "
    "(uint8, 0 = void, 1..40)"
)
MAT_LAYOUT = (
    f"{MAT_FILE} (MATLAB v7.3 with images, depths, rawDepths, labels), {MAPPING_FILE} (mapClass: 894 → 40) "
    f"and {SPLITS_FILE} (trainNdxs, testNdxs, 1-based)"
)
LAYOUT = f"either the prepared layout — {PREPARED_LAYOUT} — or the raw files {MAT_LAYOUT}"

#: 40-class id (0 = void) → class index; ids above 40 are errors
PREPARED_TABLE = label_table({0: IGNORE_INDEX, **{k: k - 1 for k in range(1, NUM_CLASSES + 1)}}, 256)


# ----------------------------------------------------------------------------- prepared layout


@dataclass(frozen=True)
class PreparedFrame:
    """The files of one frame of the prepared layout and where it was listed."""

    rgb: Path
    depth: Path
    label: Path
    context: str


class PreparedReader:
    """Decodes :class:`PreparedFrame` records (Pillow, via :func:`~mmanet.data.image_io.read_image`)."""

    def frame(self, record: PreparedFrame) -> RGBDFrame:
        rgb = read_image(record.rgb, "RGB", record.context)
        depth = read_image(record.depth, "I;16", record.context)
        return RGBDFrame(rgb, depth, self.label(record), f"{record.context}: {record.rgb}")

    def label(self, record: PreparedFrame) -> Tensor:
        raw = read_image(record.label, "L", record.context)[0]
        return map_labels(raw, PREPARED_TABLE, f"{record.context}: {record.label}")


def read_prepared_split(root: Path, split: str, depth: str) -> list[PreparedFrame]:
    """The frames listed in ``ROOT/<split>.txt``; a malformed line or a missing file is a DataError."""
    path = root / LISTS[split]
    if not path.is_file():
        raise DataUnavailableError(f"NYUv2 list {path} not found. Expected under {root}: {PREPARED_LAYOUT}")
    frames = []
    for number, fields in list_lines(path):
        if len(fields) != 1 or not fields[0].isdigit():
            raise DataError(f"{path} line {number}: expected one frame index such as 0003, got {' '.join(fields)!r}")
        name = f"{fields[0]}.png"
        folder = root / split
        frames.append(
            PreparedFrame(
                folder / "rgb" / name,
                folder / DEPTH_FOLDERS[depth] / name,
                folder / LABEL_FOLDER / name,
                line_context(path, number),
            )
        )
    for kind in ("rgb", "depth", "label"):
        require_files([getattr(f, kind) for f in frames], f"NYUv2 {split} {kind} images listed in {path}")
    return frames


# ----------------------------------------------------------------------------- mat form


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise DataError(f"reading MATLAB v7.3 files such as {MAT_FILE} needs h5py: pip install h5py") from None
    return h5py


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        import scipy.io
    except ImportError:
        raise DataError(f"reading MATLAB v5 files such as {path.name} needs scipy: pip install scipy") from None
    return scipy.io.loadmat(path)


def read_mat_vectors(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The named numeric arrays of a small MATLAB file, flattened: v5 via scipy.io, v7.3 (HDF5) via h5py."""
    if not path.is_file():
        raise DataUnavailableError(f"NYUv2 file {path} not found. Expected under {path.parent}: {MAT_LAYOUT}")
    try:
        content: Any = _loadmat(path)
        close = None
    except NotImplementedError:  # scipy's answer to a v7.3 file
        try:
            content = close = _h5py().File(path, "r")
        except OSError as err:
            raise DataError(f"cannot read {path} as a MATLAB v7.3 file: {err}") from None
    except (ValueError, OSError) as err:
        raise DataError(f"cannot read {path} as a MATLAB file: {err}") from None
    try:
        missing = [k for k in keys if k not in content]
        if missing:
            raise DataError(f"{path} has no variable(s) {missing}; expected {list(keys)}")
        return {k: np.asarray(content[k]).ravel() for k in keys}
    finally:
        if close is not None:
            close.close()


def _integers(values: np.ndarray, low: int, high: int, what: str) -> np.ndarray:
    """``values`` as int64 if every one is an integer in ``[low, high]``; a DataError naming ``what`` otherwise."""
    ints = np.rint(values).astype(np.int64)
    if values.size == 0 or not np.array_equal(ints, values) or ints.min() < low or ints.max() > high:
        raise DataError(f"{what} must be integers in {low}..{high}")
    return ints


def mat_label_table(mapping: np.ndarray) -> Tensor:
    """894-class id (0 = unlabelled) → class index: ``mapClass[id − 1] − 1``, void → :data:`IGNORE_INDEX`."""
    classes = _integers(mapping, 1, NUM_CLASSES, f"{MAPPING_FILE} mapClass entries")
    return label_table([IGNORE_INDEX, *(classes - 1).tolist()], len(classes) + 1)


class MatReader:
    """Frames of ``nyu_depth_v2_labeled.mat`` by 0-based index, one at a time (h5py, opened lazily per process)."""

    def __init__(self, path: Path, depth_key: str, table: Tensor) -> None:
        self.path = path
        self.depth_key = depth_key
        self.table = table
        self._file: Any = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": None}  # an open HDF5 handle does not cross processes

    def _data(self) -> Any:
        if self._file is None or self._pid != os.getpid():
            self._file = _h5py().File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def _where(self, index: int) -> str:
        return f"{self.path} image {index + 1}"

    def _read(self, key: str, index: int) -> np.ndarray:
        try:
            return np.asarray(self._data()[key][index])
        except (OSError, KeyError) as err:
            raise DataError(f"cannot read {key} ({self._where(index)}): {err}") from err

    def frame(self, index: int) -> RGBDFrame:
        rgb = torch.from_numpy(np.ascontiguousarray(self._read("images", index).transpose(0, 2, 1))).float()
        metres = np.nan_to_num(self._read(self.depth_key, index).T.astype(np.float64), nan=0.0, posinf=0.0)
        depth = torch.from_numpy(np.clip(metres, 0.0, None) * 1000.0).float()[None]
        return RGBDFrame(rgb, depth, self.label(index), self._where(index))

    def label(self, index: int) -> Tensor:
        raw = torch.from_numpy(self._read("labels", index).T.astype(np.int64))
        return map_labels(raw, self.table, self._where(index))


def check_mat_file(path: Path, depth_key: str) -> int:
    """The number of frames in ``nyu_depth_v2_labeled.mat`` after checking its keys and shapes."""
    if not path.is_file():
        raise DataUnavailableError(f"NYUv2 file {path} not found. Expected under {path.parent}: {MAT_LAYOUT}")
    try:
        with _h5py().File(path, "r") as data:
            missing = [k for k in ("images", depth_key, "labels") if k not in data]
            if missing:
                raise DataError(f"{path} has no dataset(s) {missing}")
            shapes = {k: tuple(data[k].shape) for k in ("images", depth_key, "labels")}
            rgb_dtype = data["images"].dtype
    except OSError as err:
        raise DataError(f"cannot read {path} as a MATLAB v7.3 (HDF5) file: {err}") from None
    n, _, w, h = shapes["images"] if len(shapes["images"]) == 4 else (0, 0, 0, 0)
    if shapes["images"] != (n, 3, w, h) or shapes[depth_key] != (n, w, h) or shapes["labels"] != (n, w, h):
        raise DataError(f"{path}: expected images N×3×W×H, {depth_key} and labels N×W×H, got {shapes}")
    if rgb_dtype != np.uint8:  # the rgb modality takes 8-bit images: more bits would be clipped at 255
        raise DataError(
            f"{path}: 'images' holds {rgb_dtype} values; the rgb modality takes 8-bit (uint8) images, as the published "
            "file has — converting would clip or round them"
        )
    return n


def read_mat_splits(root: Path, depth: str) -> tuple[MatReader, dict[str, list[int]]]:
    """The reader of the .mat and the 0-based frame indices of the official train and test splits."""
    depth_key = MAT_DEPTH_KEYS[depth]
    count = check_mat_file(root / MAT_FILE, depth_key)
    mapping = read_mat_vectors(root / MAPPING_FILE, ["mapClass"])["mapClass"]
    indices = read_mat_vectors(root / SPLITS_FILE, list(MAT_SPLIT_KEYS.values()))
    splits = {
        split: (_integers(indices[key], 1, count, f"{SPLITS_FILE} {key} (1-based frame numbers)") - 1).tolist()
        for split, key in MAT_SPLIT_KEYS.items()
    }
    return MatReader(root / MAT_FILE, depth_key, mat_label_table(mapping)), splits


# ----------------------------------------------------------------------------- entry points


def _has_prepared(root: Path) -> bool:
    return all((root / name).is_file() for name in LISTS.values())


def _has_mat(root: Path) -> bool:
    return all((root / name).is_file() for name in (MAT_FILE, MAPPING_FILE, SPLITS_FILE))


def resolve_source(root: str | Path | None, source: str = "auto") -> tuple[Path, str]:
    """``(root, "prepared" | "mat")``; a DataUnavailableError saying what is expected where if neither is there."""
    if source not in SOURCES:
        raise DataError(f"unknown NYUv2 source {source!r}; valid: {list(SOURCES)}")
    base = require_root(root, "NYUv2", LAYOUT)
    if source in ("auto", "prepared") and _has_prepared(base):
        return base, "prepared"
    if source in ("auto", "mat") and _has_mat(base):
        return base, "mat"
    if source == "prepared":
        missing = [n for n in LISTS.values() if not (base / n).is_file()]
        raise DataUnavailableError(
            f"NYUv2 prepared layout: {missing} not found under {base}. Expected: {PREPARED_LAYOUT}"
        )
    missing = [n for n in (MAT_FILE, MAPPING_FILE, SPLITS_FILE) if not (base / n).is_file()]
    if source == "mat":
        raise DataUnavailableError(f"NYUv2 raw files {missing} not found under {base}. Expected: {MAT_LAYOUT}")
    raise DataUnavailableError(
        f"NYUv2 not found under {base} (no train.txt/test.txt, missing {missing}). Expected: {LAYOUT}"
    )


def availability(root: str | Path | None) -> tuple[bool, str]:
    try:
        base, form = resolve_source(root)
    except DataError as err:
        return False, str(err)
    return True, f"NYUv2 {'prepared layout' if form == 'prepared' else 'raw .mat files'} in {base}"


def load(
    root: str | Path | None = None,
    seed: int = 0,
    image_size: Size = (480, 640),
    depth: str = "inpainted",
    augment: bool = True,
    max_samples_per_split: int | None = None,
    val_fraction: float = 0.1,
    source: str = "auto",
) -> DataBundle:
    """Train (minus the validation carve-out) / val (seeded ``val_fraction`` of train) / test (official).

    ``image_size``: ``[H, W]`` of every sample (default ``[480, 640]``, the native size);
    ``depth``: ``"inpainted"`` or ``"raw"``; ``augment``: training augmentation on/off;
    ``max_samples_per_split``: a seeded random subset per split for quick runs;
    ``val_fraction``: share of the training frames held out for validation (seed = ``seed``);
    ``source``: ``"auto"`` (prepared layout if present, else the .mat), ``"prepared"`` or ``"mat"``.
    """
    options = SegmentationOptions.parse(image_size, augment, max_samples_per_split, val_fraction)
    if depth not in DEPTH_KINDS:
        raise DataError(f"unknown NYUv2 depth {depth!r}; valid: {list(DEPTH_KINDS)}")
    base, form = resolve_source(root, source)
    reader: PreparedReader | MatReader
    if form == "prepared":
        reader = PreparedReader()
        official: dict[str, list[Any]] = {split: read_prepared_split(base, split, depth) for split in LISTS}
    else:
        reader, official = read_mat_splits(base, depth)
    keep, held_out = carve_validation(len(official["train"]), options.val_fraction, seed)
    records = {
        "train": [official["train"][i] for i in keep],
        "val": [official["train"][i] for i in held_out],
        "test": official["test"],
    }
    splits = {split: (reader, items) for split, items in records.items()}
    return segmentation_bundle("nyuv2", lazy_datasets(splits, options, DEPTH, seed, "NYUv2"), CLASS_NAMES, depth=DEPTH)


register_dataset(
    DatasetEntry(
        name="nyuv2",
        modalities=MODALITIES,
        task=TASK,
        description="NYUv2 RGB-D segmentation, 40 classes + void (255), from data.root in the prepared layout "
        "(train.txt, test.txt, {train,test}/rgb|depth|depth_raw|labels_40) or as nyu_depth_v2_labeled.mat with "
        "classMapping40.mat and splits.mat; validation = seeded val_fraction of train (options: image_size, depth, "
        "augment, max_samples_per_split, val_fraction, source)",
        load=load,
        availability=availability,
    )
)
