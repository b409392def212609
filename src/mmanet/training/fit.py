"""Train one model of a stage (resuming exactly from its last checkpoint) and the MMANet teacher."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import lightning as L
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mmanet.config import ConfigError, RunConfig, dump_config
from mmanet.data import DataBundle, collate_samples
from mmanet.data.base import MultimodalDataset, complete_part
from mmanet.deploy.checkpoint import TrainedCheckpoint, load_checkpoint, model_hash_of_checkpoint, read_checkpoint
from mmanet.methods import method_entry
from mmanet.modality import Combination
from mmanet.models.encoders.base import has_batch_statistics
from mmanet.models.factory import build_net, check_feature_name
from mmanet.models.network import MultimodalNet
from mmanet.training.factory import make_loader, make_trainer, task_info
from mmanet.training.guards import NonFiniteGuard, interrupts_as_exception
from mmanet.training.hooks import EpochEndCallback
from mmanet.training.module import MultimodalModule
from mmanet.training.run_dir import process_rank
from mmanet.training.teacher import FrozenTeacher, TeacherMismatchError, check_teacher_hash


def load_net_weights(net: MultimodalNet, checkpoint: TrainedCheckpoint) -> MultimodalNet:
    """The network's weights from a training checkpoint (read once: :func:`read_checkpoint`)."""
    net.load_state_dict(checkpoint.net_state)
    return net


def training_split(bundle: DataBundle, config: RunConfig) -> MultimodalDataset:
    """The training samples of this run's method (:meth:`~mmanet.methods.Method.training_split`)."""
    return method_entry(config.method).cls.training_split(bundle, config)


def check_batch_size(config: RunConfig, modules: dict[str, nn.Module]) -> None:
    """BatchNorm in training cannot normalise one sample (a 1×1 map has one value per channel): a batch of
    one is a configuration error, named before any training."""
    if config.data.batch_size >= 2:
        return
    with_bn = [name for name, module in modules.items() if module is not None and has_batch_statistics(module)]
    if with_bn:
        raise ConfigError(
            f"data.batch_size = {config.data.batch_size}: the network has BatchNorm layers ({', '.join(with_bn)}), "
            "which cannot train on a single sample; use data.batch_size: 2 or more"
        )


def check_distillation_samples(config: RunConfig, split: MultimodalDataset) -> None:
    """With ``teacher.distill_samples: complete`` the distillation terms need complete samples to act on."""
    if (config.mad_active or config.kd_active) and config.teacher.distill_samples == "complete":
        complete_part(split, "the distillation terms (teacher.distill_samples: complete)")


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
    net = build_net(config.model, info)
    split = training_split(bundle, config)
    train_loader = make_loader(split, config, train=True)
    val_loader = make_loader(bundle.val, config, train=False)
    last = out_dir / "checkpoints" / "last.ckpt"
    callbacks = [*(extra_callbacks or []), NonFiniteGuard(last, lr=config.train.lr)]
    if teacher is not None:
        check_distillation_samples(config, split)
        if config.mad_active:
            for name in config.mad.features:
                check_feature_name(net, name)
        sample_inputs = next(iter(DataLoader(cast(Dataset, bundle.train), batch_size=2, collate_fn=collate_samples)))[0]
        teacher.check_compatible(net, sample_inputs, config.mad.features)
    weights = None
    if config.train.class_weights == "median_frequency":
        from mmanet.data.class_weights import class_weights

        weights = class_weights(bundle)
    module = MultimodalModule(net, config, info, combination=combination, teacher=teacher, class_weights=weights)
    check_batch_size(config, {"the network": net, **module.method.extra_modules()})
    callbacks += [EpochEndCallback(hook) for hook in module.method.epoch_end_hooks(net, bundle)]
    trainer = make_trainer(
        config, out_dir, module.monitor, module.monitor_mode, max_epochs or config.train.max_epochs, callbacks
    )
    resume = str(last) if last.exists() else None
    if process_rank() == 0:
        print(stage_heading(config, combination, out_dir, last if resume else None, trainer.max_epochs), flush=True)
    with interrupts_as_exception(trainer, last):
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume)
    best = out_dir / "checkpoints" / "best.ckpt"
    if not best.exists():
        best = last
    load_net_weights(net, read_checkpoint(best))
    return net.eval(), best


def stage_heading(
    config: RunConfig, combination: Combination | None, out_dir: Path, resume: Path | None, max_epochs: int | None
) -> str:
    """The line printed before a stage trains: which model (teacher, deployment network, a customized model),
    where, and — when it resumes — from which epoch (the progress bars of the stages look alike)."""
    if config.stage == "teacher":
        what = f"teacher ({'complete samples' if config.teacher.samples == 'complete' else 'every sample'})"
    elif combination is not None:
        what = f"customized model for {combination.name}"
    else:
        what = f"deployment network ({config.method})"
    line = f"── {what} → {out_dir}"
    if resume is not None:
        try:
            epoch = int(load_checkpoint(resume).get("epoch", -1)) + 1
        except (OSError, ValueError, RuntimeError, AttributeError):
            epoch = None
        done = f"{epoch} of {max_epochs} epochs done" if epoch is not None else "its last checkpoint"
        line += f": resuming from {resume} ({done})"
    return line


def teacher_stage_config(config: RunConfig) -> RunConfig:
    """The teacher stage of an MMANet-family configuration: complete modalities, ``teacher.max_epochs``
    (default: the student's) — what :func:`train_teacher` trains, and what ``mmanet tune`` shares."""
    epochs = config.teacher.max_epochs or config.train.max_epochs
    train = config.train.model_copy(update={"max_epochs": epochs})
    return config.model_copy(update={"stage": "teacher", "method": "teacher", "train": train})


def train_teacher(config: RunConfig, bundle: DataBundle, out_dir: Path) -> FrozenTeacher:
    """Load ``teacher.checkpoint`` or train the teacher stage in ``out_dir/teacher``."""
    if config.teacher.checkpoint:
        path = Path(config.teacher.checkpoint)
        checkpoint = read_checkpoint(path)  # read once: the network, its data description and its hash
        net, t_info = checkpoint.network(), checkpoint.info
        info = task_info(bundle)
        if t_info.num_classes != info.num_classes or tuple(t_info.spec.names) != tuple(info.spec.names):
            raise TeacherMismatchError(
                f"teacher checkpoint {path} was trained on modalities {list(t_info.spec.names)} with "
                f"{t_info.num_classes} classes; this data has {list(info.spec.names)} and {info.num_classes}"
            )
        digest = checkpoint.model_hash
        check_teacher_hash(config.teacher.sha256, digest, "the configuration (teacher.sha256)", path)
        return FrozenTeacher(net, path=path, sha256=digest)
    teacher_config = teacher_stage_config(config)
    teacher_dir = out_dir / "teacher"
    teacher_dir.mkdir(parents=True, exist_ok=True)
    if process_rank() == 0:
        dump_config(teacher_config, teacher_dir / "config.yaml")
    net, best = fit_stage(teacher_config, bundle, teacher_dir)
    return FrozenTeacher(net, path=best, sha256=model_hash_of_checkpoint(best))


def check_resumed_teacher(out_dir: Path, teacher: FrozenTeacher) -> None:
    """On resume, the teacher must be the one the interrupted deployment run was trained against."""
    last = out_dir / "checkpoints" / "last.ckpt"
    if last.is_file() and teacher.sha256 is not None:
        recorded = read_checkpoint(last).teacher
        check_teacher_hash(recorded.get("sha256"), teacher.sha256, f"the run's checkpoint {last}", teacher.path)
