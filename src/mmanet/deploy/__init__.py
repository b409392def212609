"""Deployment without Lightning: load a trained model, export it, predict with it.

``load_model(path)`` rebuilds the deployment network from a training checkpoint, a run
directory or an exported ``.safetensors`` file with only torch, pydantic and the model code —
the training stack (Lightning) is never imported, so a deployed service needs none of it.
:mod:`.export` writes ONNX + safetensors + the model card, :mod:`.predict` runs any of them on
raw inputs (:mod:`.inputs`), :mod:`.locate` says what a path holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmanet.config import RunConfig
from mmanet.deploy.checkpoint import CheckpointError, TrainedCheckpoint, read_checkpoint
from mmanet.deploy.locate import resolve_checkpoint
from mmanet.deploy.weights import net_from_safetensors
from mmanet.models.network import MultimodalNet
from mmanet.task import TaskInfo

__all__ = [
    "CheckpointError",
    "DeployedModel",
    "ModelMetadata",
    "TrainedCheckpoint",
    "load_model",
    "net_from_checkpoint",
    "read_checkpoint",
    "resolve_checkpoint",
]


@dataclass(frozen=True)
class ModelMetadata:
    """What a user of a trained model needs to feed it and read its output."""

    modalities: tuple[str, ...]
    input_shapes: dict[str, tuple[int, ...]]
    num_classes: int
    task: str
    bona_fide_class: int | None
    ignore_index: int | None
    stage: str
    #: the customized (SF) model's combination; None for a unified model
    combination: str | None
    info: TaskInfo
    config: RunConfig


@dataclass
class DeployedModel:
    """The deployment network (eval mode) and its metadata; unpacks as ``net, metadata``."""

    net: MultimodalNet
    metadata: ModelMetadata

    def __iter__(self):
        return iter((self.net, self.metadata))


def net_from_checkpoint(path: str | Path) -> tuple[MultimodalNet, RunConfig, TaskInfo, dict[str, Any]]:
    """Rebuild the network stored in a training checkpoint (or an exported ``.safetensors`` file):
    (net in eval mode, config, info, metadata)."""
    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        return net_from_safetensors(path)
    if path.suffix == ".onnx":
        raise CheckpointError(
            f"{path} is an ONNX export: `mmanet predict` runs it; evaluate and export take the run directory, "
            "its .ckpt or the exported .safetensors"
        )
    stored = read_checkpoint(path)
    return stored.network(), stored.config, stored.info, stored.metadata


def load_model(path: str | Path) -> DeployedModel:
    """The deployment network (eval mode) and its metadata from a ``.ckpt`` or a run directory."""
    net, config, info, meta = net_from_checkpoint(path)
    metadata = ModelMetadata(
        modalities=tuple(info.spec.names),
        input_shapes=dict(info.input_shapes),
        num_classes=info.num_classes,
        task=info.task,
        bona_fide_class=info.bona_fide_class,
        ignore_index=info.ignore_index,
        stage=str(meta.get("stage", config.stage)),
        combination=meta.get("combination"),
        info=info,
        config=config,
    )
    return DeployedModel(net, metadata)
