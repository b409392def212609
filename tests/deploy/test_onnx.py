"""ONNX export: every fusion exports, and onnxruntime matches PyTorch on every combination."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmanet.data import load_dataset
from mmanet.deploy.onnx import check_parity, export_onnx
from mmanet.modality import ModalitySpec
from mmanet.models import build_network
from mmanet.training.factory import task_info

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("fusion", ["concat", "hemis", "lcr", "rfnet", "mmformer"])
def test_export_matches_pytorch_on_every_combination(tmp_path, fusion):
    info = task_info(load_dataset("toy", num_samples=60, num_classes=3))
    net = build_network(info.spec, info.input_shapes, info.num_classes, channels=8, fusion=fusion)
    path = export_onnx(net, info.input_shapes, tmp_path / f"{fusion}.onnx")
    assert check_parity(net, info.input_shapes, path) < 1e-4


def test_export_with_sequence_lengths_and_dynamic_batch(tmp_path):
    import onnxruntime as ort

    spec = ModalitySpec(("seq", "vec"))
    shapes = {"seq": (6, 3), "vec": (4,)}
    net = build_network(spec, shapes, 3, channels=8).eval()
    path = export_onnx(net, shapes, tmp_path / "m.onnx", lengths_modalities=("seq",))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = {"seq": torch.randn(7, 6, 3), "vec": torch.randn(7, 4), "lengths_seq": torch.tensor([1, 2, 3, 4, 5, 6, 6])}
    present = torch.tensor([[True, False], [False, True], [True, True]] * 2 + [[True, True]])
    with torch.no_grad():
        expected = net(x, present).numpy()
    got = session.run(["logits"], {**{k: v.numpy() for k, v in x.items()}, "present": present.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_parity_check_detects_a_different_model(tmp_path):
    info = task_info(load_dataset("toy", num_samples=60, num_classes=3))
    net = build_network(info.spec, info.input_shapes, info.num_classes, channels=8)
    path = export_onnx(net, info.input_shapes, tmp_path / "m.onnx")
    other = build_network(info.spec, info.input_shapes, info.num_classes, channels=8)
    with pytest.raises(AssertionError, match="differ"):
        check_parity(other, info.input_shapes, path)
