"""Small helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def make_raw_npz_dataset(root: Path, sizes: dict[str, int] | None = None, seed: int = 0) -> Path:
    """A small npz dataset far from standardised (offsets, scales), with missing entries and padded sequences.

    Modalities: ``vec`` (5,), ``seq`` (6, 2) with ``lengths_seq``, ``img`` (1, 6, 6); 3 classes. Missing
    entries and sequence padding hold NaN (their content must never matter).
    """
    import numpy as np

    sizes = sizes or {"train": 90, "test": 30}
    root.mkdir(parents=True, exist_ok=True)
    for k, (split, n) in enumerate(sizes.items()):
        rng = np.random.default_rng(seed + k)
        label = np.arange(n) % 3
        lengths = rng.integers(2, 7, n)
        seq = rng.normal(label[:, None, None], 1.0, (n, 6, 2)) * 4.0 - 9.0
        seq[np.arange(6)[None, :] >= lengths[:, None]] = np.nan
        present_vec, present_img = rng.random(n) > 0.2, rng.random(n) > 0.2
        vec = rng.normal(label[:, None], 1.0, (n, 5)) * np.arange(1, 6) * 3.0 + 40.0
        vec[~present_vec] = np.nan
        img = rng.normal(0.5 * label[:, None, None, None], 1.0, (n, 1, 6, 6)) * 50.0 + 120.0
        img[~present_img] = np.nan
        np.savez(
            root / f"{split}.npz",
            vec=vec,
            present_vec=present_vec,
            seq=seq,
            lengths_seq=lengths,
            img=img.astype(np.float32),
            present_img=present_img,
            label=label,
        )
    return root


def npz_run_config(root: Path, method: str = "sf_md", max_epochs: int = 2) -> dict:
    """A tiny run configuration on an npz directory."""
    return {
        "method": method,
        "data": {"name": "npz", "root": str(root), "batch_size": 32},
        "model": {"channels": 8, "encoder": {"hidden": 16}, "head": {"hidden": 16}},
        "train": {"max_epochs": max_epochs, "progress_bar": False},
        "mar": {"warmup_epochs": 1},
        "teacher": {"max_epochs": 1},
    }
