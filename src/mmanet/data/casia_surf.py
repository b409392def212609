"""CASIA-SURF (face anti-spoofing; rgb/depth/ir), read from the user's copy in its published layout.

``root`` holds ``train_list.txt`` (train), ``val_private_list.txt`` (val) and
``test_private_list.txt`` (test): one sample per line, ``color_path depth_path ir_path label``
with paths relative to ``root`` and 1 = real, 0 = attack (``real_label`` flips that). The
unlabelled ``val_public_list.txt`` / ``test_public_list.txt`` (three paths and a trailing
space) are for prediction: :func:`public_samples`, :func:`public_dataset`.
Images are read lazily; see :mod:`mmanet.data.face_antispoofing` for sizes, augmentation
and the label convention.
"""

from __future__ import annotations

from pathlib import Path

from mmanet.data.base import DataBundle, DataError, DataUnavailableError
from mmanet.data.face_antispoofing import (
    MODALITIES,
    UNLABELLED,
    FaceAntiSpoofingDataset,
    FaceOptions,
    FaceSample,
    expect_fields,
    line_context,
    list_lines,
    make_bundle,
    parse_label,
    require_lists,
)
from mmanet.data.registry import DatasetEntry, register_dataset
from mmanet.data.transforms import Size

#: evaluation lists (labelled) per split
LISTS = {"train": "train_list.txt", "val": "val_private_list.txt", "test": "test_private_list.txt"}
#: unlabelled challenge lists per split (prediction only)
PUBLIC_LISTS = {"val": "val_public_list.txt", "test": "test_public_list.txt"}
LAYOUT = (
    "train_list.txt, val_private_list.txt and test_private_list.txt (lines `color depth ir label`, paths "
    "relative to root) and the image folders Training/, Val/, Testing/ they name"
)


def read_list(root: str | Path, name: str, labelled: bool = True) -> list[FaceSample]:
    """Parse one list file under ``root``; a malformed line is a DataError naming the file and line."""
    root = Path(root)
    path = root / name
    if not path.is_file():
        raise DataUnavailableError(f"CASIA-SURF list {path} not found. Expected under {root}: {LAYOUT}")
    count = len(MODALITIES) + int(labelled)
    form = "color_path depth_path ir_path" + (" label" if labelled else "")
    samples = []
    for number, fields in list_lines(path):
        expect_fields(fields, count, path, number, form)
        label = parse_label(fields[3], path, number) if labelled else UNLABELLED
        paths = tuple(root / f for f in fields[: len(MODALITIES)])
        samples.append(FaceSample(paths, label, line_context(path, number)))
    return samples


def public_samples(root: str | Path, split: str = "test") -> list[FaceSample]:
    """The unlabelled samples of ``val_public_list.txt`` or ``test_public_list.txt`` (target = -1)."""
    if split not in PUBLIC_LISTS:
        raise DataError(f"unknown CASIA-SURF public split {split!r}; valid: {sorted(PUBLIC_LISTS)}")
    return read_list(root, PUBLIC_LISTS[split], labelled=False)


def public_dataset(root: str | Path, split: str = "test", image_size: Size = 112) -> FaceAntiSpoofingDataset:
    """A prediction dataset over a public list: evaluation transform, targets all -1."""
    options = FaceOptions.parse(image_size=image_size)
    return FaceAntiSpoofingDataset(public_samples(root, split), options.image_size, augment=False)


def availability(root: str | Path | None) -> tuple[bool, str]:
    try:
        found = require_lists(root, list(LISTS.values()), "CASIA-SURF", LAYOUT)
    except DataUnavailableError as err:
        return False, str(err)
    return True, f"CASIA-SURF lists in {found}"


def load(
    root: str | Path | None = None,
    seed: int = 0,
    image_size: Size = 112,
    real_label: int = 1,
    max_samples_per_split: int | None = None,
    augment: bool = True,
) -> DataBundle:
    """Train/val/test from ``train_list.txt`` / ``val_private_list.txt`` / ``test_private_list.txt``.

    ``image_size``: int or ``[H, W]`` (default 112); ``real_label``: the list label meaning bona
    fide (default 1; the bundle's ``bona_fide_class``); ``max_samples_per_split``: a seeded
    random subset per split for quick runs; ``augment``: training augmentation on/off.
    """
    options = FaceOptions.parse(image_size, real_label, max_samples_per_split, augment)
    base = require_lists(root, list(LISTS.values()), "CASIA-SURF", LAYOUT)
    splits = {split: read_list(base, name) for split, name in LISTS.items()}
    return make_bundle("casia_surf", splits, options, seed)


register_dataset(
    DatasetEntry(
        name="casia_surf",
        modalities=MODALITIES,
        task="classification (face anti-spoofing, ACER)",
        description="CASIA-SURF face anti-spoofing (rgb/depth/ir) from data.root with train_list.txt, "
        "val_private_list.txt, test_private_list.txt (options: image_size, real_label, "
        "max_samples_per_split, augment)",
        load=load,
        availability=availability,
    )
)
