"""Issue 12's data-loss cases: what --overwrite may delete, locked run directories, teacher hashes."""

from __future__ import annotations

import os

import pytest
import torch

from mmanet.deploy.checkpoint import atomic_torch_save, load_checkpoint, model_hash_of_checkpoint
from mmanet.training import evaluate_checkpoint, run
from mmanet.training.factory import load_bundle
from mmanet.training.fit import train_teacher
from mmanet.training.run_dir import RunDirectory, RunDirectoryError
from mmanet.training.teacher import TeacherChangedError


def test_overwrite_never_deletes_a_directory_that_is_not_a_run(tiny_config, tmp_path):
    data = tmp_path / "my_data"
    data.mkdir()
    (data / "precious.npz").write_bytes(b"user data")
    with pytest.raises(RunDirectoryError, match="not an mmanet run directory"):
        run(tiny_config("sf_md", train__max_epochs=1), data, overwrite=True)
    assert (data / "precious.npz").read_bytes() == b"user data"
    # also not when --out is (or contains) the data root, even if it looks like a run
    (data / "config.yaml").write_text("name: run\n")
    cfg = tiny_config("sf_md", train__max_epochs=1)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(data / "sub")})})
    with pytest.raises(RunDirectoryError, match="contains the data root"), RunDirectory(data, cfg, overwrite=True):
        pass
    assert (data / "precious.npz").exists()
    # an empty directory and an earlier run may be overwritten
    empty = tmp_path / "empty"
    empty.mkdir()
    with RunDirectory(empty, tiny_config("sf_md"), overwrite=True):
        assert (empty / "config.yaml").is_file()


def test_out_that_is_a_file_is_a_clear_error(tiny_config, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(RunDirectoryError, match="existing file"):
        run(tiny_config("sf_md", train__max_epochs=1), target)


def test_a_second_run_on_a_locked_directory_names_the_first_runs_pid(tiny_config, tmp_path):
    with RunDirectory(tmp_path / "r", tiny_config("sf_md", seed=0)):
        second = RunDirectory(tmp_path / "r", tiny_config("sf_md", seed=1))
        with pytest.raises(RunDirectoryError, match=f"in use by another mmanet run \\(pid {os.getpid()}\\)"):
            second.__enter__()
        assert "\nseed: 0\n" in (tmp_path / "r" / "config.yaml").read_text()  # untouched by the second
    with RunDirectory(tmp_path / "r", tiny_config("sf_md", seed=0)):  # released afterwards
        pass


def test_a_run_that_never_wrote_a_checkpoint_can_be_started_again_with_another_config(tiny_config, tmp_path):
    with RunDirectory(tmp_path / "r", tiny_config("sf_md", seed=0)):
        pass  # failed before training: config.yaml written, no checkpoint
    with RunDirectory(tmp_path / "r", tiny_config("sf_md", seed=5)):
        assert "seed: 5" in (tmp_path / "r" / "config.yaml").read_text()


def test_identical_teachers_hash_the_same_in_different_run_directories(tiny_config, tmp_path):
    cfg = tiny_config("mmanet", teacher__max_epochs=1)
    bundle = load_bundle(cfg)
    a = train_teacher(cfg, bundle, tmp_path / "one")
    b = train_teacher(cfg, bundle, tmp_path / "two")
    assert a.path != b.path and a.sha256 == b.sha256
    raw_a, raw_b = (
        p.read_bytes() for p in (tmp_path / "one", tmp_path / "two") for p in [p / "teacher/checkpoints/best.ckpt"]
    )
    assert raw_a != raw_b  # the files differ (paths, timestamps): a file hash would not match


def test_a_changed_teacher_is_refused_on_resume_and_on_evaluation(tiny_config, tmp_path):
    cfg = tiny_config("mmanet", train__max_epochs=2, teacher__max_epochs=1)
    out = tmp_path / "run"
    run(cfg, out)
    teacher_ckpt = out / "teacher" / "checkpoints" / "best.ckpt"
    before = model_hash_of_checkpoint(teacher_ckpt)
    ckpt = load_checkpoint(teacher_ckpt)
    key = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1.0
    atomic_torch_save(ckpt, teacher_ckpt)
    assert model_hash_of_checkpoint(teacher_ckpt) != before
    results = (out / "results.json").read_text()
    with pytest.raises(TeacherChangedError, match="has changed"):
        run(cfg, out)  # the same command again: resume
    assert (out / "results.json").read_text() == results  # nothing rewritten
    with pytest.raises(TeacherChangedError, match="student's checkpoint"):
        evaluate_checkpoint(out)
    # a configured teacher checkpoint is checked against its pinned hash
    pinned = tiny_config("mmanet", teacher__checkpoint=str(teacher_ckpt), teacher__sha256=before, train__max_epochs=1)
    with pytest.raises(TeacherChangedError, match="teacher.sha256"):
        run(pinned, tmp_path / "pinned")
    assert torch.is_tensor(ckpt["state_dict"][key])


def test_a_run_that_fails_before_training_leaves_no_directory_it_created(tiny_config, tmp_path):
    out = tmp_path / "new_run"
    with pytest.raises(RuntimeError, match="preflight"), RunDirectory(out, tiny_config("sf_md")):
        assert (out / "config.yaml").is_file()
        raise RuntimeError("preflight failed")
    assert not out.exists()
    # a directory that was there before stays, and so does anything the failed run had begun to write
    out.mkdir()
    with pytest.raises(RuntimeError), RunDirectory(out, tiny_config("sf_md")):
        raise RuntimeError("preflight failed")
    assert out.is_dir() and (out / "config.yaml").is_file()
    fresh = tmp_path / "logged"
    with pytest.raises(RuntimeError), RunDirectory(fresh, tiny_config("sf_md")):
        (fresh / "logs").mkdir()
        raise RuntimeError("diverged in epoch 0")
    assert (fresh / "logs").is_dir() and (fresh / "config.yaml").is_file()
    # success keeps everything
    with RunDirectory(tmp_path / "ok", tiny_config("sf_md")):
        pass
    assert (tmp_path / "ok" / "config.yaml").is_file()


def test_execution_settings_are_not_part_of_a_runs_identity_and_differences_are_named(tiny_config, tmp_path):
    """Issue 24: threads and the progress bar do not make another run; a real difference is named key by key."""
    from mmanet.training.run_dir import config_differences, same_configuration

    cfg = tiny_config("sf_md")
    saved = cfg.model_dump(mode="json")
    saved["train"].update(num_threads=None, progress_bar=True)  # a run trained with torch's threads and a bar
    assert same_configuration(tmp_path, saved, cfg)
    saved["train"]["lr"] = 0.5
    saved["mad"]["alpha"] = 9.0
    assert not same_configuration(tmp_path, saved, cfg)
    assert config_differences(saved, cfg) == f"mad.alpha (9.0 → {cfg.mad.alpha!r}), train.lr (0.5 → {cfg.train.lr!r})"


def test_a_changed_configuration_is_refused_naming_the_keys(tiny_config, tmp_path):
    from mmanet.training import run
    from mmanet.training.run_dir import RunDirectoryError

    run(tiny_config("sf_md", train__max_epochs=1), tmp_path / "run")
    with pytest.raises(RunDirectoryError, match=r"saved → now: train\.max_epochs \(1 → 2\)"):
        run(tiny_config("sf_md", train__max_epochs=2), tmp_path / "run")
