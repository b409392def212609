"""Issue 23 on the demo benchmark: the expected error under an availability, the Shapley values, the files and
figures, recomputed here from table.csv and the data by formulas independent of mmanet.analysis."""

from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from mmanet.cli import app

runner = CliRunner()
AVAILABILITY = {"fou": 0.9, "kar": 0.8, "pix": 0.5, "zer": 0.9, "mor": 0.7, "fac": 0.6}
ARGUMENT = ",".join(f"{m}={p}" for m, p in AVAILABILITY.items())
FAST = [
    "--seeds",
    "2",
    "--set",
    "train.max_epochs=2",
    "--set",
    "mar.warmup_epochs=1",
    "--set",
    "train.progress_bar=false",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "bench"
    result = runner.invoke(
        app, ["benchmark", "configs/mfeat/demo.yaml", "--out", str(out), *FAST, "--availability", ARGUMENT]
    )
    assert result.exit_code == 0, result.output
    assert "Which model to deploy" in result.output and "Deploy " in result.output
    return out, json.loads((out / "deployment.json").read_text())


def read_rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def arrival_probabilities(names: list[str]) -> dict[frozenset, float]:
    """Every non-empty subset's probability given at least one arrives, by enumerating the 2^6 outcomes."""
    out = {}
    for bits in itertools.product([0, 1], repeat=len(names)):
        subset = frozenset(m for m, b in zip(names, bits, strict=True) if b)
        if subset:
            out[subset] = math.prod(
                AVAILABILITY[m] if b else 1 - AVAILABILITY[m] for m, b in zip(names, bits, strict=True)
            )
    total = sum(out.values())
    return {k: v / total for k, v in out.items()}


def test_expected_error_equals_the_sum_over_table_csv(demo):
    out, result = demo
    rows = [r for r in read_rows(out / "table.csv") if r["combination"] != "Average"]
    names = list(AVAILABILITY)
    probs = arrival_probabilities(names)
    assert len(rows) == 63
    for label in ("SF-MD", "MMANet"):
        recomputed = sum(probs[frozenset(r["combination"].split("+"))] * float(r[f"{label} mean"]) for r in rows)
        assert result["methods"][label]["expected"]["mean"] == pytest.approx(recomputed, rel=1e-9)
        per_seed = result["methods"][label]["expected"]["per_seed"]
        assert result["methods"][label]["expected"]["std"] == pytest.approx(float(np.std(per_seed)))
    # the recommendation is a choice: made on validation (each run's per_combination_val.csv), never on test
    assert result["recommendation"]["chosen_on"] == "val"
    for label in ("SF-MD", "MMANet"):
        on_val = []
        for seed in (0, 1):
            val = {
                r["combination"]: float(r["error"])
                for r in read_rows(out / label / f"seed_{seed}" / "per_combination_val.csv")
                if r["combination"] != "Average"
            }
            on_val.append(sum(probs[frozenset(c.split("+"))] * e for c, e in val.items()))
        assert result["methods"][label]["expected_val"]["per_seed"] == pytest.approx(on_val, abs=0.006)
    assert result["recommendation"]["best"] == min(
        ("SF-MD", "MMANet"), key=lambda lb: result["methods"][lb]["expected_val"]["mean"]
    )
    delta = result["methods"]["MMANet"]["delta_vs_reference"]
    diffs = np.subtract(
        result["methods"]["MMANet"]["expected"]["per_seed"], result["methods"]["SF-MD"]["expected"]["per_seed"]
    )
    assert delta["mean"] == pytest.approx(float(diffs.mean())) and delta["seeds"] == 2


def test_shapley_values_add_up_to_full_minus_the_majority_class(demo):
    out, result = demo
    from mmanet.config import resolve_run_config
    from mmanet.training.factory import load_bundle

    bundle = load_bundle(
        resolve_run_config({"method": "sf_md", "data": {"name": "mfeat", "options": {"protocol": "standard"}}})
    )
    train = np.bincount(bundle.train.targets.numpy(), minlength=10)
    test = bundle.test.targets.numpy()
    empty = 100.0 * float(np.mean(test != np.argmax(train)))
    assert result["empty_combination"] == pytest.approx(empty)
    full = {r["combination"]: r for r in read_rows(out / "table.csv")}["fou+fac+kar+pix+zer+mor"]
    for label in ("SF-MD", "MMANet"):
        total = sum(v["mean"] for v in result["methods"][label]["shapley"].values())
        assert total == pytest.approx(float(full[f"{label} mean"]) - empty, abs=1e-9)


def test_files_long_table_and_figures(demo):
    out, result = demo
    long = read_rows(out / "results_long.csv")
    assert list(long[0]) == [
        "method",
        "seed",
        "split",
        "combination",
        *["fou", "fac", "kar", "pix", "zer", "mor"],
        "metric",
        "value",
    ]
    # every (method, seed, split, combination) has its error, ECE and confidence; the 0/1 columns match the name
    keys = {(r["method"], r["seed"], r["split"], r["combination"], r["metric"]) for r in long}
    assert len(keys) == len(long) == 2 * 2 * 2 * 63 * 3
    for r in long[:200]:
        assert {m for m in AVAILABILITY if r[m] == "1"} == set(r["combination"].split("+"))
    run = read_rows(out / "SF-MD" / "seed_1" / "per_combination.csv")
    error = {r["combination"]: float(r["error"]) for r in run}
    for r in long:
        if (r["method"], r["seed"], r["split"], r["metric"]) == ("SF-MD", "1", "test", "error"):
            assert float(r["value"]) == pytest.approx(error[r["combination"]], abs=0.006)  # (the run's csv: 2 decimals)
    table = read_rows(out / "table.csv")
    assert {"SF-MD", "SF-MD mean", "SF-MD std", "MMANet mean"} <= set(table[0])
    for name in ("per_combination", "delta_heatmap", "availability_sweep", "shapley"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    assert list(out.glob("mar_discrepancy_MMANet_seed0.p*")) and (out / "mar_discrepancy_MMANet_seed0.pdf").exists()
    md = (out / "deployment.md").read_text()
    assert "expected error" in md and "Shapley" in md and "**Deploy" in md
    assert "## Which model to deploy" in (out / "report.md").read_text()
    assert set(result["availability"]) == set(AVAILABILITY) and len(result["sweep_levels"]) == 11
    sweep = result["methods"]["SF-MD"]["sweep"]
    assert sweep["all"]["mean"][0] == pytest.approx(
        float({r["combination"]: r for r in table}["fou+fac+kar+pix+zer+mor"]["SF-MD mean"])
    )


def test_calibration_in_the_run_tables(demo):
    out, _ = demo
    run = read_rows(out / "MMANet" / "seed_0" / "per_combination.csv")
    assert {"ece", "confidence", "error"} <= set(run[0])
    assert all(0 <= float(r["ece"]) <= 100 and 0 <= float(r["confidence"]) <= 100 for r in run)


@pytest.mark.parametrize(
    ("availability", "message"),
    [
        ("fou=1.5", "must be a probability in (0, 1]"),
        ("fou=0", "must be a probability in (0, 1]"),
        ("thermal=0.5", "not a modality of this data"),
        ("fou=0.9,fou=0.8", "names 'fou' twice"),
    ],
)
def test_bad_availability_is_refused_before_anything_is_trained(tmp_path, availability, message):
    out = tmp_path / "bench"
    result = runner.invoke(
        app, ["benchmark", "configs/mfeat/demo.yaml", "--out", str(out), *FAST, "--availability", availability]
    )
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not out.exists() and "Traceback" not in result.output


def test_a_method_without_a_needed_combination_is_refused_up_front(tmp_path):
    from tests_helpers import write_yaml

    bench = write_yaml(
        tmp_path / "bench.yaml",
        {
            "name": "customized",
            "seeds": 1,
            "availability": {"pix": 0.5},
            "base": {"data": {"name": "mfeat", "options": {"protocol": "standard"}}, "train": {"max_epochs": 1}},
            "methods": [
                {"label": "SF", "method": "sf", "set": {"customized.combinations": ["fou+fac+kar+pix+zer+mor"]}}
            ],
        },
    )
    out = tmp_path / "bench"
    result = runner.invoke(app, ["benchmark", str(bench), "--out", str(out)])
    assert result.exit_code == 2 and "table of 'SF' has no row for 'fou+fac+kar+zer+mor'" in " ".join(
        result.output.split()
    )
    assert not out.exists()
