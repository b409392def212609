"""RGB-D segmentation end to end through the CLI: the shipped NYUv2 (prepared and raw .mat) and
Cityscapes configs on tiny fixtures in the datasets' own layouts, ESANet-style network at width 4."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from fixtures_segmentation import write_cityscapes, write_nyuv2_mat, write_nyuv2_prepared
from mmanet.cli import app

runner = CliRunner()
TINY = [
    "--set", "data.options.image_size=[64, 64]",  # /32 must stay >= 2×2 for BatchNorm in training
    "--set", "model.width=4",
    "--set", "data.batch_size=4",
    "--set", "data.num_workers=0",
    "--set", "train.max_epochs=2",
    "--set", "train.progress_bar=false",
    "--set", "teacher.max_epochs=1",
    "--set", "model.pretrained=null",
]  # fmt: skip


@pytest.mark.parametrize(
    ("dataset", "writer", "method"),
    [
        ("nyuv2", write_nyuv2_prepared, "esanet_md"),
        ("nyuv2", write_nyuv2_mat, "mmanet"),
        ("cityscapes", write_cityscapes, "esanet_md"),
    ],
)
def test_train_and_evaluate_write_miou_tables_and_pictures(dataset, writer, method, tmp_path):
    root = tmp_path / "data"
    writer(root)
    extra = ["--set", "mar.warmup_epochs=1", "--set", "mad.pool_size=[3, 4]"] if method == "mmanet" else []
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", f"configs/{dataset}/{method}.yaml", "--out", str(out), "--set", f"data.root={root}", *TINY, *extra],
    )
    assert result.exit_code == 0, result.output
    with (out / "per_combination.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["combination"] for r in rows] == ["rgb", "depth", "rgb+depth", "Average"]
    assert all(0.0 <= float(r["miou"]) <= 100.0 and 0.0 <= float(r["pixel_acc"]) <= 100.0 for r in rows)
    result = runner.invoke(app, ["evaluate", str(out), "--split", "val"])
    assert result.exit_code == 0, result.output
    assert (out / "eval_val" / "predictions.png").stat().st_size > 1000
