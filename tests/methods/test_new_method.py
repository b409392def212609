"""Adding a method is one module: a registered class with its preset (issue 21). This test is that module
for a toy recipe — SF-MD plus a confidence penalty on the logits (an entropy bonus, weighted in one place)
— and trains it through the same runner as every shipped method."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import Tensor

from mmanet.config import resolve_run_config
from mmanet.methods import METHODS, StepContext, register_method
from mmanet.methods.supervised import Unified
from mmanet.training.runner import run

NAME = "toy_confidence_penalty"


# --- the whole new method (what would be src/mmanet/methods/toy_confidence_penalty.py) ------------------
@register_method(NAME, {"model": {"fusion": "concat"}}, "SF-MD + 0.1 · the negative entropy of the predictions")
class ConfidencePenalty(Unified):
    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        terms = super().loss_terms(ctx)
        probs = torch.softmax(ctx.out.logits, dim=1)
        terms["confidence"] = 0.1 * (probs * torch.log(probs + 1e-8)).sum(dim=1).mean()
        return terms
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _registered():
    yield
    METHODS._items.pop(NAME, None)  # the registry is process-wide: leave it as it was


def test_a_new_method_trains_through_the_runner_with_its_term_logged(tiny_config, tmp_path):
    from conftest import tiny_raw

    config = resolve_run_config(tiny_raw(NAME))
    assert (config.stage, config.model.fusion.type) == ("unified", "concat")
    result = run(config, tmp_path / "run")
    assert len(result.table.rows) == 7  # every combination, as a unified method
    with next((tmp_path / "run" / "logs").glob("version_*/metrics.csv")).open() as fh:
        logged = [row for row in csv.DictReader(fh) if row.get("train/confidence")]
    assert logged and all(float(row["train/confidence"]) < 0 for row in logged)
