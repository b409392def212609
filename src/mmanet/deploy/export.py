"""``mmanet export``: a trained model as three self-contained files next to each other.

* ``<name>.onnx`` — the deployment network with its input normalisation in the graph (it takes
  RAW inputs), the model card in its ``metadata_props``; checked against PyTorch on every
  combination with onnxruntime;
* ``<name>.safetensors`` — the deployment weights (no pickle), with the configuration and data
  description in the header (:mod:`mmanet.deploy.weights`);
* ``model_card.json`` — :mod:`mmanet.deploy.model_card`.

Output rule (:func:`export_paths`): ``--out`` ends in ``.onnx``; none of the three files is the
checkpoint being exported, and an existing one is replaced only when it is an earlier export's
file of the same name (an mmanet ONNX graph, mmanet weights, the model card of this ``.onnx``) —
never a checkpoint, a user's file or another export's card: one export per directory name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mmanet.deploy.checkpoint import CheckpointError, model_hash_of_checkpoint
from mmanet.deploy.locate import resolve_checkpoint
from mmanet.deploy.model_card import FORMAT, ONNX_KEY, build_model_card
from mmanet.deploy.onnx import DEFAULT_OPSET, check_opset, check_parity, export_onnx, read_metadata
from mmanet.deploy.weights import read_header, save_weights
from mmanet.outputs import OutputPathError, check_not_read, check_replaceable, writable_file, writing

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
    target, weights, card_path = export_paths(checkpoint, out)
    net, config, info, meta = net_from_checkpoint(checkpoint)
    lengths = tuple(m for m, shape in info.input_shapes.items() if len(shape) == 2)
    files = {"onnx": target.name, "safetensors": weights.name}
    card = build_model_card(checkpoint, config, info, meta, model_hash_of_checkpoint(checkpoint), lengths, files)
    with writing(target, "the ONNX graph ", atomic=True):
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
    with writing(weights, "the weights ", atomic=True):
        save_weights(net, config, info, weights, extra=extra)
    with writing(card_path, "the model card ", atomic=True):
        _write_json(card, card_path)
    return ExportResult(target, weights, card_path, card["inputs"], 2 ** len(info.spec) - 1, worst)


def export_paths(checkpoint: Path, out: str | Path | None = None) -> tuple[Path, Path, Path]:
    """The (.onnx, .safetensors, model_card.json) an export of ``checkpoint`` writes, checked (module docstring)."""
    target = writable_file(Path(out) if out is not None else checkpoint.with_suffix(".onnx"), "--out", "model.onnx")
    reads = [("the checkpoint being exported", checkpoint)]
    check_not_read(target, reads)
    if target.suffix != ".onnx":
        raise OutputPathError(
            f"--out {target} must be an .onnx file name (the weights and the model card are written beside it), "
            f"e.g. {target.with_suffix('.onnx')}"
        )
    weights, card = target.with_suffix(".safetensors"), target.parent / CARD_NAME
    for path, ours, kind in (
        (target, _is_onnx_export, "an ONNX graph exported by mmanet"),
        (weights, _is_weights, "a weights file exported by mmanet"),
        (card, lambda p: _is_card_of(p, target.name), f"the model card of an earlier export of {target.name}"),
    ):
        check_not_read(path, reads)
        check_replaceable(path, ours, kind)
    return target, weights, card


def _is_onnx_export(path: Path) -> bool:
    try:
        return ONNX_KEY in read_metadata(path)
    except Exception:  # onnx raises its own errors (DecodeError, …) for anything that is not a graph
        return False


def _is_weights(path: Path) -> bool:
    try:
        read_header(path)
    except CheckpointError:
        return False
    return True


def _is_card_of(path: Path, onnx_name: str) -> bool:
    """``path`` is the model card mmanet wrote for ``onnx_name`` (not a user's file, not another export's)."""
    try:
        card = json.loads(path.read_text())
        return card.get("format") == FORMAT and card.get("files", {}).get("onnx") == onnx_name
    except (OSError, ValueError, AttributeError):
        return False


def _write_json(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
