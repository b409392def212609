"""Stop a run cleanly: a diverged loss is an error (never a saved success), Ctrl-C says how to resume.

:class:`NonFiniteGuard` watches the training loss without a host sync per step: each step's
``isfinite(loss)`` is OR-ed into a flag that stays on the device, and the flag is read every
``check_every_n_steps`` steps and at the end of every training epoch. The epoch-end check also
covers the weights (an update can turn them NaN in the epoch's last step, whose loss was still
finite). It runs in ``on_train_epoch_end`` before the checkpoint callbacks (Lightning calls
those last), so a non-finite epoch is never saved: ``last.ckpt`` stays the last good epoch.
Under DDP every process checks at the same steps and the decision is OR-ed across them, so
all processes stop together.

Lightning turns Ctrl-C inside ``trainer.fit`` into ``sys.exit(1)`` (and ignores SIGINT from
then on; some versions instead return from ``fit`` with ``trainer.interrupted`` set);
:func:`interrupts_as_exception` turns either back into :class:`TrainingInterrupted`, which
names the last checkpoint, and restores the SIGINT handler.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from mmanet.errors import MMANetError

#: how often (in training steps) the device-side "non-finite loss seen" flag is read by the host
DEFAULT_CHECK_EVERY_N_STEPS = 50


class TrainingDivergedError(MMANetError):
    """The training loss or the weights became NaN/infinite; the run stopped before saving them."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``checkpoint`` is the last checkpoint the run can resume from (or None)."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__(str(checkpoint) if checkpoint is not None else "")
        self.checkpoint = checkpoint


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a Lightning checkpoint was written after (0-based), or None when it cannot be read."""
    from mmanet.deploy.checkpoint import CheckpointError, load_checkpoint

    try:
        epoch = load_checkpoint(path).get("epoch")
    except CheckpointError:
        return None
    return int(epoch) if isinstance(epoch, int) else None


def describe_checkpoint(path: Path | None) -> str:
    """``"<path> (after epoch N)"`` or a sentence saying that no checkpoint was written yet."""
    if path is None or not path.is_file():
        return "no checkpoint was written yet (it stopped in its first epoch)"
    epoch = checkpoint_epoch(path)
    return f"{path} (after epoch {epoch + 1})" if epoch is not None else str(path)


def _loss_of(outputs: Any) -> Tensor | None:
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("loss"), Tensor):
        return outputs["loss"]
    return None


class NonFiniteGuard(L.Callback):
    """Raise :class:`TrainingDivergedError` as soon as a non-finite loss (or weight) is seen (module docstring)."""

    def __init__(
        self,
        last_checkpoint: Path,
        lr: float | None = None,
        check_every_n_steps: int = DEFAULT_CHECK_EVERY_N_STEPS,
    ) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be at least 1, got {check_every_n_steps}")
        self.last_checkpoint = Path(last_checkpoint)
        self.lr = lr
        self.every = check_every_n_steps
        self._seen_bad: Tensor | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seen_bad = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = _loss_of(outputs)
        if loss is None:
            return
        bad = ~torch.isfinite(loss.detach()).all()  # stays on the device: no sync here
        self._seen_bad = bad if self._seen_bad is None else self._seen_bad | bad
        if (batch_idx + 1) % self.every == 0:
            self._check_loss(trainer, f"by step {batch_idx + 1}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_loss(trainer, "")
        flags = [~torch.isfinite(p.detach()).all() for p in pl_module.parameters()]
        if _any_rank(trainer, bool(flags) and bool(torch.stack(flags).any())):
            self._fail(trainer, "the weights became NaN or infinite", "at its end")

    def _check_loss(self, trainer: L.Trainer, when: str) -> None:
        if _any_rank(trainer, self._seen_bad is not None and bool(self._seen_bad)):
            self._fail(trainer, "the training loss became NaN or infinite", when)

    def _fail(self, trainer: L.Trainer, what: str, when: str) -> None:
        lr = f" (now {self.lr:g})" if self.lr is not None else ""
        where = f"epoch {trainer.current_epoch + 1}" + (f", {when}" if when else "")
        raise TrainingDivergedError(
            f"training diverged: {what} in {where}; stopped without saving these weights. "
            f"Last good checkpoint: {describe_checkpoint(self.last_checkpoint)}. Lower train.lr{lr} or set "
            "train.gradient_clip, then start the run again with --overwrite (or another --out)"
        )


def _any_rank(trainer: L.Trainer, decision: bool) -> bool:
    """True when any process says so (every process checks at the same steps, so all stop together under DDP)."""
    return bool(trainer.strategy.reduce_boolean_decision(decision, all=False))


@contextmanager
def interrupts_as_exception(trainer: L.Trainer, last_checkpoint: Path) -> Iterator[None]:
    """Inside: Lightning's ``sys.exit(1)`` after Ctrl-C becomes :class:`TrainingInterrupted` (module docstring)."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    last = Path(last_checkpoint)
    try:
        yield
        if trainer.interrupted:  # Lightning versions that swallow Ctrl-C and return as if fit had finished
            raise TrainingInterrupted(last if last.is_file() else None)
    except SystemExit:
        if trainer.interrupted:
            raise TrainingInterrupted(last if last.is_file() else None) from None
        raise
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)
