"""Checkpoint files without Lightning: atomic writes, safe loads (``weights_only``), content hashes."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
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
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
