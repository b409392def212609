"""Per-combination evaluation of trained models: tables for a bundle, a checkpoint or an SF run directory.

Output rule (:func:`check_evaluation_outputs`): an evaluation writes ``per_combination.{csv,md}`` (and,
for segmentation, ``predictions.png``) into its ``--out``; a file of those names that is already there
is replaced only when it is an earlier evaluation's (a per-combination table; a picture carrying the
:data:`PICTURE_KEY` marker) — never a file of the user's.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path

from mmanet.analysis.availability import check_tables_cover, validate_availability
from mmanet.analysis.deployment import is_deployment_json, is_deployment_markdown
from mmanet.config import RunConfig
from mmanet.data import DataBundle
from mmanet.deploy import net_from_checkpoint, resolve_checkpoint
from mmanet.deploy.checkpoint import CheckpointError, model_hash_of_checkpoint
from mmanet.methods import method_entry
from mmanet.modality import Combination
from mmanet.models.network import MultimodalNet
from mmanet.outputs import writing
from mmanet.results import ResultTable
from mmanet.task import TaskInfo
from mmanet.training.factory import load_bundle, make_loader, quiet_lightning, task_info
from mmanet.training.teacher import check_teacher_hash

#: what an evaluation writes into its output directory (deployment.*: with an availability)
EVALUATION_OUTPUTS = (
    "per_combination.csv",
    "per_combination.md",
    "predictions.png",
    "deployment.json",
    "deployment.md",
)
#: the PNG text entry that marks a picture written by an evaluation (what it may replace on a rerun)
PICTURE_KEY = "mmanet"
PICTURE_MARK = "evaluation predictions"


def _is_table_csv(path: Path) -> bool:
    try:
        if path.stat().st_size > 1 << 20:
            return False
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if not rows or "combination" not in rows[0]:
        return False
    column = rows[0].index("combination")
    return any(len(row) > column and row[column] == "Average" for row in rows[1:])


def _is_table_markdown(path: Path) -> bool:
    try:
        if path.stat().st_size > 1 << 20:
            return False
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    return bool(lines) and lines[0].startswith("|") and "combination" in lines[0] and any("Average" in x for x in lines)


def _is_evaluation_picture(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get(PICTURE_KEY) == PICTURE_MARK
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def check_evaluation_outputs(out_dir: str | Path) -> None:
    """Refuse (before anything is evaluated) to replace a file in ``out_dir`` that an evaluation did not write."""
    from mmanet.outputs import check_replaceable

    out_dir = Path(out_dir)
    ours = {
        "per_combination.csv": (_is_table_csv, "a per-combination table written by mmanet"),
        "per_combination.md": (_is_table_markdown, "a per-combination table written by mmanet"),
        "predictions.png": (_is_evaluation_picture, "a picture written by mmanet evaluate"),
        "deployment.json": (is_deployment_json, "a deployment analysis written by mmanet"),
        "deployment.md": (is_deployment_markdown, "a deployment analysis written by mmanet"),
    }
    for name, (recognise, kind) in ours.items():
        check_replaceable(out_dir / name, recognise, kind)


def evaluate_tables(
    net: MultimodalNet,
    bundle: DataBundle,
    config: RunConfig,
    combinations: list[Combination] | None = None,
    splits: tuple[str, ...] = ("val", "test"),
) -> dict[str, ResultTable]:
    info = task_info(bundle)
    tables = {}
    for split in splits:
        evaluator = info.evaluator(combinations, config.evaluate.metric)
        tables[split] = evaluator.evaluate(net, make_loader(bundle.split(split), config, train=False))
    return tables


def evaluate_checkpoint(
    path: str | Path,
    split: str = "test",
    out_dir: str | Path | None = None,
    data_root: str | None = None,
    availability: Mapping[str, float] | None = None,
) -> ResultTable:
    """Evaluate a trained model on every combination of a split (or, for an SF run directory, each
    customized model on its own combination).

    The inputs are standardised with the statistics stored in the checkpoint (the training
    split's), never with statistics refitted on the data evaluated (``data_root``). With an
    ``availability`` (checked against the model's modalities before anything is evaluated), the
    deployment analysis of the model (:mod:`mmanet.analysis.deployment`) goes to ``out_dir`` as well.
    """
    quiet_lightning()
    path = Path(path)
    if out_dir is not None:
        check_evaluation_outputs(out_dir)
    if path.is_dir() and (path / "sf").is_dir():
        return _evaluate_customized_dir(path, split, out_dir, data_root, availability)
    path = resolve_checkpoint(path)
    net, config, info, meta = net_from_checkpoint(path)
    if availability is not None:
        validate_availability(availability, info.spec)
    check_student_teacher(meta)
    if data_root is not None:
        config = config.model_copy(update={"data": config.data.model_copy(update={"root": data_root})})
    bundle = load_bundle(config, normalization=info.normalization)
    _check_data_matches(info, bundle, path)
    combination = bundle.spec.combination(meta["combination"]) if meta.get("combination") else None
    combos = method_entry(config.method).cls.eval_combinations(bundle.spec, combination)
    if availability is not None:
        check_tables_cover({str(path): [c.name for c in combos]}, availability, info.spec)
    table = evaluate_tables(net, bundle, config, combos, splits=(split,))[split]
    if out_dir is not None:
        _write_table(table, out_dir)
        if info.task == "segmentation":
            with writing(Path(out_dir) / "predictions.png", "the picture "):
                write_prediction_grid(net, bundle, combos, Path(out_dir) / "predictions.png")
        if availability is not None:
            _write_deployment(table, bundle, split, availability, Path(out_dir))
    return table


def _write_deployment(
    table: ResultTable, bundle: DataBundle, split: str, availability: Mapping[str, float], out_dir: Path
) -> None:
    """deployment.json / .md of one model (its expected metric, Shapley values and availability sweep)."""
    from mmanet.analysis.baseline import empty_combination_metrics
    from mmanet.analysis.deployment import SeedTable, analyse, deployment_markdown

    empty = empty_combination_metrics(bundle, split, table.metric).get(table.metric)
    result = analyse({"model": [SeedTable(0, table)]}, table.spec, "model", availability, empty)
    with writing(out_dir / "deployment.json", "the deployment analysis "):
        (out_dir / "deployment.json").write_text(json.dumps(result, indent=2) + "\n")
        (out_dir / "deployment.md").write_text(deployment_markdown(result, table.spec) + "\n")


def _write_table(table: ResultTable, out_dir: str | Path) -> None:
    with writing(Path(out_dir) / "per_combination.csv", "the evaluation tables "):
        table.write(out_dir)


def write_prediction_grid(net, bundle: DataBundle, combos, path: Path, samples: int = 4) -> Path:
    """The rgb/depth/ground-truth/prediction-per-combination picture of the first validation samples, marked
    as an evaluation's picture (:data:`PICTURE_KEY`) and written atomically (tmp file + rename)."""
    from PIL import Image, PngImagePlugin

    from mmanet.data import collate_samples
    from mmanet.modality import all_combinations
    from mmanet.pictures import segmentation_grid

    n = min(samples, len(bundle.val))
    inputs, present, target = collate_samples([bundle.val[i] for i in range(n)])
    names = bundle.class_names or [str(k) for k in range(bundle.num_classes)]
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        segmentation_grid(
            net, inputs, present, target, combos or all_combinations(bundle.spec), names, tmp, bundle.ignore_index
        )
        info = PngImagePlugin.PngInfo()
        info.add_text(PICTURE_KEY, PICTURE_MARK)
        with Image.open(tmp) as image:
            image.load()
            image.save(tmp, pnginfo=info)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_student_teacher(meta: dict) -> None:
    """A student's recorded teacher must still hash the same (when its checkpoint is still there)."""
    recorded = meta.get("teacher") or {}
    path = recorded.get("path")
    if path and recorded.get("sha256") and Path(path).is_file():
        check_teacher_hash(recorded["sha256"], model_hash_of_checkpoint(path), "the student's checkpoint", path)


def _check_data_matches(info: TaskInfo, bundle: DataBundle, path: Path) -> None:
    if tuple(info.spec.names) != tuple(bundle.spec.names) or info.num_classes != bundle.num_classes:
        raise CheckpointError(
            f"checkpoint {path} expects modalities {list(info.spec.names)} and {info.num_classes} classes; "
            f"the data has {list(bundle.spec.names)} and {bundle.num_classes}"
        )
    if dict(info.input_shapes) != dict(bundle.input_shapes):
        raise CheckpointError(
            f"checkpoint {path} expects input shapes {info.input_shapes}; the data has {bundle.input_shapes}"
        )


def _evaluate_customized_dir(run_dir: Path, split: str, out_dir, data_root, availability=None) -> ResultTable:
    checkpoints = sorted((run_dir / "sf").glob("*/checkpoints/best.ckpt"))
    if not checkpoints:
        raise CheckpointError(f"{run_dir / 'sf'} holds no trained customized model")
    if availability is not None:  # every combination the availability needs has its model, before any is evaluated
        _, config, info, _ = net_from_checkpoint(checkpoints[0])
        validate_availability(availability, info.spec)
        names = [ckpt.parent.parent.name for ckpt in checkpoints]
        check_tables_cover({str(run_dir): names}, availability, info.spec)
    tables = [evaluate_checkpoint(ckpt, split, None, data_root) for ckpt in checkpoints]
    table = ResultTable.merged(tables)
    if out_dir is not None:
        _write_table(table, out_dir)
        if availability is not None:
            if data_root is not None:
                config = config.model_copy(update={"data": config.data.model_copy(update={"root": data_root})})
            bundle = load_bundle(config, normalization=info.normalization)
            _write_deployment(table, bundle, split, availability, Path(out_dir))
    return table
