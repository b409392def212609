"""Issue 12 cases 5 and 6: a diverged run is an error that keeps the last good checkpoint; Ctrl-C says how to resume."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
from typer.testing import CliRunner

from mmanet.cli import app
from mmanet.deploy.checkpoint import load_checkpoint
from mmanet.training.factory import load_bundle
from mmanet.training.fit import fit_stage
from mmanet.training.guards import TrainingDivergedError, TrainingInterrupted
from mmanet.training.run_dir import RunDirectory
from tests_helpers import write_yaml


class PoisonWeights(L.Callback):
    """Turns the first parameter NaN in ``epoch``: before its first step, or after its last step (``after_last``)."""

    def __init__(self, epoch: int, after_last: bool = False) -> None:
        self.epoch, self.after_last = epoch, after_last

    def _poison(self, module) -> None:
        with torch.no_grad():
            next(module.parameters()).fill_(math.nan)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 0 and not self.after_last:
            self._poison(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and self.after_last and batch_idx == trainer.num_training_batches - 1:
            self._poison(module)


class PressCtrlC(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 2:
            raise KeyboardInterrupt


def finite(path) -> bool:
    state = load_checkpoint(path)["state_dict"]
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize(("after_last", "what"), [(False, "training loss"), (True, "weights")])
def test_a_non_finite_epoch_is_an_error_and_never_saved(tiny_config, tmp_path, after_last, what):
    cfg = tiny_config("sf_md", train__max_epochs=4)
    with pytest.raises(TrainingDivergedError) as err:
        fit_stage(cfg, load_bundle(cfg), tmp_path, extra_callbacks=[PoisonWeights(1, after_last)])
    message = str(err.value)
    assert f"training diverged: the {what} became NaN or infinite in epoch 2" in message
    assert f"Last good checkpoint: {tmp_path / 'checkpoints' / 'last.ckpt'} (after epoch 1)" in message
    assert "Lower train.lr (now 0.01)" in message
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["epoch"] == 0  # epoch 2 was not saved
    assert finite(tmp_path / "checkpoints" / "last.ckpt") and finite(tmp_path / "checkpoints" / "best.ckpt")


def test_a_diverging_learning_rate_exits_2_from_the_cli(tmp_path):
    from conftest import tiny_raw

    cfg = write_yaml(tmp_path / "cfg.yaml", tiny_raw("sf_md", train={"max_epochs": 5, "progress_bar": False}))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", str(cfg), "--out", str(out), "--set", "train.optimizer=sgd", "--set", "train.lr=10"]
    )
    assert result.exit_code == 2, result.output
    assert "training diverged" in result.output and "--overwrite" in result.output
    assert not (out / "results.json").exists() and not (out / "per_combination.csv").exists()
    assert finite(out / "checkpoints" / "last.ckpt")


def test_ctrl_c_inside_fit_is_training_interrupted_naming_the_last_checkpoint(tiny_config, tmp_path):
    cfg = tiny_config("sf_md", train__max_epochs=4)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as err:
        fit_stage(cfg, load_bundle(cfg), tmp_path, extra_callbacks=[PressCtrlC()])
    assert err.value.checkpoint == tmp_path / "checkpoints" / "last.ckpt"
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning's SIG_IGN is undone


def test_ctrl_c_exits_130_says_where_the_checkpoint_is_and_the_run_can_resume(tiny_config, tmp_path):
    from conftest import tiny_raw

    raw = tiny_raw("sf_md", train={"max_epochs": 400, "progress_bar": False})  # stopped long before the end
    raw["data"]["options"]["num_samples"] = 1200
    cfg = write_yaml(tmp_path / "cfg.yaml", raw)
    out = tmp_path / "run"
    mmanet = os.path.join(os.path.dirname(sys.executable), "mmanet")
    # SIGINT as a terminal delivers it: a suite started in the background (`make test &`) runs with SIGINT ignored,
    # and a child that inherits SIG_IGN never gets Python's KeyboardInterrupt handler
    proc = subprocess.Popen(
        [mmanet, "train", str(cfg), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        output = None
        # a SIGINT that lands while Lightning ignores it (set-up, a checkpoint write) is lost: resend it
        for _ in range(20):
            proc.send_signal(signal.SIGINT)
            try:
                output, _ = proc.communicate(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue
        assert output is not None, "the run did not stop on Ctrl-C"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "interrupted (Ctrl-C): training stopped. Last checkpoint:" in output
    assert str(out / "checkpoints" / "last.ckpt") in output and "run the same command again to resume it" in output
    # the same command may take the directory again (lock released, same configuration, a checkpoint to resume)
    from mmanet.config import load_run_config

    with RunDirectory(out, load_run_config(cfg)):
        assert load_checkpoint(out / "checkpoints" / "last.ckpt")["epoch"] >= 0


class _NanAtStep(L.LightningModule):
    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.bad_step = bad_step
        self.steps = 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        loss = self.layer(batch[0]).pow(2).mean()
        return loss * math.nan if batch_idx == self.bad_step else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_step_loss_is_checked_every_n_steps_without_waiting_for_the_epoch_end(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from mmanet.training.guards import NonFiniteGuard

    module = _NanAtStep(bad_step=2)
    data = DataLoader(TensorDataset(torch.randn(40, 2)), batch_size=2)  # 20 steps per epoch
    guard = NonFiniteGuard(tmp_path / "last.ckpt", check_every_n_steps=4)
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[guard],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(TrainingDivergedError, match="in epoch 1, by step 4; .*no checkpoint was written yet"):
        trainer.fit(module, data)
    assert module.steps == 4  # stopped at the first check after the NaN, not at the end of the epoch


def test_a_ctrl_c_that_lightning_swallows_is_still_an_interruption(tmp_path):
    from lightning.pytorch.trainer.states import TrainerStatus

    from mmanet.training.guards import interrupts_as_exception

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(TrainingInterrupted) as err, interrupts_as_exception(trainer, tmp_path / "last.ckpt"):
        trainer.state.status = TrainerStatus.INTERRUPTED  # what fit leaves behind when it returns after Ctrl-C
    assert err.value.checkpoint is None
