"""Fixtures of the training tests."""

from __future__ import annotations

import pytest

from mmanet.training.module import MultimodalModule


@pytest.fixture
def at_epoch(monkeypatch):
    """``at_epoch(e)``: the module reports ``current_epoch == e`` (no Trainer needed)."""

    def set_epoch(epoch: int) -> None:
        monkeypatch.setattr(MultimodalModule, "current_epoch", property(lambda self: epoch))

    return set_epoch
