"""End-to-end runs of every stage on the toy dataset: tables, checkpoints, exact resume, errors."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from mmanet.outputs import OutputPathError
from mmanet.training import evaluate_checkpoint, net_from_checkpoint, run
from mmanet.training.checkpointing import CheckpointError, atomic_torch_save, load_checkpoint
from mmanet.training.factory import load_bundle
from mmanet.training.fit import fit_stage
from mmanet.training.run_dir import RunDirectoryError
from step_helpers import CrashAtEpoch


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_unified_run_writes_tables_checkpoints_and_logs(tiny_config, tmp_path):
    options = {"num_samples": 120, "num_classes": 3, "missing_rate": 0.3}
    result = run(tiny_config("sf_md", data__options=options), tmp_path / "run")
    out = tmp_path / "run"
    rows = read_rows(out / "per_combination.csv")
    assert [r["combination"] for r in rows] == ["a", "b", "c", "a+b", "a+c", "b+c", "a+b+c", "Average"]
    assert rows[0]["a"] == "●" and rows[0]["b"] == "○"
    values = [float(r["error"]) for r in rows[:-1]]
    assert float(rows[-1]["error"]) == pytest.approx(sum(values) / len(values), abs=0.01)
    table_lines = [line for line in (out / "per_combination.md").read_text().splitlines() if line.startswith("|")]
    assert table_lines[-1].count("Average") == 1
    # every row says how many samples it scored; the toy data lacks modalities, so the full row differs
    # from the full combination on the complete samples, which the table and results.json also report
    bundle = load_bundle(tiny_config("sf_md", data__options=options))
    present = bundle.test.present
    for r in rows[:-1]:
        members = [bundle.spec.names.index(m) for m in r["combination"].split("+")]
        assert int(r["samples"]) == int(present[:, members].any(dim=1).sum())
    complete = int(present.all(dim=1).sum())
    assert 0 < complete < int(rows[-2]["samples"])
    summary = json.loads((out / "results.json").read_text())
    assert summary["test"]["complete_full"]["samples"] == complete
    assert summary["test"]["samples"]["a+b+c"] == int(rows[-2]["samples"])
    assert f"on the {complete} samples of the {rows[-2]['samples']}" in (out / "per_combination.md").read_text()
    assert (out / "per_combination_val.csv").exists()
    assert (out / "config.yaml").exists() and (out / "results.json").exists()
    assert list(out.glob("logs/version_*/metrics.csv")) and list(out.glob("tb/version_*/events.*"))
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(out / "checkpoints" / name, weights_only=True)  # plain tensors and python types only
        assert ckpt["mmanet"]["stage"] == "unified"
        assert "rng" in ckpt["callbacks"]["RNGStateCallback"]
    assert result.table.metric == "error" and len(result.table.rows) == 7


def test_toy_model_learns(tiny_config, tmp_path):
    cfg = tiny_config("sf_md", train__max_epochs=15)
    result = run(cfg, tmp_path / "run")
    # 3 balanced classes: chance is 66.7 % error; the strong modality alone must be far better
    assert result.table.value("a") < 30.0
    assert result.table.value("a+b+c") < 30.0


def test_training_is_deterministic(tiny_config, tmp_path):
    cfg = tiny_config("sf_md")
    bundle = load_bundle(cfg)
    net1, _ = fit_stage(cfg, bundle, tmp_path / "one")
    net2, _ = fit_stage(cfg, bundle, tmp_path / "two")
    for (k, a), (_, b) in zip(net1.state_dict().items(), net2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("method", ["sf_md", "mmanet"])
def test_resume_after_crash_is_exact(tiny_config, tmp_path, method):
    cfg = tiny_config(method, train__max_epochs=4)
    bundle = load_bundle(cfg)
    teacher = None
    if method == "mmanet":
        from mmanet.training.fit import train_teacher

        teacher = train_teacher(cfg, bundle, tmp_path / "t")
    fit_stage(cfg, bundle, tmp_path / "straight", teacher=teacher)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_stage(cfg, bundle, tmp_path / "resumed", teacher=teacher, extra_callbacks=[CrashAtEpoch(3)])
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["epoch"] == 2
    fit_stage(cfg, bundle, tmp_path / "resumed", teacher=teacher)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert a["epoch"] == b["epoch"] == 3 and a["global_step"] == b["global_step"]
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for idx in sa:
        assert torch.equal(sa[idx]["exp_avg"], sb[idx]["exp_avg"])
    assert a["lr_schedulers"] == b["lr_schedulers"]
    if method == "mmanet":
        assert a["mmanet"]["miner"] == b["mmanet"]["miner"]


def test_rng_state_is_restored_on_resume(tiny_config, tmp_path):
    """Without the RNG callback the resumed run would draw different dropout masks."""
    from mmanet.training.checkpointing import capture_rng_state, restore_rng_state

    torch.manual_seed(3)
    state = capture_rng_state()
    expected = torch.rand(5)
    torch.manual_seed(99)
    restore_rng_state(state)
    assert torch.equal(torch.rand(5), expected)
    saved = tmp_path / "rng.pt"
    torch.save(state, saved)
    restore_rng_state(torch.load(saved, weights_only=True))
    assert torch.equal(torch.rand(5), expected)


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"v": torch.tensor(1)}, path)

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OutputPathError, match="cannot write the checkpoint .*ckpt.pt: disk full; the previous ckpt.pt"):
        atomic_torch_save({"v": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["v"].item() == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


def test_corrupt_and_missing_checkpoints_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an mmanet checkpoint"):
        net_from_checkpoint(foreign)


def test_run_directory_with_other_config_is_refused(tiny_config, tmp_path):
    run(tiny_config("sf_md", train__max_epochs=1), tmp_path / "run")
    with pytest.raises(RunDirectoryError, match="different configuration"):
        run(tiny_config("sf_md", train__max_epochs=2), tmp_path / "run")
    run(tiny_config("sf_md", train__max_epochs=2), tmp_path / "run", overwrite=True)


def test_evaluate_checkpoint_reproduces_the_table(tiny_config, tmp_path):
    result = run(tiny_config("sf_md"), tmp_path / "run")
    table = evaluate_checkpoint(tmp_path / "run", "test", tmp_path / "eval")
    assert [v for _, v in table.rows] == [v for _, v in result.table.rows]
    assert (tmp_path / "eval" / "per_combination.csv").exists()


def test_customized_stage_trains_one_model_per_combination(tiny_config, tmp_path):
    cfg = tiny_config("sf", customized__combinations=["a", "b+c"], train__max_epochs=2)
    result = run(cfg, tmp_path / "sf")
    assert [c.name for c, _ in result.table.rows] == ["a", "b+c"]
    assert sorted(p.name for p in (tmp_path / "sf" / "sf").iterdir()) == ["a", "b+c"]
    net, _, _, meta = net_from_checkpoint(tmp_path / "sf" / "sf" / "a" / "checkpoints" / "best.ckpt")
    assert meta["combination"] == "a"
    table = evaluate_checkpoint(tmp_path / "sf", "test")
    assert [v for _, v in table.rows] == [v for _, v in result.table.rows]


def test_customized_model_ignores_other_modalities(tiny_config, tmp_path):
    cfg = tiny_config("sf", customized__combinations=["b"], train__max_epochs=1)
    run(cfg, tmp_path / "sf")
    net, _, _, _ = net_from_checkpoint(tmp_path / "sf" / "sf" / "b" / "checkpoints" / "best.ckpt")
    x = {m: torch.randn(4, 8) for m in "abc"}
    mask = torch.tensor([[False, True, False]] * 4)
    y = {**x, "a": torch.randn(4, 8) * 100, "c": torch.randn(4, 8) * 100}
    assert torch.allclose(net(x, mask), net(y, mask))


def test_unknown_combination_in_customized_list(tiny_config, tmp_path):
    from mmanet.modality import ModalityError

    with pytest.raises(ModalityError, match="unknown modality 'd'"):
        run(tiny_config("sf", customized__combinations=["a+d"]), tmp_path / "sf")


@pytest.mark.parametrize("fusion", ["hemis", "lcr", "rfnet", "mmformer"])
def test_fusion_baselines_train_end_to_end(tiny_config, tmp_path, fusion):
    result = run(tiny_config(fusion, train__max_epochs=1), tmp_path / fusion)
    assert len(result.table.rows) == 7
    assert all(torch.isfinite(torch.tensor(v["error"])) for _, v in result.table.rows)


def test_genuinely_missing_data_trains_and_evaluates(tiny_config, tmp_path):
    cfg = tiny_config("sf_md", data__options={"num_samples": 120, "num_classes": 3, "missing_rate": 0.3})
    result = run(cfg, tmp_path / "run")
    assert len(result.table.rows) == 7


def test_ddp_ranks_get_distinct_reproducible_random_streams():
    """Each DDP rank must draw its own modality-dropout masks; one process is left untouched."""
    from types import SimpleNamespace

    from mmanet.training.checkpointing import RNGStateCallback

    def stream(world_size: int, rank: int) -> torch.Tensor:
        torch.manual_seed(7)
        RNGStateCallback().on_train_start(SimpleNamespace(world_size=world_size, global_rank=rank), None)
        return torch.rand(4)

    assert not torch.equal(stream(2, 0), stream(2, 1))
    assert torch.equal(stream(2, 1), stream(2, 1))
    torch.manual_seed(7)
    untouched = torch.rand(4)
    assert torch.equal(stream(1, 0), untouched)


def test_void_label_zero_is_kept(tiny_config):
    from mmanet.models.factory import build_net
    from mmanet.training.module import MultimodalModule, TaskInfo

    cfg = tiny_config("sf_md")
    bundle = load_bundle(cfg)
    info = task_info_of(bundle)
    module = MultimodalModule(build_net(cfg, info), cfg, info)
    assert module.ignore_index == -100
    module.info = TaskInfo(info.spec, info.num_classes, info.input_shapes, ignore_index=0)
    assert module.ignore_index == 0


def task_info_of(bundle):
    from mmanet.training.factory import task_info

    return task_info(bundle)


def test_num_threads_is_applied(tiny_config, tmp_path):
    import torch

    run(tiny_config("sf_md", train__max_epochs=1, train__num_threads=1), tmp_path / "run")
    assert torch.get_num_threads() == 1
