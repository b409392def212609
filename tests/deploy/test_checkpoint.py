"""Issue 12 cases 10 and 12: checkpoint permissions, safe loads whose errors never advise unsafe ones, and
messages that say what a directory is instead of "best.ckpt does not exist"."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from mmanet.deploy import resolve_checkpoint
from mmanet.deploy.checkpoint import CheckpointError, atomic_torch_save, load_checkpoint


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_respect_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_torch_save({"x": torch.zeros(2)}, tmp_path / "a.ckpt")
        atomic_torch_save({"x": torch.ones(2)}, tmp_path / "a.ckpt")  # replacing keeps the umask's mode too
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.ckpt").stat().st_mode) == mode
    assert not list(tmp_path.glob(".*.tmp"))


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_checkpoint_is_refused_without_running_it_or_advising_weights_only_false(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": _RunsCode(str(marker))}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "evil.ckpt")
    message = str(err.value)
    assert not marker.exists()
    assert "evil.ckpt is corrupt or not a checkpoint" in message and "no code in it was run" in message
    assert "system" in message  # torch's reason is kept …
    assert not any(advice in message for advice in ("weights_only", "trust", "safe_globals"))  # … its advice not
    (tmp_path / "garbage.ckpt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "garbage.ckpt")
    assert "weights_only" not in str(err.value) and "corrupt" in str(err.value)


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (["sf/a/checkpoints/best.ckpt", "sf/a+b/checkpoints/best.ckpt", "config.yaml"], "is a customized (SF) run"),
        (["MMANet/seed_0/config.yaml", "SF-MD/seed_0/config.yaml", "report.md"], "is a benchmark directory"),
        (["config.yaml", "checkpoints/last.ckpt"], "is a run that has not finished training"),
        (["config.yaml"], "is a run directory without a checkpoint"),
        (["notes.txt"], "is not an mmanet run directory"),
    ],
)
def test_a_directory_without_a_model_says_what_it_is_and_what_to_pass(tmp_path, layout, message):
    for name in layout:
        _touch(tmp_path / "d" / name)
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(tmp_path / "d")
    assert message in str(err.value) and "best.ckpt does not exist" not in str(err.value)


def test_resolve_checkpoint_finds_models_and_names_the_alternatives(tmp_path):
    best = _touch(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert resolve_checkpoint(tmp_path / "run") == best
    with pytest.raises(CheckpointError, match="checkpoints folder; pass .*run or one of its .ckpt files"):
        resolve_checkpoint(tmp_path / "run" / "checkpoints")
    _touch(tmp_path / "sf" / "sf" / "a" / "checkpoints" / "best.ckpt")
    with pytest.raises(CheckpointError, match=r"e\.g\. .*sf/sf/a \(trained: a\)"):
        resolve_checkpoint(tmp_path / "sf")
    finished = _touch(tmp_path / "noval" / "checkpoints" / "last.ckpt")  # finished without a validation epoch
    _touch(tmp_path / "noval" / "results.json")
    assert resolve_checkpoint(tmp_path / "noval") == finished
    with pytest.raises(CheckpointError, match="does not exist; pass a run directory"):
        resolve_checkpoint(tmp_path / "nowhere")
