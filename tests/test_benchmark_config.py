"""The benchmark file: methods resolved onto the shared base, validation messages, labels."""

from __future__ import annotations

import pytest
import yaml

from mmanet.benchmark_config import BenchmarkConfig, load_benchmark_config, method_config
from mmanet.config import ConfigError, MADConfig


def write(tmp_path, text: str, name: str = "bench.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


BENCH = """\
name: mini
base:
  data: {name: mfeat}
  train: {max_epochs: 2}
methods:
  - method: sf_md
  - method: mmanet
    label: MMANet
    set: {mad.alpha: 2.0}
  - method: sp
seeds: 2
ablation: {SP: sp, "+MAD": MMANet}
"""


def test_load_benchmark_config(tmp_path):
    bench = load_benchmark_config(write(tmp_path, BENCH, "bench.yaml"), ["train.lr=0.05"])
    assert isinstance(bench, BenchmarkConfig)
    assert [m.display for m in bench.methods] == ["sf_md", "MMANet", "sp"]
    run = method_config(bench, bench.methods[1], seed=4)
    assert run.name == "MMANet" and run.method == "mmanet" and run.stage == "mmanet"
    assert run.mad.alpha == 2.0
    assert run.train.lr == 0.05 and run.train.max_epochs == 2
    assert run.seed == 4
    assert method_config(bench, bench.methods[0]).mad.alpha == MADConfig().alpha  # `set` is per method
    assert bench.ablation == {"SP": "sp", "+MAD": "MMANet"}
    assert bench.reference_label == "sf_md"  # default: the first sf_md method


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (BENCH.replace("method: sp", "method: spp"), "unknown method 'spp'"),
        (BENCH.replace("label: MMANet", "label: sp"), "labels must be unique"),
        (BENCH.replace('"+MAD": MMANet', '"+MAD": MAD'), "ablation column '\\+MAD' names 'MAD'"),
        (BENCH.replace("seeds: 2", "seeds: 2\nreference: SF-MD"), "reference 'SF-MD'"),
        ("methods: []\n", "methods: List should have at least 1 item"),
        (BENCH.replace("mad.alpha: 2.0", "mad.alpah: 2.0"), "mad.alpah"),
        (BENCH.replace("seeds: 2", "seeds: 0"), "seeds"),
        (BENCH.replace("name: mini", "nmae: mini"), "'nmae'"),
    ],
)
def test_benchmark_config_validation(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_benchmark_config(write(tmp_path, text, "bench.yaml"))


def test_benchmark_empty_base_means_defaults(tmp_path):
    text = BENCH.replace("base:\n  data: {name: mfeat}\n  train: {max_epochs: 2}\n", "base:\n")
    assert load_benchmark_config(write(tmp_path, text, "bench.yaml")).base == {}
    bad = BENCH.replace("base:\n  data: {name: mfeat}\n  train: {max_epochs: 2}\n", "base: [1, 2]\n")
    with pytest.raises(ConfigError, match="'base' must be a mapping"):
        load_benchmark_config(write(tmp_path, bad, "bench.yaml"))


def test_benchmark_unknown_method_key_lists_valid_keys(tmp_path):
    text = BENCH.replace("    set: {mad.alpha: 2.0}", "    sett: {mad.alpha: 2.0}")
    with pytest.raises(ConfigError, match="'set'"):
        load_benchmark_config(write(tmp_path, text, "bench.yaml"))


def test_a_method_cannot_train_on_other_data_than_the_benchmark_shares(tmp_path):
    bench = {
        "name": "b",
        "base": {"data": {"name": "toy"}},
        "methods": [
            {"label": "A", "method": "sf_md"},
            {"label": "B", "method": "sf_md", "set": {"data.batch_size": 8}},  # how a run batches: its own
            {"label": "C", "method": "sf_md", "set": {"data.missing_rates": {"a": 0.5}}},
        ],
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    with pytest.raises(ConfigError, match="benchmark method 'C' sets data.missing_rates to .* but 'A' has None"):
        load_benchmark_config(path)
    bench["methods"] = bench["methods"][:2]
    path.write_text(yaml.safe_dump(bench))
    assert len(load_benchmark_config(path).methods) == 2
