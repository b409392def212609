"""Training on PyTorch Lightning: stages, the shared module, MAR mining, checkpointing and the run driver."""

from mmanet.deploy import net_from_checkpoint
from mmanet.training.evaluation import evaluate_checkpoint
from mmanet.training.runner import RunResult, run

__all__ = ["RunResult", "evaluate_checkpoint", "net_from_checkpoint", "run"]
