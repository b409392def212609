"""Tiny NYUv2 and Cityscapes copies in their published layouts (docs/datasets.md), for tests and smoke runs.

Every frame is a small (default 24×32) scene: a top band (wall / sky), a bottom band (floor /
road) and one rectangular object of a random class, with a void outline around the object.
The signal is learnable from either modality: rgb is the class's palette colour plus a little
noise (:func:`palette_class` decodes it back), and depth is a fixed value per label id
(NYUv2: :data:`NYU_DEPTH_BY_CLASS` in mm; Cityscapes: :data:`CITY_DEPTH_BY_ID` in metres), so
a test can recover the label from the depth pixel by pixel. Invalid depth: NYUv2's raw depth
and Cityscapes' disparity have random holes (and Cityscapes a ``p = 1`` block, d = 0).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

# ----------------------------------------------------------------------------- shared scene layout


def scene_layout(
    rng: np.random.Generator, height: int, width: int, top: int, bottom: int, objects: Sequence[int], void: int
) -> np.ndarray:
    """``(H, W)`` ids: ``top`` above a random horizon, ``bottom`` below, a random-class object, void outline."""
    label = np.full((height, width), top, dtype=np.int64)
    horizon = int(rng.integers(height // 3, height // 2 + 1))
    label[horizon:] = bottom
    oh, ow = int(rng.integers(height // 4, height // 2)), int(rng.integers(width // 5, width // 3))
    y0, x0 = int(rng.integers(1, height - oh - 1)), int(rng.integers(1, width - ow - 1))
    label[y0 - 1 : y0 + oh + 1, x0 - 1 : x0 + ow + 1] = void
    label[y0 : y0 + oh, x0 : x0 + ow] = int(rng.choice(objects))
    return label


def palette_rgb(rng: np.random.Generator, label: np.ndarray, palette: Mapping[int, tuple[int, int, int]]) -> np.ndarray:
    """``(H, W, 3)`` uint8: every pixel its id's palette colour plus N(0, 4) noise."""
    rgb = np.zeros((*label.shape, 3), dtype=np.float64)
    for value, colour in palette.items():
        rgb[label == value] = colour
    return np.clip(rgb + rng.normal(0, 4, size=rgb.shape), 0, 255).round().astype(np.uint8)


def palette_class(rgb, palette: Mapping[int, tuple[int, int, int]]) -> np.ndarray:
    """Decode ``(3, H, W)`` 0..255 rgb (tensor or array) to ``(H, W)`` ids: the nearest palette colour."""
    keys = np.array(list(palette))
    colours = np.array([palette[k] for k in keys], dtype=np.float64)  # (P, 3)
    pixels = np.asarray(rgb, dtype=np.float64).reshape(3, -1).T  # (HW, 3)
    nearest = ((pixels[:, None, :] - colours[None]) ** 2).sum(-1).argmin(1)
    return keys[nearest].reshape(np.asarray(rgb).shape[1:])


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# ----------------------------------------------------------------------------- NYUv2

#: 40-class ids used: wall (top), floor (bottom), objects: chair, table, otherprop (40)
NYU_WALL, NYU_FLOOR, NYU_OBJECTS = 1, 2, (5, 7, 40)
#: inpainted depth in mm per 40-class id (0 = void outline): label → depth is exact
NYU_DEPTH_BY_CLASS = {0: 900, NYU_WALL: 3500, NYU_FLOOR: 2200, 5: 1300, 7: 1600, 40: 1900}
NYU_PALETTE = {0: (0, 0, 0), NYU_WALL: (200, 200, 180), NYU_FLOOR: (120, 80, 40), 5: (220, 40, 40),
               7: (40, 200, 40), 40: (40, 40, 220)}  # fmt: skip
#: raw 894-class ids that the fixture's mapping sends to each used 40-class id (two per class)
NYU_RAW_IDS = {NYU_WALL: (21, 300), NYU_FLOOR: (11, 894), 5: (5, 77), 7: (19, 450), 40: (1, 600)}
MAT_HEADER_SIZE = 512


@dataclass
class NYUv2Scenes:
    """The scene data both NYUv2 forms are written from (frame ``i`` of the arrays has 1-based index ``i + 1``)."""

    rgb: np.ndarray  # (N, H, W, 3) uint8
    depth_mm: np.ndarray  # (N, H, W) uint16, inpainted (no zeros)
    raw_depth_mm: np.ndarray  # (N, H, W) uint16, 0 = invalid
    labels_894: np.ndarray  # (N, H, W) uint16, 0 = unlabelled
    map_class: np.ndarray  # (894,) 894-class id − 1 → 40-class id
    train: list[int]  # 1-based frame numbers
    test: list[int]
    root: Path | None = None

    @property
    def labels_40(self) -> np.ndarray:
        """(N, H, W) uint8 40-class ids, 0 = void (what ``labels_40/`` holds)."""
        return np.concatenate([[0], self.map_class])[self.labels_894].astype(np.uint8)

    def index(self, number: int) -> int:
        """Array position of the 1-based frame ``number``."""
        return number - 1


