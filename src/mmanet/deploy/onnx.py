"""ONNX export of the deployment network and an onnxruntime parity check over every combination.

The exported graph takes one input per modality (named after it, batch axis dynamic), the
``present`` mask as a bool ``(B, M)`` tensor (and ``lengths_<m>`` for sequence modalities that
use lengths), and returns ``logits (B, K)``. With ``normalization`` (the statistics stored with
a trained model) the graph starts with the input normalisation (:class:`InputNormalizer`), so
it takes RAW inputs: exactly what the datasets read before standardising. The regularization
head and the teacher are never part of it. The caller must not pass an all-missing row (the
PyTorch model raises; the graph cannot check it). Uses the TorchScript-based exporter
(``dynamo=False``), which needs no extra dependency beyond ``onnx``.

``metadata`` (string → string) goes into the file's ``metadata_props``; :mod:`mmanet.deploy.export`
stores the model card there, so an ``.onnx`` file alone says what its inputs and classes are.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmanet.errors import MMANetError
from mmanet.modality import all_combinations
from mmanet.models.network import MultimodalNet
from mmanet.normalization import InputNormalizer, Normalization

#: the opsets the TorchScript exporter knows (torch's own bounds when it exposes them)
try:
    from torch.onnx._constants import ONNX_MAX_OPSET as MAX_OPSET
    from torch.onnx._constants import ONNX_MIN_OPSET as MIN_OPSET
except ImportError:  # pragma: no cover - older or newer torch
    MIN_OPSET, MAX_OPSET = 7, 20
DEFAULT_OPSET = 17


class ExportError(MMANetError):
    """The network cannot be exported as asked (opset, unsupported operator, …)."""


def optional(module: str, purpose: str = "ONNX export and prediction") -> Any:
    """Import ``onnx`` / ``onnxruntime`` (the ``export`` extra); an :class:`ExportError` saying how to install
    them when they are missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ExportError(
            f"{purpose} needs the package {module!r}, which cannot be imported ({err}); install it with "
            "pip install 'mmanet[export]' (onnx and onnxruntime)"
        ) from None


class _ExportWrapper(nn.Module):
    def __init__(self, net: MultimodalNet, input_names: list[str], normalizer: InputNormalizer) -> None:
        super().__init__()
        self.net = net
        self.input_names = input_names
        self.normalizer = normalizer

    def forward(self, *tensors: Tensor) -> Tensor:
        *values, present = tensors
        inputs = dict(zip(self.input_names, values, strict=True))
        logits = self.net(self.normalizer(inputs, present), present)
        # a row with no modality present has no answer: NaN logits, never near-uniform ones (the model card says so)
        served = present.any(dim=1).reshape((-1,) + (1,) * (logits.dim() - 1))
        return torch.where(served, logits, torch.full((), float("nan"), dtype=logits.dtype))


def example_inputs(net: MultimodalNet, input_shapes: dict[str, tuple[int, ...]], batch: int = 2) -> dict[str, Tensor]:
    return {name: torch.randn(batch, *input_shapes[name]) for name in net.spec.names}


def check_opset(opset: int) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"--opset {opset!r} is not an ONNX opset this exporter supports ({MIN_OPSET}..{MAX_OPSET}); "
            f"the default {DEFAULT_OPSET} works for every mmanet network"
        )
    return opset


def export_onnx(
    net: MultimodalNet,
    input_shapes: dict[str, tuple[int, ...]],
    path: str | Path,
    lengths_modalities: tuple[str, ...] = (),
    opset: int = DEFAULT_OPSET,
    normalization: Mapping[str, Normalization] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``path`` (an ``.onnx`` file) for ``net`` in eval mode (atomically: tmp file + rename)."""
    onnx = optional("onnx")
    check_opset(opset)
    net = net.eval()
    names = list(net.spec.names) + [f"lengths_{m}" for m in lengths_modalities]
    inputs = example_inputs(net, input_shapes)
    for m in lengths_modalities:
        inputs[f"lengths_{m}"] = torch.full((2,), int(input_shapes[m][0]), dtype=torch.long)
    present = torch.ones(2, len(net.spec), dtype=torch.bool)
    args = tuple(inputs[n] for n in names) + (present,)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    wrapper = _ExportWrapper(net, names, InputNormalizer(net.spec, normalization)).eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    wrapper,  # eval: the exporter restores the wrapper's mode afterwards
                    args,
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[*names, "present"],
                    output_names=["logits"],
                    dynamic_axes={n: {0: "batch"} for n in [*names, "present", "logits"]},
                )
            except OSError:
                raise
            except Exception as err:  # the exporter raises RuntimeError, OnnxExporterError, SymbolicValueError …
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ExportError(
                    f"the network cannot be exported with opset {opset}: {reason}; the default opset "
                    f"{DEFAULT_OPSET} works for every mmanet network"
                ) from None
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)
        if metadata:
            onnx.helper.set_model_props(model, dict(metadata))
            onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ``.onnx`` file (without loading the weights into a session)."""
    onnx = optional("onnx")
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def check_parity(
    net: MultimodalNet,
    input_shapes: dict[str, tuple[int, ...]],
    path: str | Path,
    batch: int = 5,
    atol: float = 1e-4,
    seed: int = 0,
    normalization: Mapping[str, Normalization] | None = None,
) -> float:
    """Largest |PyTorch − onnxruntime| logit difference over every combination; raises above ``atol``.

    Both are fed the same raw inputs; the PyTorch side normalises them with ``normalization``
    (as the graph does when it was exported with it).
    """
    ort = optional("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    generator = torch.Generator().manual_seed(seed)
    normalizer = InputNormalizer(net.spec, normalization)
    inputs = {}
    for n in net.spec.names:
        x = torch.randn(batch, *input_shapes[n], generator=generator)
        if normalization and n in normalization:  # raw inputs on the data's own scale
            mean, std = (torch.from_numpy(a) for a in normalization[n].arrays())
            x = x * std + mean
        inputs[n] = x
    for name in wanted:
        if name.startswith("lengths_"):
            inputs[name] = torch.full((batch,), int(input_shapes[name[len("lengths_") :]][0]), dtype=torch.long)
    worst = 0.0
    net = net.eval()
    for combo in all_combinations(net.spec):
        present = combo.mask().expand(batch, -1).contiguous()
        with torch.no_grad():
            expected = net(normalizer(inputs, present), present).numpy()
        feeds = {n: v.numpy() for n, v in inputs.items() if n in wanted}
        feeds["present"] = present.numpy()
        got = session.run(["logits"], feeds)[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > atol:
        raise AssertionError(f"ONNX and PyTorch logits differ by {worst:.2e} (> {atol:.0e})")
    return worst
