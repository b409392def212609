"""Issue 12 (cases 5, 9, 11, 12): absurd, non-finite and mistyped config values are errors, not silent runs."""

from __future__ import annotations

import pytest

from mmanet.config import ConfigError, load_run_config, parse_overrides, resolve_run_config
from tests_helpers import write_yaml


@pytest.fixture
def cfg_file(tmp_path):
    return write_yaml(tmp_path / "cfg.yaml", {"method": "sf_md", "data": {"name": "toy"}})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=.inf", "train.lr is inf; every number must be finite"),
        ("train.lr=.nan", "train.lr is nan"),
        ("train.lr=1e30", "train.lr: Input should be less than or equal to 10"),
        ("train.lr=11", "less than or equal to 10"),
        ("mad.alpha=-.inf", "mad.alpha is -inf"),
        ("data.options.noise=.nan", "data.options.noise is nan"),  # free-form sections too
        ("train.gradient_clip=0", "train.gradient_clip: Input should be greater than 0"),
    ],
)
def test_non_finite_and_absurd_numbers_are_rejected(cfg_file, override, message):
    with pytest.raises(ConfigError) as err:
        load_run_config(cfg_file, [override])
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_epochs=true", "train.max_epochs: must be an integer, not a boolean"),
        ("seed=false", "seed: must be an integer, not a boolean"),
        ("train.lr=true", "train.lr: must be a number, not a boolean"),
        ("dropout.p=[true, 0.5]", "dropout.p: must be a number, not a boolean"),
        ("train.deterministic=1", "train.deterministic: must be true or false"),
        ("train.progress_bar=yes please", "train.progress_bar: must be true or false"),
    ],
)
def test_booleans_and_numbers_are_not_interchangeable(cfg_file, override, message):
    with pytest.raises(ConfigError) as err:
        load_run_config(cfg_file, [override])
    assert message in str(err.value)


def test_numeric_strings_stay_accepted_for_floats(cfg_file):
    # YAML 1.1 reads 1e-3 (no dot) as a string; it has always been accepted as a number
    cfg = load_run_config(cfg_file, ["train.lr=1e-3", "train.max_epochs=7", "train.deterministic=false"])
    assert cfg.train.lr == 0.001 and cfg.train.max_epochs == 7 and cfg.train.deterministic is False
    assert resolve_run_config({"train": {"lr": "5e-4"}}).train.lr == 0.0005


def test_broken_yaml_in_an_override_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'train.lr=\{\[:': the value '\{\[:' is not valid YAML"):
        parse_overrides(["train.lr={[:"])


def test_empty_config_and_directory_are_errors(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "comments.yaml").write_text("# nothing here\n")
    for name in ("empty.yaml", "comments.yaml"):
        with pytest.raises(ConfigError, match="is empty; write at least the method and the data"):
            load_run_config(tmp_path / name)
    with pytest.raises(ConfigError, match="is a directory; pass a YAML file"):
        load_run_config(tmp_path)


def test_an_unquoted_off_names_the_yaml_trap():
    from mmanet.config import ConfigError, resolve_run_config

    with pytest.raises(ConfigError, match=r"mar.mode: got a boolean; YAML reads an unquoted off.*mode: 'off'"):
        resolve_run_config({"method": "mmanet", "mar": {"mode": False}})
