"""Run a configured training job end to end: data → stage(s) → best checkpoint → per-combination tables.

Run directory layout (``out``)::

    config.yaml                 resolved configuration
    checkpoints/{best,last}.ckpt
    logs/version_N/metrics.csv  tb/version_N/   CSV and TensorBoard logs (one version per attempt)
    teacher/ …                  (mmanet) the teacher stage, same layout
    sf/<combination>/ …         (customized) one sub-run per combination
    per_combination.{csv,md}    the evaluation split (config.evaluate.split)
    per_combination_val.{csv,md}
    results.json                summary (averages, worst/best, time, parameters, weak set)
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, DistributedSampler

from mmanet.config import RunConfig, dump_config, resolve_run_config
from mmanet.data import DataBundle, load_dataset
from mmanet.modality import Combination, all_combinations
from mmanet.models.network import MultimodalNet, build_network
from mmanet.report import ResultTable
from mmanet.training.checkpointing import (
    AtomicCheckpointIO,
    CheckpointError,
    RNGStateCallback,
    load_checkpoint,
    sha256_of,
)
from mmanet.training.module import MultimodalModule, TaskInfo
from mmanet.training.sampling import EpochShuffleSampler
from mmanet.training.teacher import FrozenTeacher

log = logging.getLogger("mmanet")


class RunDirectoryError(ValueError):
    """The output directory holds a run with a different configuration."""


@dataclass
class RunResult:
    out_dir: Path
    config: RunConfig
    tables: dict[str, ResultTable]
    train_seconds: float
    num_parameters: int
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def table(self) -> ResultTable:
        return self.tables[self.config.evaluate.split]


def quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*log_every_n_steps.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")


def task_info(bundle: DataBundle) -> TaskInfo:
    return TaskInfo(
        spec=bundle.spec,
        num_classes=bundle.num_classes,
        input_shapes=bundle.input_shapes,
        task=bundle.task,
        bona_fide_class=bundle.bona_fide_class,
        ignore_index=bundle.ignore_index,
    )


def load_bundle(config: RunConfig) -> DataBundle:
    return load_dataset(config.data.name, root=config.data.root, seed=config.data.split_seed, **config.data.options)


def build_net(config: RunConfig, info: TaskInfo) -> MultimodalNet:
    if info.task != "classification":
        raise ValueError(
            f"training on {info.task} data is not supported yet: the networks have classification heads only "
            "(the data loads, but a segmentation decoder and per-pixel losses are still to be built)"
        )
    m = config.model
    return build_network(
        info.spec,
        info.input_shapes,
        info.num_classes,
        channels=m.channels,
        fusion=m.fusion,
        encoder=m.encoder,
        encoder_options={"hidden": m.encoder_hidden},
        per_modality_encoder=m.encoders,
        head_hidden=m.head_hidden,
        dropout=m.dropout,
    )


def make_loader(dataset, config: RunConfig, train: bool) -> DataLoader:
    sampler = EpochShuffleSampler(len(dataset), seed=config.seed) if train else None
    return DataLoader(
        dataset,
        batch_size=config.data.batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=config.data.num_workers,
        persistent_workers=config.data.num_workers > 0,
    )


def make_trainer(
    config: RunConfig,
    out_dir: Path,
    monitor: str,
    mode: str,
    max_epochs: int,
    extra_callbacks: list[L.Callback] | None = None,
) -> L.Trainer:
    best = ModelCheckpoint(
        dirpath=out_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    # A separate every-epoch checkpoint for resuming: Lightning's save_last only writes when the
    # monitored checkpoint was also written in that step.
    last = ModelCheckpoint(
        dirpath=out_dir / "checkpoints",
        filename="last",
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [best, last, RNGStateCallback(), *(extra_callbacks or [])]
    if config.train.progress_bar:
        callbacks.append(TQDMProgressBar(leave=False))
    t = config.train
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        callbacks=callbacks,
        logger=[
            # a new version_N per attempt: resuming never overwrites earlier logs
            CSVLogger(save_dir=str(out_dir), name="logs"),
            TensorBoardLogger(save_dir=str(out_dir), name="tb", default_hp_metric=False),
        ],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )


def _check_run_dir(out_dir: Path, config: RunConfig, overwrite: bool) -> None:
    saved = out_dir / "config.yaml"
    if saved.exists() and not overwrite:
        import yaml

        previous = yaml.safe_load(saved.read_text())
        if previous != config.model_dump(mode="json"):
            raise RunDirectoryError(
                f"{out_dir} holds a run with a different configuration; choose another --out "
                "or pass --overwrite to start it again"
            )
    if overwrite and out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, saved)


def load_net_weights(net: MultimodalNet, checkpoint: dict[str, Any]) -> MultimodalNet:
    state = {k[len("net.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    return net


def net_from_checkpoint(path: str | Path) -> tuple[MultimodalNet, RunConfig, TaskInfo, dict[str, Any]]:
    """Rebuild the deployment network stored in a checkpoint (config + weights)."""
    ckpt = load_checkpoint(path)
    meta = ckpt.get("mmanet")
    if not isinstance(meta, dict) or "config" not in meta or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not an mmanet checkpoint (no 'mmanet' metadata)")
    config = resolve_run_config(meta["config"], source=f"checkpoint {path}")
    info = TaskInfo.from_dict(meta["info"])
    net = load_net_weights(build_net(config, info), ckpt)
    return net.eval(), config, info, meta


def fit_stage(
    config: RunConfig,
    bundle: DataBundle,
    out_dir: Path,
    *,
    combination: Combination | None = None,
    teacher: FrozenTeacher | None = None,
    max_epochs: int | None = None,
    extra_callbacks: list[L.Callback] | None = None,
) -> tuple[MultimodalNet, Path]:
    """Train one model (resuming from ``out_dir/checkpoints/last.ckpt`` if present); returns the best net."""
    info = task_info(bundle)
    L.seed_everything(config.seed, workers=True, verbose=False)
    net = build_net(config, info)
    train_loader = make_loader(bundle.train, config, train=True)
    val_loader = make_loader(bundle.val, config, train=False)

    def mining_loader() -> DataLoader:
        split = bundle.train if config.mar.mining_split == "train" else bundle.val
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            sampler = DistributedSampler(split, shuffle=False)
        return DataLoader(split, batch_size=config.data.batch_size, sampler=sampler)

    if teacher is not None:
        sample_inputs = next(iter(DataLoader(bundle.train, batch_size=2)))[0]
        teacher.check_compatible(net, sample_inputs, config.mad.feature)
    module = MultimodalModule(
        net, config, info, combination=combination, teacher=teacher, mining_loader_factory=mining_loader
    )
    trainer = make_trainer(
        config, out_dir, module.monitor, module.monitor_mode, max_epochs or config.train.max_epochs, extra_callbacks
    )
    last = out_dir / "checkpoints" / "last.ckpt"
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if last.exists() else None)
    best = out_dir / "checkpoints" / "best.ckpt"
    if not best.exists():
        best = last
    load_net_weights(net, load_checkpoint(best))
    return net.eval(), best


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
        evaluator = info.evaluator(combinations)
        tables[split] = evaluator.evaluate(net, make_loader(bundle.split(split), config, train=False))
    return tables


def customized_combinations(config: RunConfig, bundle: DataBundle) -> list[Combination]:
    if config.customized.combinations == "all":
        return all_combinations(bundle.spec)
    return sorted(bundle.spec.combination(name) for name in config.customized.combinations)


def train_teacher(config: RunConfig, bundle: DataBundle, out_dir: Path) -> FrozenTeacher:
    """Load ``teacher.checkpoint`` or train the teacher stage in ``out_dir/teacher``."""
    if config.teacher.checkpoint:
        path = Path(config.teacher.checkpoint)
        net, t_config, t_info, _ = net_from_checkpoint(path)
        info = task_info(bundle)
        if t_info.num_classes != info.num_classes or tuple(t_info.spec.names) != tuple(info.spec.names):
            from mmanet.training.teacher import TeacherMismatchError

            raise TeacherMismatchError(
                f"teacher checkpoint {path} was trained on modalities {list(t_info.spec.names)} with "
                f"{t_info.num_classes} classes; this data has {list(info.spec.names)} and {info.num_classes}"
            )
        return FrozenTeacher(net, path=path, sha256=sha256_of(path))
    teacher_config = config.model_copy(update={"stage": "teacher", "method": "teacher"})
    teacher_dir = out_dir / "teacher"
    teacher_dir.mkdir(parents=True, exist_ok=True)
    dump_config(teacher_config, teacher_dir / "config.yaml")
    net, best = fit_stage(
        teacher_config, bundle, teacher_dir, max_epochs=config.teacher.max_epochs or config.train.max_epochs
    )
    return FrozenTeacher(net, path=best, sha256=sha256_of(best))


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def run(config: RunConfig, out_dir: str | Path, overwrite: bool = False, bundle: DataBundle | None = None) -> RunResult:
    """Train according to ``config.stage`` and write the per-combination tables into ``out_dir``."""
    quiet_lightning()
    out_dir = Path(out_dir)
    _check_run_dir(out_dir, config, overwrite)
    bundle = bundle if bundle is not None else load_bundle(config)
    start = time.perf_counter()
    extras: dict[str, Any] = {}
    if config.stage == "customized":
        combos = customized_combinations(config, bundle)
        rows: dict[str, list] = {"val": [], "test": []}
        num_parameters = 0
        for k, combo in enumerate(combos, 1):
            net, _ = fit_stage(config, bundle, out_dir / "sf" / combo.name, combination=combo)
            tables = evaluate_tables(net, bundle, config, [combo])
            for split, table in tables.items():
                rows[split] += table.rows
            num_parameters += count_parameters(net)
            print(
                f"SF [{k}/{len(combos)}] {combo.name}: val {tables['val'].metric} "
                f"{tables['val'].average()[tables['val'].metric]:.2f}",
                flush=True,
            )
        metric = tables["val"].metric
        result_tables = {s: ResultTable(bundle.spec, r, metric).ordered_like() for s, r in rows.items()}
        extras["models"] = len(combos)
    else:
        teacher = train_teacher(config, bundle, out_dir) if config.stage == "mmanet" else None
        if teacher is not None:
            extras["teacher"] = teacher.reference()
            full = evaluate_tables(teacher.net, bundle, config, [bundle.spec.full])
            extras["teacher_full"] = {s: t.average()[t.metric] for s, t in full.items()}
        net, best = fit_stage(config, bundle, out_dir, teacher=teacher)
        combos = [bundle.spec.full] if config.stage == "teacher" else None
        result_tables = evaluate_tables(net, bundle, config, combos)
        num_parameters = count_parameters(net)
        meta = load_checkpoint(best.parent / "last.ckpt").get("mmanet", {})  # the final miner state
        if "miner" in meta:
            extras["miner"] = meta["miner"]
    seconds = time.perf_counter() - start
    for split, table in result_tables.items():
        stem = "per_combination" if split == config.evaluate.split else f"per_combination_{split}"
        table.write(out_dir, stem)
    result = RunResult(out_dir, config, result_tables, seconds, num_parameters, extras)
    write_summary(result)
    return result


def write_summary(result: RunResult) -> None:
    summary: dict[str, Any] = {
        "name": result.config.name,
        "method": result.config.method,
        "seed": result.config.seed,
        "train_seconds": round(result.train_seconds, 2),
        "num_parameters": result.num_parameters,
    }
    for split, table in result.tables.items():
        avg = table.average()
        summary[split] = {
            "metric": table.metric,
            "average": avg[table.metric],
            "worst": [(c.name, v) for c, v in table.worst(5)],
            "best": [(c.name, v) for c, v in table.best(1)],
        }
    summary.update({k: v for k, v in result.extras.items() if k != "miner"})
    if "miner" in result.extras:
        summary["miner"] = _jsonable(result.extras["miner"])
    (result.out_dir / "results.json").write_text(json.dumps(summary, indent=2))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def evaluate_checkpoint(
    path: str | Path, split: str = "test", out_dir: str | Path | None = None, data_root: str | None = None
) -> ResultTable:
    """Evaluate a trained model on every combination of a split (or, for an SF run directory, each
    customized model on its own combination)."""
    quiet_lightning()
    path = Path(path)
    if path.is_dir():
        sf_dir = path / "sf"
        if sf_dir.is_dir():
            return _evaluate_customized_dir(path, split, out_dir, data_root)
        path = path / "checkpoints" / "best.ckpt"
    net, config, info, meta = net_from_checkpoint(path)
    if data_root is not None:
        config = config.model_copy(update={"data": config.data.model_copy(update={"root": data_root})})
    bundle = load_bundle(config)
    _check_data_matches(info, bundle, path)
    combos = None
    if meta.get("combination"):
        combos = [bundle.spec.combination(meta["combination"])]
    elif meta.get("stage") == "teacher":
        combos = [bundle.spec.full]
    table = evaluate_tables(net, bundle, config, combos, splits=(split,))[split]
    if out_dir is not None:
        table.write(out_dir)
    return table


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


def _evaluate_customized_dir(run_dir: Path, split: str, out_dir, data_root) -> ResultTable:
    rows = []
    spec = None
    metric = "error"
    for ckpt in sorted((run_dir / "sf").glob("*/checkpoints/best.ckpt")):
        table = evaluate_checkpoint(ckpt, split, None, data_root)
        rows += table.rows
        spec, metric = table.spec, table.metric
    if spec is None:
        raise CheckpointError(f"{run_dir / 'sf'} holds no trained customized model")
    table = ResultTable(spec, rows, metric).ordered_like()
    if out_dir is not None:
        table.write(out_dir)
    return table
