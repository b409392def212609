"""ONNX export of the deployment network and an onnxruntime parity check over every combination.

The exported graph takes one input per modality (named after it, batch axis dynamic), the
``present`` mask as a bool ``(B, M)`` tensor (and ``lengths_<m>`` for sequence modalities that
use lengths), and returns ``logits (B, K)``. The regularization head and the teacher are never
part of it. The caller must not pass an all-missing row (the PyTorch model raises; the graph
cannot check it). Uses the TorchScript-based exporter (``dynamo=False``), which needs no
extra dependency beyond ``onnx``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mmanet.modality import all_combinations
from mmanet.models.network import MultimodalNet


class _ExportWrapper(nn.Module):
    def __init__(self, net: MultimodalNet, input_names: list[str]) -> None:
        super().__init__()
        self.net = net
        self.input_names = input_names

    def forward(self, *tensors: Tensor) -> Tensor:
        *values, present = tensors
        inputs = dict(zip(self.input_names, values, strict=True))
        return self.net(inputs, present)


def example_inputs(net: MultimodalNet, input_shapes: dict[str, tuple[int, ...]], batch: int = 2) -> dict[str, Tensor]:
    return {name: torch.randn(batch, *input_shapes[name]) for name in net.spec.names}


def export_onnx(
    net: MultimodalNet,
    input_shapes: dict[str, tuple[int, ...]],
    path: str | Path,
    lengths_modalities: tuple[str, ...] = (),
    opset: int = 17,
) -> Path:
    """Write ``path`` (an ``.onnx`` file) for ``net`` in eval mode."""
    net = net.eval()
    names = list(net.spec.names) + [f"lengths_{m}" for m in lengths_modalities]
    inputs = example_inputs(net, input_shapes)
    for m in lengths_modalities:
        inputs[f"lengths_{m}"] = torch.full((2,), int(input_shapes[m][0]), dtype=torch.long)
    present = torch.ones(2, len(net.spec), dtype=torch.bool)
    args = tuple(inputs[n] for n in names) + (present,)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _ExportWrapper(net, names).eval(),  # eval: the exporter restores the wrapper's mode afterwards
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[*names, "present"],
            output_names=["logits"],
            dynamic_axes={n: {0: "batch"} for n in [*names, "present", "logits"]},
        )
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))
    return path


def check_parity(
    net: MultimodalNet,
    input_shapes: dict[str, tuple[int, ...]],
    path: str | Path,
    batch: int = 5,
    atol: float = 1e-4,
    seed: int = 0,
) -> float:
    """Largest |PyTorch − onnxruntime| logit difference over every combination; raises above ``atol``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    generator = torch.Generator().manual_seed(seed)
    inputs = {n: torch.randn(batch, *input_shapes[n], generator=generator) for n in net.spec.names}
    for name in wanted:
        if name.startswith("lengths_"):
            inputs[name] = torch.full((batch,), int(input_shapes[name[len("lengths_") :]][0]), dtype=torch.long)
    worst = 0.0
    net = net.eval()
    for combo in all_combinations(net.spec):
        present = combo.mask().expand(batch, -1).contiguous()
        with torch.no_grad():
            expected = net(inputs, present).numpy()
        feeds = {n: v.numpy() for n, v in inputs.items() if n in wanted}
        feeds["present"] = present.numpy()
        got = session.run(["logits"], feeds)[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > atol:
        raise AssertionError(f"ONNX and PyTorch logits differ by {worst:.2e} (> {atol:.0e})")
    return worst
