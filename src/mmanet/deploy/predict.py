"""``mmanet predict``: class probabilities (or label maps) for raw inputs with any subset of modalities.

The model is a run directory, a ``.ckpt``, an exported ``.safetensors`` (PyTorch, with the
stored input normalisation applied before the network) or an exported ``.onnx`` file
(onnxruntime; the normalisation is in the graph, and the model card in its metadata says
which modalities, shapes and classes it has). Nothing here imports Lightning.

One record per sample: its source, index, present modalities, and for classification the
class probabilities and the predicted class; for segmentation the label map, written as a
PNG next to the output file, and the pixel count per class.

Output rule (:func:`check_output`): the JSON-lines file and the label maps are never the model
or an ``--input`` file, and an existing one is replaced only when it is an earlier output of
``mmanet predict`` (a predictions file; a PNG carrying the :data:`LABEL_MAP_KEY` marker).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmanet.deploy.checkpoint import CheckpointError
from mmanet.deploy.inputs import (
    InputError,
    ModelInputs,
    RawBatch,
    batch_from_arrays,
    input_files,
    read_inputs,
    restrict_to_combination,
)
from mmanet.deploy.model_card import ONNX_KEY, card_spec
from mmanet.outputs import Reads, check_not_read, check_replaceable, writing
from mmanet.versioning import check_schema

#: samples per forward pass
CHUNK = 256
#: the PNG text entry that marks a label map written by predict (what it may replace on a rerun)
LABEL_MAP_KEY = "mmanet"


@dataclass
class Predictor:
    """A loaded model: what it takes, its classes and task, and ``logits(batch)``."""

    inputs: ModelInputs
    class_names: list[str]
    task: str
    _run: Any  # (RawBatch) -> np.ndarray logits
    #: a customized (SF) model's combination: it only ever uses these modalities
    combination: str | None = None

    def restrict(self, batch: RawBatch) -> RawBatch:
        """An SF model sees only its combination's modalities (as in its evaluation); others are dropped."""
        return restrict_to_combination(batch, self.inputs.spec, self.combination)

    def logits(self, batch: RawBatch) -> np.ndarray:
        chunks = [self._run(_rows(batch, start, start + CHUNK)) for start in range(0, len(batch), CHUNK)]
        return np.concatenate(chunks)


def _rows(batch: RawBatch, start: int, stop: int) -> RawBatch:
    return RawBatch(
        batch.source,
        {m: v[start:stop] for m, v in batch.arrays.items()},
        batch.present[start:stop],
        {m: v[start:stop] for m, v in batch.lengths.items()},
    )


def load_predictor(model: str | Path) -> Predictor:
    """A :class:`Predictor` for a run directory, ``.ckpt``, ``.safetensors`` or ``.onnx`` file."""
    path = Path(model)
    if path.suffix == ".onnx":
        return _onnx_predictor(path)
    return _torch_predictor(path)


def _torch_predictor(path: Path) -> Predictor:
    from mmanet.deploy import load_model

    model, metadata = load_model(path)

    def run(batch: RawBatch) -> np.ndarray:
        return model.logits_of(batch).cpu().numpy()

    info = metadata.info
    return Predictor(model.inputs, info.names_of_classes, info.task, run, metadata.combination)


