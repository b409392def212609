"""A name the configuration gets wrong fails before anything trains (issue 21's error boundary)."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from mmanet.cli import app
from mmanet.config import ConfigError
from mmanet.training.factory import load_bundle
from mmanet.training.preflight import preflight

runner = CliRunner()


def test_a_typo_in_the_distilled_feature_fails_before_the_teacher_trains(tmp_path):
    out = tmp_path / "run"
    start = time.perf_counter()
    result = runner.invoke(
        app, ["train", "configs/mfeat/mmanet.yaml", "--out", str(out), "--set", "mad.feature=embeding"]
    )
    seconds = time.perf_counter() - start
    assert result.exit_code == 2, result.output
    assert "mad.feature" in result.output and "embeding" in result.output and "embedding" in result.output
    assert not out.exists()  # nothing trained, and the directory it had made is gone: a corrected rerun starts clean
    assert seconds < 30  # measured about 2 s: building the network once


def test_preflight_leaves_the_random_state_alone(tiny_config):
    import torch

    config = tiny_config("mmanet")
    bundle = load_bundle(config)
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    preflight(config, bundle)
    assert torch.equal(torch.random.get_rng_state(), before)
    with pytest.raises(ConfigError, match="mad.feature"):
        preflight(tiny_config("mmanet", mad__feature=["embedding", "nope"]), bundle)
