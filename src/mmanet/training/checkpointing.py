"""Lightning checkpoint plumbing: atomic checkpoint IO and RNG state in checkpoints (exact resume)."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mmanet.deploy.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    check_finite_weights,
    load_checkpoint,
    sha256_of,
)

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "RNGStateCallback",
    "atomic_torch_save",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "sha256_of",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO whose saves are atomic (tmp file + ``os.replace``) and whose loads (a resume)
    refuse a checkpoint with NaN or infinite weights: training on from it could only diverge again."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        checkpoint = load_checkpoint(path, map_location=map_location)
        state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
        if isinstance(state, dict):
            check_finite_weights(
                state,
                f"cannot resume from {path}: it",
                "Start the run again with --overwrite (or another --out); if it diverged, lower train.lr or set "
                "train.gradient_clip first",
            )
        return checkpoint


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors/ints only (safe for ``weights_only`` loads)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np.asarray(np_keys).astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStateCallback(L.Callback):
    """Stores the RNG states in every checkpoint and restores them on resume (exact resume)."""

    def state_dict(self) -> dict[str, Any]:
        return {"rng": capture_rng_state()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Under DDP every rank starts from the same seed (and, on resume, from rank 0's saved
        # state), so modality dropout and dropout layers would draw the same masks on every
        # rank. Derive a distinct, reproducible stream per rank. Single-process runs are untouched.
        if trainer.world_size > 1:
            base = int(torch.randint(2**31 - 1, (1,)).item())  # equal on all ranks
            torch.manual_seed(base + trainer.global_rank)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks just before the fit loop starts; nothing draws random
        # numbers in between (the training sampler is seeded by epoch, see EpochShuffleSampler).
        restore_rng_state(state_dict["rng"])
