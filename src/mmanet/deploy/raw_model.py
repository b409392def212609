"""A trained model that takes RAW inputs — what :func:`mmanet.deploy.load_model` returns (issue 24).

The network inside a checkpoint was trained on inputs the dataset had standardised, so feeding it
values as read from the data files gives wrong answers without any error. :class:`RawInputModel`
closes that gap: ``model(inputs, present=None)`` takes raw values — the same contract as the exported
ONNX graph and ``mmanet predict`` — and applies, in order,

1. the input checks of :mod:`mmanet.deploy.inputs` (unknown names, shapes, NaN or infinite values in
   a present entry, a sample with no modality: an :class:`~mmanet.deploy.inputs.InputError`);
2. the presence rules: a modality not given is absent; ``present`` (``(N, M)`` bool, the model's
   modality order) or ``present_<m>`` entries mark given values missing; sequence lengths come as
   ``lengths_<m>``; a customized (SF) model sees only its combination's modalities;
3. the training statistics stored with the model (:class:`~mmanet.normalization.InputNormalizer`);

and returns the logits (``(N, K)``, or ``(N, K, H, W)`` for segmentation) as a tensor. It is an
inference interface (values go through NumPy, so no gradient flows to the inputs); for research on
standardised tensors the network itself is ``model.standardised_net``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmanet.deploy.inputs import (
    InputError,
    ModelInputs,
    RawBatch,
    batch_from_arrays,
    restrict_to_combination,
    to_tensors,
)
from mmanet.models.network import MultimodalNet
from mmanet.normalization import InputNormalizer
from mmanet.npz_format import PRESENT_PREFIX
from mmanet.task import TaskInfo

__all__ = ["RawInputModel"]


class RawInputModel(nn.Module):
    """``model(inputs, present=None) -> logits`` on raw inputs (module docstring)."""

    def __init__(self, standardised_net: MultimodalNet, info: TaskInfo, combination: str | None = None) -> None:
        super().__init__()
        #: the network as trained: it expects STANDARDISED inputs (``normalizer`` applied), zeros where absent
        self.standardised_net = standardised_net
        self.normalizer = InputNormalizer(info.spec, info.normalization)
        self.info = info
        #: a customized (SF) model's combination (None: every combination)
        self.combination = combination
        lengths = tuple(m for m, shape in info.input_shapes.items() if len(shape) == 2)
        self.inputs = ModelInputs(info.spec, dict(info.input_shapes), lengths)
        self.eval()

    def batch(self, inputs: Mapping[str, Any], present: Any = None, source: str = "inputs") -> RawBatch:
        """The validated raw batch of ``inputs`` (tensors or arrays) under ``present``."""
        if not isinstance(inputs, Mapping):
            raise InputError(
                f"{source}: inputs must be a mapping from modality names to arrays, got {type(inputs).__name__}"
            )
        values = {k: _numpy(v) for k, v in inputs.items()}
        if present is not None:
            values.update(self._present_entries(_numpy(present), values, source))
        batch = batch_from_arrays(values, self.inputs, source)
        return restrict_to_combination(batch, self.info.spec, self.combination)

    def forward(self, inputs: Mapping[str, Any], present: Any = None) -> Tensor:
        return self.logits_of(self.batch(inputs, present))

    def logits_of(self, batch: RawBatch) -> Tensor:
        """The logits of a validated raw batch (:meth:`batch`, or :mod:`mmanet.deploy.inputs`' readers)."""
        x, mask = to_tensors(batch, self.inputs)
        device = next(self.standardised_net.parameters()).device
        x = {k: v.to(device) for k, v in x.items()}
        mask = mask.to(device)
        with torch.no_grad():
            return self.standardised_net(self.normalizer(x, mask), mask)

    def _present_entries(self, present: np.ndarray, values: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
        names = self.info.spec.names
        if present.ndim == 1 and present.shape == (len(names),):
            present = present[None]
        if present.ndim != 2 or present.shape[1] != len(names) or present.dtype != np.bool_:
            raise InputError(
                f"{source}: present must be bool of shape (N, {len(names)}) in the model's modality order "
                f"{list(names)}, got {present.dtype} {present.shape}"
            )
        out = {}
        for i, m in enumerate(names):
            if m in values:
                out[PRESENT_PREFIX + m] = present[:, i]
            elif present[:, i].any():
                raise InputError(f"{source}: present marks {m!r} present but no {m!r} input is given")
        return out


def _numpy(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return value
