"""Face anti-spoofing end to end through the CLI: the shipped CASIA-SURF / CeFA configs on tiny
fixtures in the datasets' own layouts (modalities of different image sizes), SF network at width 8."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from fixtures_face import write_casia_surf, write_cefa
from mmanet.cli import app

runner = CliRunner()
TINY = [
    "--set", "data.options.image_size=32",
    "--set", "model.width=8",
    "--set", "data.batch_size=8",
    "--set", "data.num_workers=0",
    "--set", "train.max_epochs=2",
    "--set", "train.progress_bar=false",
    "--set", "teacher.max_epochs=1",
]  # fmt: skip


def read_table(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(("dataset", "method"), [("casia_surf", "sf_md"), ("casia_surf", "mmanet"), ("cefa", "sf_md")])
def test_train_writes_the_acer_table_for_every_combination(dataset, method, tmp_path):
    root = tmp_path / "data"
    (write_casia_surf if dataset == "casia_surf" else write_cefa)(root)
    extra = ["--set", "mar.warmup_epochs=1"] if method == "mmanet" else []
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", f"configs/{dataset}/{method}.yaml", "--out", str(out), "--set", f"data.root={root}", *TINY, *extra],
    )
    assert result.exit_code == 0, result.output
    rows = read_table(out / "per_combination.csv")
    assert [r["combination"] for r in rows] == [
        "rgb", "depth", "ir", "rgb+depth", "rgb+ir", "depth+ir", "rgb+depth+ir", "Average",
    ]  # fmt: skip
    assert {"apcer", "bpcer", "acer"} <= set(rows[0])
    for r in rows:
        assert 0.0 <= float(r["acer"]) <= 100.0
        assert float(r["acer"]) == pytest.approx((float(r["apcer"]) + float(r["bpcer"])) / 2, abs=0.011)
    if method == "mmanet":
        assert (out / "teacher" / "checkpoints" / "best.ckpt").is_file()


def test_missing_image_is_a_named_error(tmp_path):
    root = tmp_path / "data"
    write_casia_surf(root)
    first = (root / "train_list.txt").read_text().split()[1]  # a depth image of the first line
    (root / first).unlink()
    result = runner.invoke(
        app,
        ["train", "configs/casia_surf/sf_md.yaml", "--out", str(tmp_path / "r"), "--set", f"data.root={root}", *TINY],
    )
    assert result.exit_code == 2
    assert first.split("/")[-1] in result.output and "train_list.txt line 1" in result.output
