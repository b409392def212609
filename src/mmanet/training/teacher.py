"""The frozen teacher of the deployment stage (docs/design.md §4.3, step 2).

The teacher stays in eval mode (also when the parent's ``.train()`` is called), has no
gradients, is not a registered submodule (so it is neither wrapped by DDP nor saved in the
deployment checkpoint, which stores its path and content hash instead — weights and model
definition, :func:`~mmanet.deploy.checkpoint.content_hash`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmanet.errors import MMANetError
from mmanet.models.network import MultimodalNet, NetOutput


class TeacherMismatchError(MMANetError):
    """The teacher does not fit the deployment network (modalities, classes or feature shape)."""


class TeacherChangedError(MMANetError):
    """The teacher's content hash differs from the one a run or a configuration recorded."""


def check_teacher_hash(expected: str | None, actual: str, where: str, path: str | Path | None) -> None:
    """A clear error when a recorded teacher hash does not match the teacher in use."""
    if expected is not None and expected != actual:
        raise TeacherChangedError(
            f"the teacher at {path} has changed: {where} recorded content hash {expected[:12]}…, the teacher "
            f"now hashes to {actual[:12]}…; restore the original teacher, or start a new run (another --out or "
            "--overwrite) to train against this one"
        )


class FrozenTeacher:
    """Wraps a trained :class:`MultimodalNet`: eval mode, ``requires_grad=False``, inference-mode forward.

    :meth:`forward_all` runs under ``torch.inference_mode()``: its outputs are inference tensors,
    which never need grad but must not be saved for backward nor changed in place outside inference
    mode. MAD only reads them (detached, in no-grad relations; per-pixel maps are pooled first, which
    makes normal tensors), so the student's autograd never saves one.
    """

    def __init__(self, net: MultimodalNet, path: str | Path | None = None, sha256: str | None = None) -> None:
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.path = str(path) if path is not None else None
        self.sha256 = sha256

    def to(self, device: torch.device | str) -> FrozenTeacher:
        self.net.to(device)
        return self

    def train(self, mode: bool = True) -> FrozenTeacher:  # noqa: ARG002 - always eval
        self.net.eval()
        return self

    @torch.inference_mode()
    def forward_all(self, inputs: Mapping[str, Tensor], present: Tensor) -> NetOutput:
        self.net.eval()  # guard against a parent that toggled modes
        return self.net.forward_all(inputs, present)

    def reference(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256}

    def check_compatible(
        self, student: MultimodalNet, sample_inputs: Mapping[str, Tensor], features: str | Sequence[str]
    ) -> None:
        """Clear errors when modalities, classes or a distilled feature's shape differ."""
        if tuple(self.net.spec.names) != tuple(student.spec.names):
            raise TeacherMismatchError(
                f"teacher modalities {list(self.net.spec.names)} differ from the deployment network's "
                f"{list(student.spec.names)}"
            )
        t_classes = getattr(self.net.head, "num_classes", None)
        s_classes = getattr(student.head, "num_classes", None)
        if t_classes != s_classes:
            raise TeacherMismatchError(f"teacher predicts {t_classes} classes, the deployment network {s_classes}")
        device = next(student.parameters()).device
        self.to(device)
        present = torch.ones(next(iter(sample_inputs.values())).shape[0], len(student.spec), dtype=torch.bool)
        present = present.to(device)
        was_training = student.training
        student.eval()
        with torch.no_grad():
            s_out = student.forward_all(sample_inputs, present)
        student.train(was_training)
        t_out = self.forward_all(sample_inputs, present)
        for feature in [features] if isinstance(features, str) else list(features):
            _check_feature(feature, s_out, t_out)


def _check_feature(feature: str, s_out: NetOutput, t_out: NetOutput) -> None:
    if feature not in s_out.named or feature not in t_out.named:
        raise TeacherMismatchError(
            f"feature {feature!r}: the teacher exposes {sorted(t_out.named)}, the deployment network "
            f"{sorted(s_out.named)}"
        )
    s_f, t_f = s_out.feature(feature), t_out.feature(feature)
    # MAD compares B×B relations, so only the batch axis must agree; report differing shapes anyway
    if s_f.shape[0] != t_f.shape[0]:
        raise TeacherMismatchError(f"teacher {feature} feature {tuple(t_f.shape)} vs student {tuple(s_f.shape)}")
    if t_f.shape[1:] != s_f.shape[1:]:
        raise TeacherMismatchError(
            f"teacher {feature} feature shape {tuple(t_f.shape[1:])} differs from the deployment "
            f"network's {tuple(s_f.shape[1:])}; use the same model section for both"
        )
