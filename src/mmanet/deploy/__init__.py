"""Deployment without Lightning: load a trained model, export it, predict with it.

``load_model(path)`` rebuilds the trained model from a training checkpoint, a run directory or an
exported ``.safetensors`` file with only torch, pydantic and the model code — the training stack
(Lightning) is never imported, so a deployed service needs none of it — and returns it as a
:class:`~.raw_model.RawInputModel`: it takes RAW inputs, like the ONNX export and ``mmanet predict``.
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
from mmanet.deploy.raw_model import RawInputModel
from mmanet.deploy.weights import net_from_safetensors
from mmanet.models.network import MultimodalNet
from mmanet.task import TaskInfo

__all__ = [
    "CheckpointError",
    "DeployedModel",
    "ModelMetadata",
    "RawInputModel",
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
    """A trained model that takes RAW inputs and its metadata; unpacks as ``model, metadata``.

    ``model(inputs, present=None) -> logits`` (:class:`~mmanet.deploy.raw_model.RawInputModel`) applies the
    stored normalisation, lengths and presence rules itself — the contract of the exported ONNX graph.
    ``standardised_net`` is the network as trained (it expects standardised inputs; research use)."""

    model: RawInputModel
    metadata: ModelMetadata

    def __iter__(self):
        return iter((self.model, self.metadata))

    @property
    def standardised_net(self) -> MultimodalNet:
        return self.model.standardised_net


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
    """The trained model — taking RAW inputs, eval mode — and its metadata, from a run directory, a ``.ckpt`` or
    an exported ``.safetensors`` file: ``model, meta = load_model(run); logits = model({"rgb": x})``."""
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
    return DeployedModel(RawInputModel(net, info, metadata.combination), metadata)