def _onnx_predictor(path: Path) -> Predictor:
    from mmanet.deploy.onnx import optional, read_metadata

    ort = optional("onnxruntime", "predicting with an .onnx model")

    if not path.is_file():
        raise CheckpointError(f"model {path} does not exist")
    try:
        metadata = read_metadata(path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnx/onnxruntime raise their own types for damaged files
        raise CheckpointError(f"{path} is not a readable ONNX model ({str(err).splitlines()[0]})") from None
    if ONNX_KEY not in metadata:
        raise CheckpointError(
            f"{path} has no mmanet model card in its metadata (exported by an older mmanet?); export it again "
            "with `mmanet export`"
        )
    try:
        card = json.loads(metadata[ONNX_KEY])
        check_schema(card, f"the model card of {path}")
        spec, shapes, lengths = card_spec(card)
        classes, task = [str(c) for c in card["classes"]], str(card["task"])
        if card.get("combination") is not None:
            spec.combination(card["combination"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its model card is damaged ({err})") from None
    inputs = ModelInputs(spec, shapes, lengths)
    check_card_matches_graph(path, card, inputs, classes, task, session)
    wanted = {i.name for i in session.get_inputs()}

    def run(batch: RawBatch) -> np.ndarray:
        feeds: dict[str, np.ndarray] = {m: batch.arrays[m] for m in spec.names}
        feeds.update({f"lengths_{m}": v for m, v in batch.lengths.items()})
        feeds["present"] = batch.present
        try:
            return session.run(["logits"], {k: v for k, v in feeds.items() if k in wanted})[0]
        except Exception as err:  # onnxruntime's own error types (InvalidArgument, Fail, …)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{path}: onnxruntime cannot run the graph on {batch.source} ({reason})") from None

    return Predictor(inputs, classes, task, run, card.get("combination"))


def _dims(shape: Any) -> list[Any]:
    return [d if isinstance(d, int) else None for d in shape]  # symbolic (dynamic) axes are None


def check_card_matches_graph(
    path: Path, card: dict, inputs: ModelInputs, classes: list[str], task: str, session
) -> None:
    """The model card in an ONNX file's metadata describes its graph: the same modality inputs with the same
    per-sample shapes, the same lengths inputs, as many classes as logits, a consistent normalisation —
    a :class:`CheckpointError` saying what disagrees otherwise (the card was edited or belongs elsewhere)."""
    graph = {i.name: _dims(i.shape) for i in session.get_inputs()}
    names = list(inputs.spec.names)
    expected = [*names, *(f"lengths_{m}" for m in inputs.lengths), "present"]
    if sorted(graph) != sorted(expected):
        raise CheckpointError(
            f"{path}: its model card lists the inputs {expected} but the graph takes {sorted(graph)}; the card was "
            "edited or belongs to another model: export the model again"
        )
    for m in names:
        stored = graph[m][1:]
        if len(stored) != len(inputs.shapes[m]) or any(
            d is not None and d != c for d, c in zip(stored, inputs.shapes[m], strict=False)
        ):
            raise CheckpointError(
                f"{path}: its model card gives modality {m!r} the per-sample shape {list(inputs.shapes[m])} but the "
                f"graph takes {stored}; the card was edited or belongs to another model: export the model again"
            )
    logits = next((_dims(o.shape) for o in session.get_outputs() if o.name == "logits"), None)
    rank = 2 if task == "classification" else 4
    if logits is None or len(logits) != rank:
        raise CheckpointError(f"{path}: the graph has no {rank}-D 'logits' output, which a {task} model card describes")
    if logits[1] is not None and logits[1] != len(classes):
        raise CheckpointError(
            f"{path}: its model card lists {len(classes)} classes {classes[:8]} but the graph predicts {logits[1]}; "
            "the card was edited or belongs to another model: export the model again"
        )
    norms = [e.get("normalization") is not None for e in card["modalities"]]
    if any(norms) and not all(norms):
        missing = [e["name"] for e, has in zip(card["modalities"], norms, strict=True) if not has]
        raise CheckpointError(
            f"{path}: its model card has no normalisation for {missing} but has one for the other modalities (every "
            "modality of a model is normalised, or none); the card was edited: export the model again"
        )


# ----------------------------------------------------------------------------- records


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def check_finite_logits(logits: np.ndarray, batch: RawBatch, spec) -> None:
    """An :class:`InputError` when a sample's logits are NaN or infinite: its (finite) inputs lie so far from
    what the model was trained on that the network overflows; nothing is printed as a prediction."""
    bad = np.flatnonzero(~np.isfinite(logits.reshape(len(logits), -1)).all(axis=1))
    if not bad.size:
        return
    i = int(bad[0])
    largest = {
        m: float(np.abs(batch.arrays[m][i]).max(initial=0.0))
        for m, p in zip(spec.names, batch.present[i], strict=True)
        if p
    }
    described = ", ".join(f"{m} {v:.3g}" for m, v in largest.items())
    raise InputError(
        f"{batch.source}: the model's output for {bad.size} sample(s) (first: sample {i}) is NaN or infinite although "
        f"the inputs are finite (largest |value| per present modality: {described}); such inputs are far outside "
        "what the model was trained on. Check their scale (units, raw vs standardised) — no prediction is made"
    )


def predict_batch(
    predictor: Predictor, batch: RawBatch, label_map_dir: Path | None = None, reads: Reads = ()
) -> list[dict[str, Any]]:
    """One record per sample (module docstring); segmentation label maps go to ``label_map_dir``
    (never over a file in ``reads`` or one predict did not write)."""
    batch = predictor.restrict(batch)
    logits = predictor.logits(batch)
    check_finite_logits(logits, batch, predictor.inputs.spec)
    probs = softmax(logits)
    spec = predictor.inputs.spec
    records = []
    for i in range(len(batch)):
        record: dict[str, Any] = {"source": batch.source, "index": i, "present": batch.present_names(i, spec)}
        if predictor.task == "classification":
            k = int(probs[i].argmax())
            pairs = zip(predictor.class_names, probs[i], strict=True)
            record["probabilities"] = {name: round(float(p), 6) for name, p in pairs}
            record.update(predicted=k, predicted_class=predictor.class_names[k])
        else:
            label_map = probs[i].argmax(axis=0)
            counts = np.bincount(label_map.ravel(), minlength=len(predictor.class_names))
            record["pixels_per_class"] = {n: int(c) for n, c in zip(predictor.class_names, counts, strict=True) if c}
            if label_map_dir is not None:
                record["label_map"] = str(
                    _write_label_map(label_map, label_map_dir, batch.source, i, len(predictor.class_names), reads)
                )
        records.append(record)
    return records


def _write_label_map(
    label_map: np.ndarray, directory: Path, source: str, index: int, num_classes: int, reads: Reads = ()
) -> Path:
    from PIL import PngImagePlugin

    path = directory / f"{_label_map_stem(source)}_{index:05d}_labels.png"
    check_not_read(path, reads)
    check_replaceable(path, _is_label_map, "a label map written by mmanet predict")
    info = PngImagePlugin.PngInfo()
    info.add_text(LABEL_MAP_KEY, "label map")
    with writing(path, "the label map "):
        _label_map_image(label_map, num_classes).save(path, pnginfo=info)
    return path


def _label_map_image(label_map: np.ndarray, num_classes: int):
    """A palette PNG image: each pixel's value is its class index (read back as it is), shown in the class
    colours of the prediction grids (:func:`mmanet.pictures.class_palette`); over 256 classes, 16-bit grey."""
    from PIL import Image

    from mmanet.pictures import class_palette

    if num_classes > 256:
        return Image.fromarray(label_map.astype(np.uint16))
    image = Image.fromarray(label_map.astype(np.uint8), mode="P")
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:num_classes] = class_palette(num_classes)
    image.putpalette(palette.ravel().tolist())
    return image


def _label_map_stem(source: str) -> str:
    """The name a batch's label maps start with: its (last) input file's stem."""
    return Path(source.split("=")[-1].split()[0]).stem or "input"


def _is_label_map(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get(LABEL_MAP_KEY) == "label map"
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _is_predictions_file(path: Path) -> bool:
    """An earlier output of predict (its first line is one of its records), or an empty file."""
    try:
        with path.open("rb") as fh:
            first = fh.readline(1 << 20)
        if not first.strip():  # empty (or blank) files hold nothing to lose
            return path.stat().st_size <= 1 << 20 and not path.read_bytes().strip()
        record = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"source", "index", "present"} <= record.keys()


def prediction_reads(model: str | Path | Predictor, inputs: Mapping[str, Any] | Iterable[str]) -> Reads:
    """What predict reads: the model's file (a run directory's checkpoint) and every ``--input`` file."""
    reads: list[tuple[str, str | Path | None]] = []
    if not isinstance(model, Predictor):
        path = Path(model)
        if path.is_dir():
            from mmanet.deploy.locate import resolve_checkpoint

            with contextlib.suppress(CheckpointError):  # not a model: loading it says so
                path = resolve_checkpoint(path)
        reads.append(("the model", path))
    if not isinstance(inputs, Mapping) and not isinstance(inputs, str | bytes) and isinstance(inputs, Iterable):
        reads += [("an --input file", p) for p in input_files([str(s) for s in inputs])]
    return reads


def check_output(target: Path, model: str | Path | Predictor, inputs: Mapping[str, Any] | Iterable[str]) -> None:
    """The JSON-lines file ``target`` is neither the model nor an input, nor a file predict did not write."""
    check_not_read(target, prediction_reads(model, inputs))
    check_replaceable(target, _is_predictions_file, "a predictions file written by mmanet predict")


def predict(
    model: str | Path | Predictor,
    inputs: Mapping[str, Any] | Iterable[str],
    label_map_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Records for raw ``inputs``: a dict of arrays (``.npz`` layout) or ``--input`` strings (files, ``m=IMAGE``)."""
    predictor = model if isinstance(model, Predictor) else load_predictor(model)
    if not isinstance(inputs, Mapping | str | bytes) and isinstance(inputs, Iterable):
        inputs = [str(s) for s in inputs]  # (read twice: for the files it names, and for their data)
    if isinstance(inputs, Mapping):
        batches = [batch_from_arrays(inputs, predictor.inputs)]
    elif isinstance(inputs, str | bytes) or not isinstance(inputs, Iterable):
        raise InputError(f"inputs must be a mapping of arrays or a list of --input values, got {type(inputs).__name__}")
    else:
        batches = read_inputs([str(s) for s in inputs], predictor.inputs)
    if predictor.task != "classification" and label_map_dir is None:
        raise InputError("a segmentation model predicts label maps: pass --out FILE.jsonl (the PNGs go next to it)")
    directory = Path(label_map_dir) if label_map_dir is not None else None
    stems = [_label_map_stem(b.source) for b in batches]
    if predictor.task != "classification" and len(set(stems)) < len(stems):
        twice = next(s for s in stems if stems.count(s) > 1)
        raise InputError(
            f"two inputs would write the same label maps ({twice}_*_labels.png): give inputs with different file "
            "names, or predict them in separate commands"
        )
    reads = prediction_reads(model, inputs)
    return [record for batch in batches for record in predict_batch(predictor, batch, directory, reads)]
