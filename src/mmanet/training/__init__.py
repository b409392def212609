"""Training on PyTorch Lightning: the stage module, checkpointing and the run driver."""

from mmanet.training.runner import RunResult, evaluate_checkpoint, net_from_checkpoint, run

__all__ = ["RunResult", "evaluate_checkpoint", "net_from_checkpoint", "run"]
