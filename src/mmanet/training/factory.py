"""Build the training objects a run configuration describes: data bundle, loaders, trainer."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from mmanet.config import ConfigError, RunConfig
from mmanet.data import DataBundle, collate_samples, load_dataset
from mmanet.data.missing_rates import with_missing_rates
from mmanet.distributed import release_process_group_at_exit
from mmanet.models.factory import check_input_size
from mmanet.normalization import Normalization
from mmanet.task import TaskInfo
from mmanet.training.checkpointing import AtomicCheckpointIO, RNGStateCallback
from mmanet.training.sampling import EpochShuffleSampler


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
        class_names=tuple(bundle.class_names),
        normalization=bundle.normalization,
    )


def load_bundle(config: RunConfig, normalization: Mapping[str, Normalization] | None = None) -> DataBundle:
    """The configured dataset; ``normalization`` (a trained model's statistics) replaces refitted ones."""
    data = config.data
    if "normalization" in data.options:
        raise ConfigError("data.options.normalization is not an option (mmanet passes a trained model's statistics)")
    bundle = load_dataset(data.name, root=data.root, seed=data.split_seed, normalization=normalization, **data.options)
    check_config_against_data(config, bundle)
    if data.missing_rates:
        bundle, drawn = with_missing_rates(bundle, data.missing_rates, seed=data.split_seed)
        bundle.missing_rates = drawn.summary
    return bundle


def check_config_against_data(config: RunConfig, bundle: DataBundle) -> None:
    """The keys that name or count the data's modalities fit it (a ConfigError naming the key otherwise)."""
    names = list(bundle.spec.names)
    unknown = [m for m in config.dropout.never_drop if m not in names]
    if unknown:
        raise ConfigError(f"dropout.never_drop names {unknown[0]!r}, which is not a modality of the data {names}")
    if isinstance(config.dropout.p, list) and len(config.dropout.p) != len(names):
        raise ConfigError(
            f"dropout.p lists {len(config.dropout.p)} keep probabilities but the data has {len(names)} modalities "
            f"{names}; give one per modality, in that order, or a single number"
        )
    mines = config.stage == "mmanet" and config.mar.mode == "mined"
    if mines and config.mar.num_strong >= len(names):
        raise ConfigError(
            f"mar.num_strong = {config.mar.num_strong}: with {len(names)} modalities {names} at most "
            f"{len(names) - 1} can be strong, or no weak combination would remain"
            + (" (MAR needs at least two modalities: set mar.mode: off)" if len(names) < 2 else "")
        )


def make_loader(dataset, config: RunConfig, train: bool) -> DataLoader:
    """Training: shuffled by (seed, epoch); otherwise in order. In-memory datasets fetch whole batches."""
    sampler = None
    if train:
        sampler = EpochShuffleSampler(len(dataset), seed=config.seed, on_epoch=getattr(dataset, "set_epoch", None))
    workers = config.data.num_workers
    # a last training batch of ONE sample cannot pass BatchNorm in training mode: drop only that one
    drop_last = train and len(dataset) % config.data.batch_size == 1
    return DataLoader(
        dataset,
        batch_size=config.data.batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=drop_last,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=collate_samples,
    )


def image_size_key(config: RunConfig) -> str:
    """The configuration key that sets the data's image size (named in a too-small-for-the-network error)."""
    keys = [f"data.options.{k}" for k in ("image_size", "height", "width") if k in config.data.options]
    return " / ".join(keys) if keys else f"the image size of the {config.data.name} data (data.options.image_size)"


class InputSizeCheck(L.Callback):
    """Before the first step, images too small for the network are a configuration error naming the size key
    (:func:`~mmanet.models.factory.check_input_size`), not a failure deep inside a layer."""

    def __init__(self, config: RunConfig) -> None:
        self.key = image_size_key(config)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net, info = getattr(pl_module, "net", None), getattr(pl_module, "info", None)
        if net is not None and info is not None:
            check_input_size(net, info, self.key)


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
    callbacks: list[L.Callback] = [InputSizeCheck(config), *(extra_callbacks or []), best, last, RNGStateCallback()]
    if config.train.progress_bar:
        callbacks.append(TQDMProgressBar(leave=False))
    t = config.train
    release_process_group_at_exit()  # the DDP group Lightning creates is destroyed before Python finalizes
    try:
        return _trainer(config, out_dir, max_epochs, callbacks)
    except (MisconfigurationException, TypeError, ValueError) as err:  # Lightning's checks of the hardware keys
        raise ConfigError(
            f"train.accelerator={t.accelerator!r}, train.devices={t.devices!r}, train.num_nodes={t.num_nodes}, "
            f"train.strategy={t.strategy!r}, train.precision={t.precision!r}: Lightning refuses them ({err})"
        ) from None


def _trainer(config: RunConfig, out_dir: Path, max_epochs: int, callbacks: list[L.Callback]) -> L.Trainer:
    t = config.train
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,  # type: ignore[arg-type]  # a string Lightning checks itself
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
