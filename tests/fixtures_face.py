"""Tiny CASIA-SURF and CeFA copies in their published layouts (docs/datasets.md), for tests and smoke runs.

Images are small JPEGs whose modalities have different sizes (colour about 40×36 W×H and
varying per sample, depth 32×30, IR 28×28), stored as 3-channel JPEG like the real data.
Class signal, in every modality: a real face is a bright, finely textured ellipse (and a
rounded depth profile); an attack is a dark, flat one — a tiny CNN separates them in an epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

#: (H, W) of each stored modality; colour grows by 0..2 pixels per sample
SIZES = {"color": (36, 40), "depth": (30, 32), "ir": (28, 28)}
CASIA_ATTACKS = ("04_en_b", "05_enm_s", "06_enm_b")
CEFA_FOLDERS = {"color": "profile", "depth": "depth", "ir": "ir"}


@dataclass
class FaceFixture:
    """What was written: the root and, per split, the list label and realness of every sample in list order."""

    root: Path
    labels: dict[str, list[int]] = field(default_factory=dict)
    real: dict[str, list[bool]] = field(default_factory=dict)
    #: CeFA: frame count of every dev/test video, in list order
    frames: dict[str, list[int]] = field(default_factory=dict)

    def add(self, split: str, real: bool, real_label: int) -> int:
        label = real_label if real else 1 - real_label
        self.labels.setdefault(split, []).append(label)
        self.real.setdefault(split, []).append(real)
        return label


def face_image(rng: np.random.Generator, modality: str, real: bool, size: tuple[int, int]) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 face crop with the class signal described in the module doc."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = h / 2 + rng.uniform(-2, 2), w / 2 + rng.uniform(-2, 2)
    r2 = ((y - cy) / (0.42 * h)) ** 2 + ((x - cx) / (0.36 * w)) ** 2
    face = r2 < 1.0
    image = np.full((h, w), 40.0) + rng.normal(0, 6, size=(h, w))
    if real:
        texture = 25.0 * (((y.astype(int) // 2) + (x.astype(int) // 2)) % 2)
        value = 175.0 + texture + (40.0 * (1.0 - r2) if modality == "depth" else 0.0)
    else:
        value = np.full((h, w), 95.0)
    image[face] = value[face] + rng.normal(0, 6, size=int(face.sum()))
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def write_face(rng: np.random.Generator, paths: dict[str, Path], real: bool) -> None:
    """One sample: a JPEG per stored modality (``color``/``depth``/``ir`` → path), sizes per :data:`SIZES`."""
    grow = int(rng.integers(0, 3))
    for modality, path in paths.items():
        h, w = SIZES[modality]
        if modality == "color":
            h, w = h + grow, w + grow
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face_image(rng, modality, real, (h, w))).save(path, quality=92)


def _list_line(paths: list[str], label: int | None) -> str:
    return " ".join(paths) + (f" {label}\n" if label is not None else " \n")  # public lists: trailing space


# ----------------------------------------------------------------------------- CASIA-SURF


def write_casia_surf(
    root: Path,
    subjects: int = 4,
    frames: int = 3,
    val_samples: int = 6,
    test_samples: int = 8,
    seed: int = 0,
    real_label: int = 1,
) -> FaceFixture:
    """CASIA-SURF layout: per subject ``frames`` real frames and one frame per attack type (train),
    ``val_samples`` / ``test_samples`` half-real samples under ``Val/`` / ``Testing/``, all five lists."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    fixture = FaceFixture(root)
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    public: dict[str, list[str]] = {"val": [], "test": []}
    for s in range(subjects):
        subject = f"CLKJ_AS{5 + s:04d}"
        videos = [("real_part", "real", j * 10 + 1, True) for j in range(frames)]
        videos += [("fake_part", attack, 101, False) for attack in CASIA_ATTACKS]
        for part, video, frame, real in videos:
            rel = {m: f"Training/{part}/{subject}/{video}.rssdk/{m}/{frame}.jpg" for m in SIZES}
            write_face(rng, {m: root / p for m, p in rel.items()}, real)
            lines["train"].append(_list_line(list(rel.values()), fixture.add("train", real, real_label)))
    for split, folder, count in (("val", "Val", val_samples), ("test", "Testing", test_samples)):
        for i, real in enumerate(rng.permutation(np.arange(count) % 2 == 0)):
            rel = {m: f"{folder}/{i // 1000:04d}/{i:06d}-{m}.jpg" for m in SIZES}
            write_face(rng, {m: root / p for m, p in rel.items()}, bool(real))
            lines[split].append(_list_line(list(rel.values()), fixture.add(split, bool(real), real_label)))
            public[split].append(_list_line(list(rel.values()), None))
    (root / "train_list.txt").write_text("".join(lines["train"]))
    for split in ("val", "test"):
        (root / f"{split}_private_list.txt").write_text("".join(lines[split]))
        (root / f"{split}_public_list.txt").write_text("".join(public[split]))
    return fixture


# ----------------------------------------------------------------------------- CeFA


def _cefa_video(rng: np.random.Generator, video: Path, frames: int, real: bool) -> None:
    for f in range(1, frames + 1):
        write_face(rng, {m: video / folder / f"{f:04d}.jpg" for m, folder in CEFA_FOLDERS.items()}, real)


def write_cefa(
    root: Path,
    protocol: str = "4@1",
    train_videos: int = 2,
    frames: int = 3,
    dev_videos: int = 4,
    test_videos: int = 4,
    seed: int = 0,
    real_label: int = 1,
    test_ref: bool = True,
) -> FaceFixture:
    """CeFA layout for one protocol: ``train_videos`` real + ``train_videos`` attack training videos
    (``frames`` frames each, frame-level list), dev and test videos with ``frames`` or ``frames + 1``
    frames (video-level ``_ref`` and unlabelled ``_res`` lists; ``_test_ref`` only if ``test_ref``).
    Several protocols can share one root."""
    root = Path(root)
    k = int(protocol.split("@")[1])
    rng = np.random.default_rng((seed, k))
    fixture = FaceFixture(root)
    phase1, phase2 = root / "phase1", root / "phase2"
    train_lines = []
    for v in range(2 * train_videos):
        real = v % 2 == 0
        pai = 1 if real else 2 + v % 3
        name = f"{k}_{100 * k + v:03d}_{1 + v % 3}_{1 + v % 2}_{pai}"
        _cefa_video(rng, phase1 / "train" / name, frames, real)
        for f in range(1, frames + 1):
            label = fixture.add("train", real, real_label)
            train_lines.append(f"train/{name}/profile/{f:04d}.jpg {label}\n")
    (root / f"{protocol}_train.txt").write_text("".join(train_lines))
    for split, phase, first, count in (("dev", phase1, 3000, dev_videos), ("test", phase2, 1, test_videos)):
        ref, res = [], []
        for v, real in enumerate(rng.permutation(np.arange(count) % 2 == 0)):
            name = f"{split}/{first + 100 * (k - 1) + v:06d}"
            n = frames + v % 2
            _cefa_video(rng, phase / name, n, bool(real))
            fixture.frames.setdefault(split, []).append(n)
            label = real_label if real else 1 - real_label
            for _ in range(n):
                fixture.add(split, bool(real), real_label)
            ref.append(f"{name} {label}\n")
            res.append(f"{name} \n")
        if split == "dev" or test_ref:
            (root / f"{protocol}_{split}_ref.txt").write_text("".join(ref))
        (root / f"{protocol}_{split}_res.txt").write_text("".join(res))
    return fixture
