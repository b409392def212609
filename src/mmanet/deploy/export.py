"""``mmanet export``: a trained model as three self-contained files next to each other.

* ``<name>.onnx`` — the deployment network with its input normalisation in the graph (it takes
  RAW inputs), the model card in its ``metadata_props``; checked against PyTorch on every
  combination with onnxruntime;
* ``<name>.safetensors`` — the deployment weights (no pickle), with the configuration and data
  description in the header (:mod:`mmanet.deploy.weights`);
* ``model_card.json`` — :mod:`mmanet.deploy.model_card`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mmanet.deploy.checkpoint import model_hash_of_checkpoint
from mmanet.deploy.locate import resolve_checkpoint
from mmanet.deploy.model_card import ONNX_KEY, build_model_card
from mmanet.deploy.onnx import DEFAULT_OPSET, check_opset, check_parity, export_onnx
from mmanet.deploy.weights import save_weights
from mmanet.outputs import writable_file

CARD_NAME = "model_card.json"


@dataclass(frozen=True)
class ExportResult:
    onnx: Path
    safetensors: Path
    card: Path
    inputs: list[str]
    combinations: int
    parity: float


def export_model(model: str | Path, out: str | Path | None = None, opset: int = DEFAULT_OPSET) -> ExportResult:
    """Export the model ``model`` names (a run directory or a ``.ckpt``); ``out``: the ``.onnx`` path."""
    from mmanet.deploy import net_from_checkpoint

    check_opset(opset)
    checkpoint = resolve_checkpoint(model)
    target = writable_file(Path(out) if out is not None else checkpoint.with_suffix(".onnx"), "--out", "model.onnx")
    net, config, info, meta = net_from_checkpoint(checkpoint)
    lengths = tuple(m for m, shape in info.input_shapes.items() if len(shape) == 2)
    weights, card_path = target.with_suffix(".safetensors"), target.parent / CARD_NAME
    files = {"onnx": target.name, "safetensors": weights.name}
    card = build_model_card(checkpoint, config, info, meta, model_hash_of_checkpoint(checkpoint), lengths, files)
    export_onnx(
        net,
        info.input_shapes,
        target,
        lengths_modalities=lengths,
        opset=opset,
        normalization=info.normalization,
        metadata={ONNX_KEY: json.dumps(card)},
    )
    worst = check_parity(net, info.input_shapes, target, normalization=info.normalization)
    extra = {k: meta.get(k) for k in ("stage", "combination", "teacher")}
    save_weights(net, config, info, weights, extra=extra)
    _write_json(card, card_path)
    return ExportResult(target, weights, card_path, card["inputs"], 2 ** len(info.spec) - 1, worst)


def _write_json(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
