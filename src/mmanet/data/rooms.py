"""Synthetic RGB-D rooms (docs/design.md §6): the default segmentation dataset, rendered in memory at load.

Scenes come from :func:`mmanet.render.render_rooms`; scene ``i`` depends only on
``(seed, i)``. The splits take disjoint index blocks — train ``0 …``, val ``10⁶ …``, test
``2·10⁶ …`` — so they never overlap and each split's scenes do not depend on the other
splits' sizes. Nothing is cached on disk; the last few renders are kept in memory so that
loading the same data again in one process is immediate.

Label convention: renderer id 0 (void) → 255, the bundle's ``ignore_index``; ids 1..8 →
class indices 0..7 (wall, floor, ceiling, box, sphere, painting, rug, window), so
``num_classes = 8``. Normalisation: rgb /255 then ImageNet mean/std; depth (mm) mean 2857,
std 1365 (the generator's statistics over valid pixels), invalid depth (0) kept at exactly 0.

Access: without augmentation every split is an in-memory
:class:`~mmanet.data.base.ArrayMultimodalDataset` (batched ``__getitems__``); with
``augment`` (default) the training split applies the paired transforms per sample (random
scale, crop, flip and rgb jitter, seeded by ``(seed, epoch, index)``, see
:mod:`mmanet.data.rgbd_segmentation`), while val and test stay in-memory arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmanet import render
from mmanet.data.base import DataBundle, DataError, MultimodalDataset
from mmanet.data.registry import DatasetEntry, register_dataset
from mmanet.data.rgbd_segmentation import (
    IGNORE_INDEX,
    MODALITIES,
    TASK,
    DepthStats,
    RGBDFrame,
    RGBDSegmentationDataset,
    label_table,
    map_labels,
    materialise,
    parse_image_size,
    segmentation_bundle,
)

CLASS_NAMES = render.CLASS_NAMES[1:]
NUM_CLASSES = len(CLASS_NAMES)
DEPTH = DepthStats(mean=2857.0, std=1365.0, unit="mm")
#: first scene index of each split (splits hold fewer than SPLIT_STRIDE scenes)
SPLIT_STRIDE = 1_000_000
SPLIT_STARTS = {"train": 0, "val": SPLIT_STRIDE, "test": 2 * SPLIT_STRIDE}
#: renderer id (0 = void) → class index
LABEL_TABLE = label_table({0: IGNORE_INDEX, **{k: k - 1 for k in range(1, render.NUM_CLASSES)}}, 256)


@lru_cache(maxsize=3)
def _render(count: int, seed: int, height: int, width: int, start: int) -> dict[str, np.ndarray]:
    """Render (and remember) one split's scenes; the arrays are read-only, as they are shared."""
    arrays = render.render_rooms(count, seed, height, width, start=start)
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


@dataclass(frozen=True)
class RoomArrays:
    """Rendered scenes read by index: ``rgb`` (N, H, W, 3) uint8, ``depth`` (N, H, W) uint16 mm,
    ``labels`` (N, H, W) uint8 renderer ids."""

    rgb: np.ndarray
    depth: np.ndarray
    labels: np.ndarray
    split: str

    def frame(self, index: int) -> RGBDFrame:
        rgb = torch.from_numpy(self.rgb[index].transpose(2, 0, 1).astype(np.float32))
        depth = torch.from_numpy(self.depth[index].astype(np.float32))[None]
        return RGBDFrame(rgb, depth, self.label(index), self._where(index))

    def label(self, index: int) -> Tensor:
        return map_labels(torch.from_numpy(self.labels[index].astype(np.int64)), LABEL_TABLE, self._where(index))

    def _where(self, index: int) -> str:
        return f"rooms {self.split} scene {index}"


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < SPLIT_STRIDE:
        raise DataError(f"{name} must be an integer in 1..{SPLIT_STRIDE - 1}, got {value!r}")
    return value


def availability(root: str | Path | None) -> tuple[bool, str]:
    return True, "synthetic RGB-D rooms, rendered in memory (no files needed)"


def load(
    root: str | Path | None = None,
    seed: int = 0,
    num_train: int = 1200,
    num_val: int = 300,
    num_test: int = 300,
    height: int = 96,
    width: int = 128,
    augment: bool = True,
) -> DataBundle:
    """Render the three splits (``root`` is ignored) and return them as a segmentation bundle.

    ``num_train`` / ``num_val`` / ``num_test``: scenes per split; ``height`` × ``width``: the
    rendered (= network input) size; ``augment``: per-sample training augmentation on/off.
    """
    counts = {"train": _count(num_train, "num_train"), "val": _count(num_val, "num_val")}
    counts["test"] = _count(num_test, "num_test")
    size = parse_image_size((height, width), "height/width")
    datasets: dict[str, MultimodalDataset] = {}
    for split, count in counts.items():
        arrays = _render(count, int(seed), *size, SPLIT_STARTS[split])
        reader = RoomArrays(arrays["rgb"], arrays["depth"], arrays["label"], split)
        lazy = RGBDSegmentationDataset(range(count), reader, size, DEPTH, augment and split == "train", seed)
        datasets[split] = lazy if lazy.augment else materialise(lazy)
    return segmentation_bundle("rooms", datasets, CLASS_NAMES, depth=DEPTH)


register_dataset(
    DatasetEntry(
        name="rooms",
        modalities=MODALITIES,
        task=TASK,
        description="synthetic RGB-D rooms (docs/design.md §6), 8 classes + void (255), rendered in memory from the "
        "seed (options: num_train, num_val, num_test, height, width, augment)",
        load=load,
        availability=availability,
    )
)
