"""Checkpoint files without Lightning: atomic writes, safe loads (``weights_only``), content hashes, and the
schema of a training checkpoint (:class:`TrainedCheckpoint`: the file read once, every part of it named).

A training checkpoint is Lightning's dict: ``state_dict`` holds the network's weights under
:data:`NET_PREFIX` (and a method's extra modules under their own names), and :data:`METADATA` the
section mmanet writes (``training/module.py``): the run configuration, the data description
(:class:`~mmanet.task.TaskInfo`), the stage, the SF combination, the teacher's reference, and the
method's state (every other key).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmanet.errors import MMANetError
from mmanet.versioning import check_schema

if TYPE_CHECKING:
    from mmanet.config import RunConfig
    from mmanet.models.network import MultimodalNet
    from mmanet.task import TaskInfo

#: the prefix of the network's weights in a training checkpoint's ``state_dict`` (the module's ``net``)
NET_PREFIX = "net."
#: the section of a training checkpoint that mmanet writes
METADATA = "mmanet"
#: the keys of :data:`METADATA` that describe the run; every other key is the method's state
RUN_KEYS = ("config", "info", "stage", "combination", "teacher", "mmanet_version", "schema_version")


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
    return read_checkpoint(path).model_hash


def read_checkpoint(path: str | Path) -> TrainedCheckpoint:
    """An mmanet training checkpoint, loaded once (:func:`load_checkpoint`): a :class:`CheckpointError` when
    the file holds no ``state_dict`` or no mmanet metadata."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    meta = ckpt.get(METADATA) if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not an mmanet checkpoint (no 'mmanet' metadata)")
    check_schema(meta, f"the checkpoint {path}")
    return TrainedCheckpoint(path, ckpt["state_dict"], meta)


@dataclass
class TrainedCheckpoint:
    """The parts of one training checkpoint (:func:`read_checkpoint`); what is parsed or computed from them
    (configuration, data description, content hash) is checked and cached on first use."""

    path: Path
    #: Lightning's whole ``state_dict``: the network under :data:`NET_PREFIX`, a method's extra modules
    state_dict: Mapping[str, Any]
    #: the :data:`METADATA` section
    metadata: dict[str, Any]

    @property
    def net_state(self) -> dict[str, Any]:
        """The network's weights, named as in the network (:data:`NET_PREFIX` removed)."""
        return {k[len(NET_PREFIX) :]: v for k, v in self.state_dict.items() if k.startswith(NET_PREFIX)}

    @property
    def stage(self) -> str | None:
        return self.metadata.get("stage")

    @property
    def combination(self) -> str | None:
        """The combination of a customized (SF) model; None for a unified model."""
        return self.metadata.get("combination")

    @property
    def teacher(self) -> dict[str, Any]:
        """The reference (path, content hash) of the teacher the run was trained against; empty without one."""
        teacher = self.metadata.get("teacher")
        return teacher if isinstance(teacher, dict) else {}

    @property
    def method_state(self) -> dict[str, Any]:
        """What the method saved (``Method.state_dict()``): the metadata without :data:`RUN_KEYS`."""
        return {k: v for k, v in self.metadata.items() if k not in RUN_KEYS}

    @cached_property
    def config(self) -> RunConfig:
        """The run configuration (a :class:`CheckpointError` when the metadata has none)."""
        from mmanet.config import resolve_run_config

        if "config" not in self.metadata:
            raise CheckpointError(f"{self.path} is not an mmanet checkpoint (no 'mmanet' metadata)")
        return resolve_run_config(self.metadata["config"], source=f"checkpoint {self.path}")

    @cached_property
    def info(self) -> TaskInfo:
        """The data description, checked against itself (:func:`check_task_info`)."""
        from mmanet.task import TaskInfo

        try:
            info = TaskInfo.from_dict(self.metadata["info"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{self.path}: its data description is damaged ({err})") from None
        check_task_info(info, f"checkpoint {self.path}")
        return info

    @cached_property
    def model_hash(self) -> str:
        """:func:`content_hash` of the network: its weights and its definition (model section and data description)."""
        net_state = {k: v for k, v in self.state_dict.items() if k.startswith(NET_PREFIX)}
        definition = {"model": self.metadata.get("config", {}).get("model"), "info": self.metadata.get("info")}
        return content_hash(net_state, definition)

    def network(self) -> MultimodalNet:
        """The stored network, rebuilt from its configuration and data description (eval mode); NaN weights or
        weights that do not fit the configuration are a :class:`CheckpointError`."""
        from mmanet.models.factory import build_net

        config, info = self.config, self.info
        net = build_net(config.model, info)
        state = self.net_state
        check_finite_weights(state, f"checkpoint {self.path}")
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(
                f"{self.path}: the stored weights do not fit the stored model configuration: {err}"
            ) from err
        return net.eval()
