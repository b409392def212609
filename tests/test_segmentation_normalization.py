"""Segmentation models record what their datasets apply to RAW inputs (depth: 0 = no reading stays 0)."""

from __future__ import annotations

import numpy as np
import torch

from mmanet.data import load_dataset
from mmanet.modality import ModalitySpec
from mmanet.normalization import InputNormalizer, Normalization


def test_keep_zero_normalisation_round_trips_and_matches_the_dataset_pipeline():
    norm = Normalization.from_arrays(2857.0, 1365.0, keep_zero=True)
    assert Normalization.from_dict(norm.to_dict()) == norm and norm.to_dict()["keep_zero"] is True
    assert "keep_zero" not in Normalization.from_arrays(1.0, 2.0).to_dict()  # older dicts stay as they were
    raw = np.array([0.0, 2857.0, 4222.0], dtype=np.float32)
    np.testing.assert_allclose(norm.apply(raw), [0.0, 0.0, 1.0], atol=1e-6)
    spec = ModalitySpec(("rgb", "depth"))
    bundle = load_dataset("rooms", num_train=2, num_val=1, num_test=2, height=16, width=24, augment=False)
    assert set(bundle.normalization) == {"rgb", "depth"} and bundle.normalization["depth"].keep_zero
    normalizer = InputNormalizer(spec, bundle.normalization)
    depth_raw = torch.tensor([[[[0.0, 2857.0 + 1365.0]]]])
    rgb_raw = torch.full((1, 3, 1, 2), 255.0)
    out = normalizer({"rgb": rgb_raw, "depth": depth_raw}, torch.ones(1, 2, dtype=torch.bool))
    torch.testing.assert_close(out["depth"], torch.tensor([[[[0.0, 1.0]]]]))
    expected_rgb = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(out["rgb"][0, :, 0, 0], expected_rgb)
