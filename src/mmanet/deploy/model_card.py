"""The model card: everything a user of an exported model needs, as JSON (``model_card.json`` and ONNX metadata).

Modalities in input order (shape, kind, lengths input, normalisation), classes, task and
metric, the per-combination validation and test results of the run (when the exported checkpoint is
the run's ``best.ckpt`` and its ``per_combination*.csv`` are there: the headline metric and each
combination's calibration — ECE and mean confidence, :mod:`mmanet.calibration`), the training
configuration and its hash, the model's content hash, and the teacher's hash for MMANet.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mmanet.calibration import CALIBRATION_METRICS
from mmanet.config import RunConfig
from mmanet.modality import ModalitySpec
from mmanet.results import ResultTable
from mmanet.task import TaskInfo
from mmanet.versioning import stamp

FORMAT = "mmanet-model-card"
VERSION = 1
#: the ONNX ``metadata_props`` key that holds the card
ONNX_KEY = "mmanet_model_card"
KINDS = {1: "vector", 2: "sequence", 3: "image"}
#: how to call an exported model (the ONNX graph; load_model's model and mmanet predict take the same inputs)
USAGE = {
    "inputs": "raw values as read from the data files, batch first; the graph applies the stored normalisation",
    "missing_modality": "pass any finite values of the modality's shape (e.g. zeros) and present[:, i] = false",
    "sequences": "lengths_<m>: the valid steps of each padded sequence (int64); steps past it are ignored",
    "present": "bool (B, M) in the order of 'modalities': which modalities each row has",
    "empty_row": "a row with no modality present gets NaN logits from the graph; predict and load_model refuse it",
    "outputs": "logits (unnormalised scores): softmax over the class axis for probabilities",
}


def config_hash(config: RunConfig) -> str:
    """sha256 of the configuration as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def modality_entries(info: TaskInfo, lengths_modalities: tuple[str, ...]) -> list[dict[str, Any]]:
    norms = info.normalization or {}
    return [
        {
            "name": m,
            "shape": list(info.input_shapes[m]),
            "kind": KINDS.get(len(info.input_shapes[m]), "tensor"),
            "lengths_input": f"lengths_{m}" if m in lengths_modalities else None,
            "normalization": norms[m].to_dict() if m in norms else None,
        }
        for m in info.spec.names
    ]


def run_results(checkpoint: Path, config: RunConfig, info: TaskInfo) -> dict[str, Any] | None:
    """Per-combination results of the run whose ``best.ckpt`` is ``checkpoint`` (None when not available)."""
    if checkpoint.name != "best.ckpt" or checkpoint.parent.name != "checkpoints":
        return None
    run_dir = checkpoint.parent.parent
    files = {config.evaluate.split: run_dir / "per_combination.csv", "val": run_dir / "per_combination_val.csv"}
    results: dict[str, Any] = {}
    headline = info.headline(config.evaluate.metric)
    for split, path in files.items():
        if not path.is_file():
            continue
        try:
            table = ResultTable.read_csv(path, info.spec, headline)
        except (OSError, KeyError, ValueError):
            continue  # a damaged or foreign table is left out, not guessed
        results[split] = {
            "metric": headline,
            "average": table.average()[headline],
            "per_combination": {c.name: values[headline] for c, values in table.rows},
        }
        calibrated = [c for c, values in table.rows if set(CALIBRATION_METRICS) <= values.keys()]
        if calibrated:  # classification (issue 23): how far to trust an answer, given which modalities arrived
            results[split]["calibration"] = {
                c.name: {k: values[k] for k in CALIBRATION_METRICS} for c, values in table.rows if c in calibrated
            }
    return results or None


def build_model_card(
    checkpoint: Path,
    config: RunConfig,
    info: TaskInfo,
    meta: dict[str, Any],
    model_hash: str,
    lengths_modalities: tuple[str, ...],
    files: dict[str, str],
) -> dict[str, Any]:
    """The card of the model stored in ``checkpoint`` (``meta``: the checkpoint's ``mmanet`` metadata)."""
    teacher = meta.get("teacher") or None
    return {
        "format": FORMAT,
        "version": VERSION,
        **stamp(),
        "task": info.task,
        "metric": info.headline(config.evaluate.metric),
        "method": config.method,
        "stage": str(meta.get("stage", config.stage)),
        "combination": meta.get("combination"),
        "modalities": modality_entries(info, lengths_modalities),
        "inputs": [*info.spec.names, *(f"lengths_{m}" for m in lengths_modalities), "present"],
        "inputs_are_raw": True,
        "usage": USAGE,
        "outputs": {"logits": "(B, K)" if info.task == "classification" else "(B, K, H, W)"},
        "classes": info.names_of_classes,
        "bona_fide_class": info.bona_fide_class,
        "ignore_index": info.ignore_index,
        "results": run_results(checkpoint, config, info),
        "training": {
            "config": config.model_dump(mode="json"),
            "config_sha256": config_hash(config),
            "model_sha256": model_hash,
            "teacher": {"sha256": teacher.get("sha256"), "path": teacher.get("path")} if teacher else None,
            "checkpoint": str(checkpoint),
        },
        "files": files,
    }


def card_spec(card: dict[str, Any]) -> tuple[ModalitySpec, dict[str, tuple[int, ...]], tuple[str, ...]]:
    """(modalities, per-sample shapes, modalities with a lengths input) read back from a card."""
    entries = card["modalities"]
    spec = ModalitySpec(tuple(e["name"] for e in entries))
    shapes = {e["name"]: tuple(int(d) for d in e["shape"]) for e in entries}
    lengths = tuple(e["name"] for e in entries if e.get("lengths_input"))
    return spec, shapes, lengths