def nyuv2_scenes(count: int = 12, height: int = 24, width: int = 32, seed: int = 0, test_every: int = 3) -> NYUv2Scenes:
    """``count`` scenes; every ``test_every``-th frame (1-based) is a test frame, the others train."""
    rng = np.random.default_rng(seed)
    map_class = rng.integers(1, 41, size=894)
    for cls, raws in NYU_RAW_IDS.items():
        map_class[np.array(raws) - 1] = cls
    rgb, depth, raw, labels = [], [], [], []
    for _ in range(count):
        label40 = scene_layout(rng, height, width, NYU_WALL, NYU_FLOOR, NYU_OBJECTS, void=0)
        ids = np.zeros_like(label40)
        for cls, raws in NYU_RAW_IDS.items():
            mask = label40 == cls
            ids[mask] = rng.choice(raws, size=int(mask.sum()))
        mm = np.vectorize(NYU_DEPTH_BY_CLASS.get)(label40).astype(np.uint16)
        holes = rng.random((height, width)) < 0.08
        rgb.append(palette_rgb(rng, label40, NYU_PALETTE))
        depth.append(mm)
        raw.append(np.where(holes, 0, mm).astype(np.uint16))
        labels.append(ids.astype(np.uint16))
    numbers = list(range(1, count + 1))
    return NYUv2Scenes(
        np.stack(rgb), np.stack(depth), np.stack(raw), np.stack(labels), map_class,
        train=[n for n in numbers if n % test_every], test=[n for n in numbers if n % test_every == 0],
    )  # fmt: skip


def write_nyuv2_prepared(root: Path, scenes: NYUv2Scenes | None = None, **scene_options) -> NYUv2Scenes:
    """The prepared layout: ``train.txt``/``test.txt`` and ``{train,test}/rgb|depth|depth_raw|labels_40/NNNN.png``."""
    root = Path(root)
    scenes = scenes or nyuv2_scenes(**scene_options)
    labels_40 = scenes.labels_40
    for split, numbers in (("train", scenes.train), ("test", scenes.test)):
        for n in numbers:
            i, name = scenes.index(n), f"{n:04d}.png"
            _save_png(root / split / "rgb" / name, scenes.rgb[i])
            _save_png(root / split / "depth" / name, scenes.depth_mm[i])
            _save_png(root / split / "depth_raw" / name, scenes.raw_depth_mm[i])
            _save_png(root / split / "labels_40" / name, labels_40[i])
        (root / f"{split}.txt").write_text("".join(f"{n:04d}\n" for n in numbers))
    scenes.root = root
    return scenes


def _matlab_v73(path: Path, arrays: Mapping[str, tuple[np.ndarray, str]]) -> None:
    """A MATLAB v7.3 file: HDF5 behind a 512-byte MAT header; arrays stored as MATLAB does (axes reversed)."""
    with h5py.File(path, "w", userblock_size=MAT_HEADER_SIZE) as f:
        for key, (array, matlab_class) in arrays.items():
            dataset = f.create_dataset(key, data=array)
            dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class)
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header)


