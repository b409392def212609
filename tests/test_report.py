"""ResultTable: Markdown/CSV layout (● present, ○ missing per modality), Average row, round trip."""

from __future__ import annotations

import csv
import math

import pytest

from mmanet.modality import ModalitySpec, all_combinations
from mmanet.report import AVERAGE, ResultTable

SPEC = ModalitySpec(("rgb", "depth", "ir"))
ERRORS = {"rgb": 4.25, "depth": 9.5, "ir": 6.0, "rgb+depth": 3.0, "rgb+ir": 2.75, "depth+ir": 5.5, "rgb+depth+ir": 1.25}


def error_table() -> ResultTable:
    return ResultTable(SPEC, [(c, {"error": ERRORS[c.name]}) for c in all_combinations(SPEC)], metric="error")


def test_markdown_columns_marks_and_average_row():
    lines = error_table().to_markdown().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["rgb", "depth", "ir", "combination", "error"]
    assert set(lines[1]) <= {"|", "-"}
    body = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert len(body) == 8
    assert body[0] == ["●", "○", "○", "rgb", "4.25"]
    assert body[4] == ["●", "○", "●", "rgb+ir", "2.75"]
    assert body[6] == ["●", "●", "●", "rgb+depth+ir", "1.25"]
    assert body[-1] == ["", "", "", AVERAGE, f"{sum(ERRORS.values()) / 7:.2f}"]
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_metric_columns_put_the_headline_metric_last():
    rows = [(c, {"acer": 2.0, "apcer": 1.0, "bpcer": 3.0}) for c in all_combinations(SPEC)]
    table = ResultTable(SPEC, rows, metric="acer")
    assert table.header() == ["rgb", "depth", "ir", "combination", "apcer", "bpcer", "acer"]


def test_write_creates_csv_and_markdown_and_read_csv_round_trips(tmp_path):
    table = error_table()
    csv_path, md_path = table.write(tmp_path / "new" / "dir", stem="sf_md")
    assert csv_path == tmp_path / "new" / "dir" / "sf_md.csv" and csv_path.is_file()
    assert md_path == tmp_path / "new" / "dir" / "sf_md.md" and md_path.is_file()
    assert md_path.read_text() == table.to_markdown() + "\n"
    with csv_path.open(newline="") as fh:
        records = list(csv.reader(fh))
    assert records[0] == ["rgb", "depth", "ir", "combination", "error"]
    assert records[1] == ["●", "○", "○", "rgb", "4.25"]
    assert records[-1][3] == AVERAGE
    assert len(records) == 1 + 7 + 1
    back = ResultTable.read_csv(csv_path, SPEC, metric="error")
    assert [c for c, _ in back.rows] == [c for c, _ in table.rows]
    assert [v for _, v in back.rows] == [v for _, v in table.rows]
    assert back.average() == pytest.approx(table.average())


def test_worst_and_best_respect_the_metric_direction():
    table = error_table()
    assert [(c.name, v) for c, v in table.worst(2)] == [("depth", 9.5), ("ir", 6.0)]
    assert [(c.name, v) for c, v in table.best(1)] == [("rgb+depth+ir", 1.25)]
    miou = ResultTable(SPEC, [(c, {"miou": ERRORS[c.name]}) for c in all_combinations(SPEC)], metric="miou")
    assert miou.worst(1)[0][0].name == "rgb+depth+ir"  # higher is better for mIoU
    assert miou.best(1)[0][0].name == "depth"


def test_value_lookup_average_with_nan_and_reordering():
    table = error_table()
    assert table.value("rgb+ir") == 2.75
    assert table.value(SPEC.combination("depth")) == 9.5
    with pytest.raises(KeyError, match="thermal"):
        table.value("thermal")
    rows = [(SPEC.combination("rgb"), {"error": 2.0}), (SPEC.combination("ir"), {"error": math.nan})]
    partial = ResultTable(SPEC, rows)
    assert partial.average()["error"] == 2.0  # NaN rows are left out of the mean
    assert partial.records()[1][-1] == "nan"
    reordered = ResultTable(SPEC, list(reversed(error_table().rows))).ordered_like()
    assert [c.name for c, _ in reordered.rows] == [c.name for c in all_combinations(SPEC)]
