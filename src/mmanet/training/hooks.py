"""A method's epoch-end hooks (:data:`~mmanet.methods.base.EpochEndHook`) as Lightning callbacks.

Methods are Lightning-free (so that ``mmanet.deploy`` never imports Lightning); the training layer runs
their hooks at the end of every training epoch — registered before the checkpoint callbacks, so that an
epoch's checkpoints hold what its hooks recorded (MAR's memory bank).
"""

from __future__ import annotations

import lightning as L

from mmanet.methods.base import EpochEndHook


class EpochEndCallback(L.Callback):
    """Runs ``hook(epoch, log)`` after each training epoch; ``log`` records epoch values on rank 0's logs."""

    def __init__(self, hook: EpochEndHook) -> None:
        self.hook = hook

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def log(name: str, value: float) -> None:
            pl_module.log(name, value, on_epoch=True, sync_dist=False)

        self.hook(trainer.current_epoch, log)
