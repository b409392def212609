"""Prediction pictures: the column titles name what the prediction saw."""

from __future__ import annotations

from mmanet.modality import ModalitySpec
from mmanet.pictures import prediction_title


def test_prediction_titles():
    spec = ModalitySpec(("rgb", "depth"))
    assert prediction_title(spec.combination("rgb")) == "pred: rgb only"
    assert prediction_title(spec.combination("rgb+depth")) == "pred: rgb + depth"
