"""`run_benchmark`: per-method × per-seed runs aggregated into report, tables and plots."""

from __future__ import annotations

import csv

import pytest

from mmanet.benchmark import describe_weak_set, fmt_mean_std, run_benchmark
from mmanet.benchmark_config import BenchmarkConfig, load_benchmark_config
from mmanet.config import ConfigError
from mmanet.modality import ModalitySpec
from tests_helpers import write_yaml


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory):
    from conftest import tiny_raw

    base = tiny_raw("sf_md", train={"max_epochs": 3, "lr": 0.01, "progress_bar": False})
    base.pop("method")
    bench = BenchmarkConfig.model_validate(
        {
            "name": "tiny",
            "seeds": 2,
            "base": base,
            "methods": [
                {"label": "SF-MD", "method": "sf_md"},
                {"label": "+SP", "method": "sp"},
                {"label": "MMANet", "method": "mmanet"},
            ],
            "ablation": {"SF-MD": "SF-MD", "+SP": "+SP", "+MAR": "MMANet"},
        }
    )
    out = tmp_path_factory.mktemp("bench")
    report = run_benchmark(bench, out)
    return bench, out, report


def read(path):
    with path.open() as fh:
        return list(csv.reader(fh))


def test_table_has_one_row_per_combination_and_average(bench_out):
    _, out, report = bench_out
    rows = read(out / "table.csv")
    labels = ["SF-MD", "+SP", "MMANet"]
    assert rows[0] == ["a", "b", "c", "combination", *(f"{lb}{p}" for lb in labels for p in ("", " mean", " std"))]
    assert [r[3] for r in rows[1:]] == ["a", "b", "c", "a+b", "a+c", "b+c", "a+b+c", "Average"]
    assert all("±" in r[col] for r in rows[1:] for col in (4, 7, 10))
    # issue 23: each formatted cell's mean and std as plain numbers beside it
    for r in rows[1:]:
        for col in (4, 7, 10):
            mean, std = (float(x) for x in r[col].split(" ± "))
            assert float(r[col + 1]) == pytest.approx(mean, abs=0.005) and float(r[col + 2]) == pytest.approx(
                std, abs=0.005
            )
    # the Average cell is the mean over seeds of each seed's average over combinations
    seeds = report.runs["SF-MD"]
    assert len(seeds) == 2 and seeds[0].seed == 0 and seeds[1].seed == 1
    expected = fmt_mean_std([r.table.average()["error"] for r in seeds])
    assert rows[-1][4] == expected


def test_ablation_report_and_plots(bench_out):
    _, out, _ = bench_out
    abl = read(out / "ablation.csv")
    assert abl[0] == ["row", "SF-MD", "+SP", "+MAR"]
    assert abl[1][0].startswith("Average") and abl[2][0].startswith("worst-5") and abl[3][0] == "weak-set mean"
    md = (out / "report.md").read_text()
    for needle in ("## Summary", "Δ Average vs SF-MD", "## Ablation", "## Cost", "Mined weak sets"):
        assert needle in md
    for png in ["per_combination.png", "mar_discrepancy_MMANet_seed0.png", "mar_discrepancy_MMANet_seed1.png"]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_reuses_finished_runs(bench_out):
    bench, out, _ = bench_out
    stamp = (out / "SF-MD" / "seed_0" / "results.json").stat().st_mtime_ns
    run_benchmark(bench, out, only=["SF-MD"])
    assert (out / "SF-MD" / "seed_0" / "results.json").stat().st_mtime_ns == stamp


def test_benchmark_config_errors(tmp_path):
    bad = write_yaml(tmp_path / "b.yaml", {"methods": [{"method": "sf_md"}, {"method": "sf_md"}]})
    with pytest.raises(ConfigError, match="unique"):
        load_benchmark_config(bad)
    bad = write_yaml(tmp_path / "c.yaml", {"methods": [{"method": "sf_md"}], "ablation": {"+MAR": "MMANet"}})
    with pytest.raises(ConfigError, match="not a method label"):
        load_benchmark_config(bad)
    bad = write_yaml(tmp_path / "d.yaml", {"methods": [{"method": "sf_md", "set": {"train.lrr": 1}}]})
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        load_benchmark_config(bad)


def test_shipped_configs_validate():
    from pathlib import Path

    import yaml

    from mmanet.config import load_run_config

    repo = Path(__file__).resolve().parents[1]
    files = sorted(repo.glob("configs/*/*.yaml")) + sorted(repo.glob("examples/*/*.yaml"))
    benches = [p for p in files if "methods" in yaml.safe_load(p.read_text())]
    assert benches
    for path in benches:
        assert load_benchmark_config(path).methods
    runs = [p for p in files if p not in benches]
    assert runs
    for path in runs:
        load_run_config(path)


def test_describe_weak_set():
    spec = ModalitySpec(("a", "b", "c"))
    assert describe_weak_set(["b", "c", "b+c"], spec) == "the 3 combinations without a"
    assert describe_weak_set(["a", "b", "c"], spec) == "{a, b, c}"
