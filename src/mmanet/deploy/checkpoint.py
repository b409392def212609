"""Checkpoint files without Lightning: atomic writes, safe loads (``weights_only``), content hashes."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mmanet.errors import MMANetError


class CheckpointError(MMANetError):
    """A checkpoint that is missing, corrupt, or not one of ours."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``.

    A crash leaves either the old file or the new one, never a truncated checkpoint. The file
    gets the permissions of any newly created file (``0o666`` less the umask), not ``mkstemp``'s 0600.
    A failed write (disk full, a directory made read-only) is an
    :class:`~mmanet.outputs.OutputPathError` naming the file; the old file stays.
    """
    from mmanet.outputs import writing

    path = Path(path)
    with writing(path, "the checkpoint ", atomic=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, new_file_mode())
            with os.fdopen(fd, "wb") as fh:
                _save(obj, fh, path.parent)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


#: how torch's zip writer reports a write the file system cut short (it hides the OSError)
_SHORT_WRITE = re.compile(r"unexpected pos|file write failed|inline_container")


def _save(obj: Any, fh: Any, directory: Path) -> None:
    """``torch.save`` whose short writes are ``OSError`` s (torch reports some as a RuntimeError)."""
    try:
        torch.save(obj, fh)
    except RuntimeError as err:
        if not _SHORT_WRITE.search(str(err)):
            raise
        full = shutil.disk_usage(directory).free < (1 << 20)
        reason = "No space left on device" if full else "the write stopped short (is the disk full?)"
        raise OSError(errno.ENOSPC if full else errno.EIO, reason) from None


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (``0o666 & ~umask``)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: torch's advice that comes with a refused ``weights_only`` load; never repeated to the user
_UNSAFE_ADVICE = re.compile(
    r"weights.only|safe_globals|trust|documentation of torch\.load|two options|file an issue|In PyTorch 2\.6",
    re.IGNORECASE,
)


def load_failure_reason(err: BaseException) -> str:
    """What torch says went wrong, without its suggestions to load the file unsafely."""
    sentences = re.split(r"(?<=[.!?:])\s+|\n+", str(err))
    kept = []
    for sentence in sentences:
        sentence = sentence.strip().removeprefix("WeightsUnpickler error:").strip()
        if sentence and not _UNSAFE_ADVICE.search(sentence) and not sentence.startswith("(2)"):
            kept.append(sentence)
    return " ".join(kept).strip() or type(err).__name__


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with errors that name the file and the problem.

    Nothing in the file is ever executed: a file that needs more than tensors and plain
    containers is refused (and the error never suggests ``weights_only=False``).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass a .ckpt file or a run directory")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a checkpoint ({load_failure_reason(err)}); mmanet only loads "
            "plain tensors and containers, so no code in it was run. Use a checkpoint written by mmanet train"
        ) from None


def non_finite_tensors(state: Mapping[str, Any]) -> list[str]:
    """The names of the floating-point tensors in ``state`` that hold a NaN or an infinite value."""
    return [
        str(name)
        for name, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def check_finite_weights(state: Mapping[str, Any], source: str, advice: str | None = None) -> None:
    """A :class:`CheckpointError` when a weight in ``state`` is NaN or infinite (``source`` names the file):
    such a model predicts nothing meaningful (every NaN logit becomes class 0), so it is never loaded."""
    bad = non_finite_tensors(state)
    if bad:
        listed = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(
            f"{source} holds NaN or infinite weights ({len(bad)} tensor(s): {listed}): it was saved after training "
            f"diverged, or the file is damaged. {advice or 'Use another checkpoint, or train the model again'}"
        )


def check_task_info(info: Any, source: str) -> None:
    """A stored data description (:class:`~mmanet.task.TaskInfo`) that contradicts itself is a
    :class:`CheckpointError` naming ``source`` and what disagrees: input shapes for other modalities, a
    class list of another length, a normalisation that leaves a modality out or does not fit its shape."""
    from mmanet.normalization import check_normalizations

    names = list(info.spec.names)
    if sorted(info.input_shapes) != sorted(names):
        raise CheckpointError(
            f"{source}: its data description lists the modalities {names} but input shapes for "
            f"{sorted(info.input_shapes)}; the file is damaged or was edited"
        )
    if info.num_classes < 1 or (info.class_names and len(info.class_names) != info.num_classes):
        raise CheckpointError(
            f"{source}: its class list has {len(info.class_names)} name(s) {list(info.class_names)[:8]} but the model "
            f"predicts {info.num_classes} classes; the file is damaged or was edited"
        )
    if info.bona_fide_class is not None and not 0 <= info.bona_fide_class < info.num_classes:
        raise CheckpointError(f"{source}: its bona fide class {info.bona_fide_class} is not one of its classes")
    if info.normalization is not None:
        try:
            check_normalizations(info.normalization, tuple(names), info.input_shapes)
        except ValueError as err:
            raise CheckpointError(f"{source}: {err}; the file is damaged or was edited") from None


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(state_dict: dict[str, Any], definition: Any) -> str:
    """sha256 of what defines a model: its weights (names, dtypes, shapes, values) and a JSON-able
    definition (configuration and data description) — not the file's bytes, which also hold run
    paths, optimizer state and timestamps. Two identical models in different run directories
    hash the same; any changed weight or setting changes the hash."""
    import json

    digest = hashlib.sha256()
    digest.update(json.dumps(definition, sort_keys=True, default=str).encode())
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def model_hash_of_checkpoint(path: str | Path) -> str:
    """:func:`content_hash` of the network stored in an mmanet training checkpoint."""
    ckpt = load_checkpoint(path)
    meta = ckpt.get("mmanet")
    if not isinstance(meta, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not an mmanet checkpoint (no 'mmanet' metadata)")
    net_state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    definition = {"model": meta.get("config", {}).get("model"), "info": meta.get("info")}
    return content_hash(net_state, definition)
