"""Shared fixtures: a tiny, fast run configuration on the in-memory toy dataset."""

from __future__ import annotations

import pytest
import torch

from mmanet.config import resolve_run_config

# The suite's networks are tiny: one intra-op thread is as fast as two on 2 cores, and it keeps
# the suite from slowing down tenfold when another process competes for the cores (OpenMP spinning).
torch.set_num_threads(1)


def tiny_raw(method: str = "sf_md", **updates) -> dict:
    raw = {
        "method": method,
        "seed": 0,
        "data": {"name": "toy", "options": {"num_samples": 120, "num_classes": 3}, "batch_size": 16},
        "model": {"channels": 8, "encoder": {"hidden": 16}, "head": {"hidden": 16}, "dropout": 0.1},
        "train": {"max_epochs": 3, "lr": 0.01, "progress_bar": False},
        "mar": {"warmup_epochs": 2},
        "teacher": {"max_epochs": 2},
    }
    for key, value in updates.items():
        node = raw
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return raw


@pytest.fixture
def tiny_config():
    """``tiny_config(method, **updates)`` → a validated RunConfig (use ``a__b=value`` for nested keys)."""

    def make(method: str = "sf_md", **updates):
        return resolve_run_config(tiny_raw(method, **updates))

    return make


@pytest.fixture
def at_epoch(monkeypatch):
    """``at_epoch(e)``: training modules report ``current_epoch == e`` (no Trainer needed)."""
    from mmanet.training.module import MultimodalModule

    def set_epoch(epoch: int) -> None:
        monkeypatch.setattr(MultimodalModule, "current_epoch", property(lambda self: epoch))

    return set_epoch


@pytest.fixture(scope="module")
def rooms_sr():
    """An SR run on rooms (MAR on single modalities from epoch 1; SP-MAD, summed, on the decoder map
    without pooling): (module, batch)."""
    from mmanet.models.factory import build_net
    from mmanet.training.factory import load_bundle, task_info
    from mmanet.training.module import MultimodalModule
    from mmanet.training.teacher import FrozenTeacher

    rooms = {"num_train": 4, "num_val": 2, "num_test": 2, "height": 16, "width": 24, "augment": False}
    esanet = {"encoder": {"type": "resnet"}, "head": {"type": "esanet_decoder"}, "fusion": "se_add"}
    raw = tiny_raw(
        "sr",
        data={"name": "rooms", "options": rooms, "batch_size": 4},
        model={**esanet, "width": 4, "channels": None, "dropout": 0.0},
        mad={"alpha": 1.0, "variant": "sp", "reduction": "sum", "feature": "decoder"},
        mar__warmup_epochs=1,
    )
    cfg = resolve_run_config(raw)
    bundle = load_bundle(cfg)
    info = task_info(bundle)
    torch.manual_seed(0)
    module = MultimodalModule(build_net(cfg, info), cfg, info, teacher=FrozenTeacher(build_net(cfg, info))).train()
    return module, next(iter(torch.utils.data.DataLoader(bundle.train, batch_size=4)))


@pytest.fixture(autouse=True)
def _restore_deterministic_algorithms():
    """``Trainer(deterministic=True)`` turns torch's deterministic mode on for the whole process;
    restore it after each test so that one test's Trainer cannot change what later tests compute
    (e.g. torchmetrics' deterministic bincount fallback drops labels ≥ num_classes)."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