def write_nyuv2_mat(
    root: Path,
    scenes: NYUv2Scenes | None = None,
    splits_format: str = "v5",
    mapping_format: str = "v5",
    **scene_options,
) -> NYUv2Scenes:
    """``nyu_depth_v2_labeled.mat`` (v7.3; ``images`` N×3×W×H, ``depths``/``rawDepths`` N×W×H metres,
    ``labels`` N×W×H 0..894), ``classMapping40.mat`` (``mapClass`` 1×894, ``className``) and ``splits.mat``
    (``trainNdxs``/``testNdxs`` column vectors, 1-based); the small files as MATLAB v5 or v7.3."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    scenes = scenes or nyuv2_scenes(**scene_options)
    hw = (0, 2, 1)  # (N, H, W) → (N, W, H): MATLAB's H×W×N as h5py sees it
    _matlab_v73(
        root / "nyu_depth_v2_labeled.mat",
        {
            "images": (scenes.rgb.transpose(0, 3, 2, 1), "uint8"),
            "depths": ((scenes.depth_mm / 1000.0).astype(np.float32).transpose(hw), "single"),
            "rawDepths": ((scenes.raw_depth_mm / 1000.0).astype(np.float32).transpose(hw), "single"),
            "labels": (scenes.labels_894.transpose(hw), "uint16"),
        },
    )
    mapping = scenes.map_class.astype(np.float64)[None, :]  # 1×894 row
    splits = {
        k: np.asarray(v, dtype=np.float64)[:, None] for k, v in (("trainNdxs", scenes.train), ("testNdxs", scenes.test))
    }
    if mapping_format == "v5":
        names = np.empty((1, 40), dtype=object)
        names[0, :] = [f"class{k}" for k in range(1, 41)]
        scipy.io.savemat(root / "classMapping40.mat", {"mapClass": mapping, "className": names})
    else:
        _matlab_v73(root / "classMapping40.mat", {"mapClass": (mapping.T, "double")})
    if splits_format == "v5":
        scipy.io.savemat(root / "splits.mat", splits)
    else:
        _matlab_v73(root / "splits.mat", {k: (v.T, "double") for k, v in splits.items()})
    scenes.root = root
    return scenes


# ----------------------------------------------------------------------------- Cityscapes

CITY_SKY, CITY_ROAD, CITY_OBJECTS = 23, 7, (26, 24, 33)  # sky, road; car, person, bicycle
#: void label ids the fixture uses: 0 unlabelled (object outline), 1 ego vehicle (bottom row), 4 static
CITY_VOID_IDS = (0, 1, 4)
#: depth in metres per label id: label → depth is exact wherever the disparity is valid
CITY_DEPTH_BY_ID = {0: 9.0, 1: 2.0, 4: 15.0, CITY_SKY: 150.0, CITY_ROAD: 12.0, 26: 8.0, 24: 6.0, 33: 5.0}
CITY_PALETTE = {0: (0, 0, 0), 1: (0, 0, 0), 4: (0, 0, 0), CITY_SKY: (70, 130, 180), CITY_ROAD: (128, 64, 128),
                26: (0, 0, 142), 24: (220, 20, 60), 33: (119, 11, 32)}  # fmt: skip
BASELINE, FX = 0.209313, 2262.52


@dataclass
class CityscapesFrameData:
    """What one written frame holds (``stem`` = ``{city}_{seq:06}_{frame:06}``)."""

    split: str
    city: str
    stem: str
    rgb: np.ndarray  # (H, W, 3) uint8
    disparity: np.ndarray  # (H, W) uint16 PNG values
    label_ids: np.ndarray  # (H, W) uint8
    baseline: float
    fx: float


@dataclass
class CityscapesFixture:
    root: Path
    #: per split, frames in the loader's order (sorted by city, then name)
    frames: dict[str, list[CityscapesFrameData]] = field(default_factory=dict)

    def path(self, kind: str, frame: CityscapesFrameData) -> Path:
        folder, suffix = {
            "rgb": ("leftImg8bit", "leftImg8bit.png"),
            "disparity": ("disparity", "disparity.png"),
            "camera": ("camera", "camera.json"),
            "label": ("gtFine", "gtFine_labelIds.png"),
        }[kind]
        return self.root / folder / frame.split / frame.city / f"{frame.stem}_{suffix}"


def write_cityscapes(
    root: Path,
    cities: Mapping[str, Sequence[str]] | None = None,
    frames_per_city: int = 3,
    height: int = 24,
    width: int = 32,
    seed: int = 0,
) -> CityscapesFixture:
    """The official layout for ``cities`` per split (default: train aachen, bochum; val frankfurt; test
    berlin with images only), with 16-bit disparity PNGs, camera json, labelIds and colour label PNGs."""
    root = Path(root)
    cities = cities or {"train": ("aachen", "bochum"), "val": ("frankfurt",), "test": ("berlin",)}
    rng = np.random.default_rng(seed)
    fixture = CityscapesFixture(root)
    for split, names in cities.items():
        for city in sorted(names):
            for k in range(frames_per_city):
                stem = f"{city}_{k:06d}_{19 + 10 * k:06d}"
                ids = scene_layout(rng, height, width, CITY_SKY, CITY_ROAD, CITY_OBJECTS, void=0)
                ids[-1, :] = 1  # ego vehicle
                ids[int(rng.integers(0, height // 3)), : width // 4] = 4  # a static strip
                baseline, fx = BASELINE * (1 + 0.01 * k), FX * (1 - 0.005 * k)
                metres = np.vectorize(CITY_DEPTH_BY_ID.get)(ids).astype(np.float64)
                p = np.round(baseline * fx / metres * 256.0 + 1.0)
                p[rng.random((height, width)) < 0.06] = 0  # invalid
                p[:2, -2:] = 1  # zero disparity: infinitely far, invalid as well
                frame = CityscapesFrameData(
                    split, city, stem, palette_rgb(rng, ids, CITY_PALETTE), p.astype(np.uint16),
                    ids.astype(np.uint8), baseline, fx,
                )  # fmt: skip
                _save_png(fixture.path("rgb", frame), frame.rgb)
                _save_png(fixture.path("disparity", frame), frame.disparity)
                camera = {
                    "extrinsic": {"baseline": baseline, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.026,
                                  "yaw": 0.0195, "z": 1.18},
                    "intrinsic": {"fx": fx, "fy": fx, "u0": width / 2, "v0": height / 2},
                }  # fmt: skip
                fixture.path("camera", frame).parent.mkdir(parents=True, exist_ok=True)
                fixture.path("camera", frame).write_text(json.dumps(camera, indent=4))
                if split != "test":  # the test split ships no usable labels
                    _save_png(fixture.path("label", frame), frame.label_ids)
                    colour = palette_rgb(np.random.default_rng(0), ids, CITY_PALETTE)
                    _save_png(fixture.path("label", frame).with_name(f"{stem}_gtFine_color.png"), colour)
                fixture.frames.setdefault(split, []).append(frame)
    return fixture
