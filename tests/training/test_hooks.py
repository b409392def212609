"""A method's epoch-end hooks run as Lightning callbacks, before the epoch's checkpoints are written."""

from __future__ import annotations

import torch

from mmanet.training.factory import load_bundle
from mmanet.training.runner import run


def test_mar_mining_runs_after_each_warm_up_epoch_and_reaches_the_checkpoints(tiny_config, tmp_path):
    config = tiny_config("mmanet", train__max_epochs=3, mar__warmup_epochs=2)
    run(config, tmp_path / "run", bundle=load_bundle(config))
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert sorted(last["mmanet"]["miner"]["memory_bank"]) == [0, 1]  # one record per warm-up epoch
    metrics = (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").read_text()
    assert "mar/kl_" in metrics
