"""What a training recipe is: a registered :class:`Method` (docs/design.md §2 ``methods/``).

A method owns everything that makes one recipe differ from another:

* its run plan (:attr:`Method.plan`): one model (``single``), a teacher and then the deployment
  network (``teacher_then_student``), or one model per combination (``per_combination``);
* the mask each training sample is trained under (:meth:`Method.training_mask`);
* the combinations validation and evaluation score (:meth:`Method.eval_combinations`);
* its **named loss terms**, each weighted in exactly one place (:meth:`Method.loss_terms`, which
  returns ``name → weight · value``; the Lightning module sums and logs them);
* the modules it trains besides the network (:meth:`Method.extra_modules`, e.g. MAR's head), its
  epoch-end hooks, its state in checkpoints and what it adds to ``results.json``.

The Lightning module (:mod:`mmanet.training.module`) is a thin adapter: each step it encodes and
fuses the batch under the method's mask and hands the method a :class:`StepContext` — the epoch,
the batch, the network's outputs, the task loss and a logger. Nothing in a method holds a reference
back to the module.

A method is registered once, with the configuration preset its name stands for
(:func:`register_method`); ``config.py`` builds the run configuration from that preset, the runner
follows the plan, the evaluator asks for the combinations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import torch.nn.functional as F
from torch import Tensor, nn

from mmanet.data.base import MultimodalDataset, labelled_part, unlabelled_rows
from mmanet.modality import Combination, ModalitySpec, all_combinations
from mmanet.registry import Registry

if TYPE_CHECKING:
    from mmanet.config import RunConfig
    from mmanet.data import DataBundle
    from mmanet.models.network import MultimodalNet, NetOutput
    from mmanet.task import TaskInfo
    from mmanet.training.teacher import FrozenTeacher

RunPlan = Literal["single", "teacher_then_student", "per_combination"]
#: a method's work at the end of each training epoch: ``hook(epoch, log)`` with ``log(name, value)``
#: (epoch values); the training layer runs it before the epoch's checkpoints are written
EpochEndHook = Callable[[int, Callable[[str, float], None]], None]


@dataclass
class StepContext:
    """What one training step hands the method: the epoch, the batch, the network's outputs, the task
    loss and a logger (``log(name, value)``, epoch means under ``train/``)."""

    epoch: int
    inputs: dict[str, Tensor]
    present: Tensor  # the data's presence mask (B, M)
    mask: Tensor  # the training mask after the method's modality dropout (B, M)
    target: Tensor
    features: list[Tensor]  # the encoded levels (B, M, C_l, *S_l)
    out: NetOutput
    net: MultimodalNet
    task_loss: Callable[[Tensor, Tensor], Tensor]
    log: Callable[[str, Tensor], None]


class TaskLoss:
    """``L_task``: cross-entropy. Classification: the mean over the labelled rows (unlabelled samples have
    label -1); segmentation: per pixel, void ignored, optional class weights, and logits at another scale
    than the labels meet nearest-resized labels (side outputs)."""

    def __init__(self, info: TaskInfo, class_weights: Tensor | None = None) -> None:
        self.segmentation = info.task == "segmentation"
        self.ignore_index = no_void_label(info.ignore_index)
        self.class_weights = class_weights

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.segmentation:
            target = labels_at(logits, target)
            weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
            return F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)
        unlabelled = unlabelled_rows(target)
        if bool(unlabelled.any()):  # unlabelled samples (label -1) only serve the distillation terms
            if bool(unlabelled.all()):
                return logits.sum() * 0.0  # keeps every parameter in the graph (DDP)
            return F.cross_entropy(logits[~unlabelled], target[~unlabelled])
        return F.cross_entropy(logits, target)


def no_void_label(ignore_index: int | None) -> int:
    """The ``ignore_index`` losses take: the data's void label, or -100 (PyTorch's "none") without one."""
    return -100 if ignore_index is None else ignore_index


def labels_at(logits: Tensor, target: Tensor) -> Tensor:
    """Segmentation labels at the resolution of ``logits`` (nearest; a decoder's side outputs are coarser)."""
    if logits.dim() == 4 and tuple(logits.shape[2:]) != tuple(target.shape[1:]):
        return F.interpolate(target[:, None].float(), size=logits.shape[2:], mode="nearest")[:, 0].long()
    return target


class Method:
    """A training recipe (module docstring). Subclasses override what differs; the default is a unified
    model trained with modality dropout on ``L_task`` (+ deep supervision + the fusion's auxiliary
    losses), validated on every combination."""

    #: the stage name checkpoints record (``unified``, ``customized``, ``teacher``, ``mmanet``)
    stage: ClassVar[str] = "unified"
    plan: ClassVar[RunPlan] = "single"
    #: the run-configuration preset the method's name stands for (set by :func:`register_method`)
    preset: ClassVar[dict[str, Any]] = {}
    #: one line for ``mmanet methods`` and the README's table
    description: ClassVar[str] = ""

    def __init__(
        self,
        config: RunConfig,
        info: TaskInfo,
        net: MultimodalNet,
        *,
        combination: Combination | None = None,
        teacher: FrozenTeacher | None = None,
        class_weights: Tensor | None = None,
    ) -> None:
        self.config = config
        self.info = info
        self.combination = combination
        self.teacher = teacher
        self.task_loss = TaskLoss(info, class_weights)

    # ------------------------------------------------------------------ what trains, on what
    @classmethod
    def training_split(cls, bundle: DataBundle, config: RunConfig) -> MultimodalDataset:
        """The training samples: the unlabelled ones (label -1) only where a distillation term uses them
        (``train.unlabelled``); supervised recipes train on the labelled part."""
        return bundle.train if config.uses_unlabelled else labelled_part(bundle.train)

    def training_mask(self, present: Tensor, dropout: Callable[[Tensor], Tensor]) -> Tensor:
        """The modalities each training sample keeps (default: modality dropout over its present ones)."""
        return dropout(present)

    @classmethod
    def eval_combinations(cls, spec: ModalitySpec, combination: Combination | None = None) -> list[Combination]:
        """The combinations validation and evaluation score (default: every combination)."""
        return all_combinations(spec)

    @classmethod
    def feature_keys(cls, config: RunConfig) -> dict[str, list[str]]:
        """The network features the method reads, by the config key that names them (checked at preflight)."""
        return {}

    def extra_modules(self) -> dict[str, nn.Module]:
        """Modules trained besides the network (attribute name → module; checkpointed, never deployed)."""
        return {}

    # ------------------------------------------------------------------ the loss
    def task_term(self, ctx: StepContext) -> Tensor:
        """``L_task`` of the step (default: the task loss of the network's logits)."""
        return ctx.task_loss(ctx.out.logits, ctx.target)

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        """``name → weight · value`` of every term of this step (summed into the training loss; each logged)."""
        terms: dict[str, Tensor] = {"task": self.task_term(ctx)}
        if ctx.out.aux_logits:  # multi-scale supervision of a decoder's side outputs (ESANet)
            sides = (ctx.task_loss(side, ctx.target) for side in ctx.out.aux_logits)
            terms["deep_supervision"] = cast(Tensor, sum(sides))
        for name, value in ctx.net.auxiliary_losses(ctx.out, ctx.target, ctx.task_loss).items():
            terms[name] = self.config.train.aux_weight * value
        return terms

    # ------------------------------------------------------------------ hooks, state, results
    def epoch_end_hooks(self, net: MultimodalNet, bundle: DataBundle) -> list[EpochEndHook]:
        """Work after each training epoch (e.g. MAR's mining pass); plain functions, no Lightning."""
        return []

    def on_train_epoch_start(self, epoch: int, say: Callable[[str], None]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Plain Python state for checkpoints (``checkpoint["mmanet"]``)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    @classmethod
    def results_of(cls, state: Mapping[str, Any]) -> dict[str, Any]:
        """What the method adds to ``results.json``, from its final checkpoint state (default: nothing)."""
        return {}


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: its class and the configuration preset its name stands for."""

    name: str
    cls: type[Method]
    preset: dict[str, Any]
    description: str

    @property
    def stage(self) -> str:
        return self.cls.stage


METHODS: Registry[MethodEntry] = Registry("method")


def register_method(
    name: str, preset: Mapping[str, Any] | None = None, description: str = ""
) -> Callable[[type[Method]], type[Method]]:
    """Register ``cls`` under ``name`` with its configuration preset (applied before the user's YAML,
    the user's values win). One class may be registered under several names with different presets."""

    def decorator(cls: type[Method]) -> type[Method]:
        full = {"stage": cls.stage, **dict(preset or {})}
        METHODS.register(name)(MethodEntry(name, cls, full, description or cls.description))
        return cls

    return decorator


def method_entry(name: str) -> MethodEntry:
    """The registered method ``name`` (an unknown name lists the valid ones)."""
    return METHODS.get(name)


def build_method(config: RunConfig, info: TaskInfo, net: MultimodalNet, **kwargs: Any) -> Method:
    """The method of ``config.method`` for one model."""
    return method_entry(config.method).cls(config, info, net, **kwargs)


__all__ = [
    "METHODS",
    "Method",
    "MethodEntry",
    "EpochEndHook",
    "RunPlan",
    "StepContext",
    "TaskLoss",
    "build_method",
    "labels_at",
    "method_entry",
    "no_void_label",
    "register_method",
]
