"""Typed run configuration: presets, validation messages, overrides, round trip."""

from __future__ import annotations

import pytest

from mmanet.benchmark_config import load_benchmark_config
from mmanet.config import (
    ConfigError,
    RunConfig,
    deep_merge,
    dump_config,
    load_run_config,
    method_presets,
    parse_overrides,
    resolve_run_config,
)
from mmanet.methods import METHODS
from test_benchmark_config import BENCH


def write(tmp_path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- defaults and presets


def test_defaults_validate():
    config = resolve_run_config({})
    assert isinstance(config, RunConfig)
    assert config.method == "sf_md" and config.stage == "unified"
    assert config.model.fusion.type == "concat"
    assert config == RunConfig()


@pytest.mark.parametrize(
    ("method", "stage", "fusion"),
    [("hemis", "unified", "hemis"), ("sf", "customized", "concat"), ("rfnet", "unified", "rfnet")],
)
def test_method_preset_applies(method, stage, fusion):
    config = resolve_run_config({"method": method})
    assert (config.stage, config.model.fusion.type) == (stage, fusion)


def test_ablation_presets():
    assert resolve_run_config({"method": "sp"}).mad.variant == "sp"
    assert resolve_run_config({"method": "sp"}).mar.mode == "off"
    assert resolve_run_config({"method": "sr"}).mar.mode == "single"
    mmanet = resolve_run_config({"method": "mmanet"})
    assert (mmanet.stage, mmanet.mad.variant, mmanet.mar.mode) == ("mmanet", "paper", "mined")


def test_users_yaml_wins_over_the_preset(tmp_path):
    path = write(tmp_path, "method: hemis\nmodel:\n  fusion: concat\n  channels: 32\n")
    config = load_run_config(path)
    assert config.method == "hemis"
    assert config.stage == "unified"  # from the preset
    assert config.model.fusion.type == "concat"  # the user's value
    assert config.model.channels == 32
    assert config.model.head.options() == {"hidden": 128}  # untouched default


def test_method_override_selects_the_preset(tmp_path):
    path = write(tmp_path, "method: sf_md\n")
    assert load_run_config(path, ["method=lcr"]).model.fusion.type == "lcr"


# ----------------------------------------------------------------------------- errors


def test_unknown_top_level_key_suggests_and_lists():
    with pytest.raises(ConfigError) as err:
        resolve_run_config({"trian": {"lr": 0.1}})
    message = str(err.value)
    assert "'trian'" in message
    assert "did you mean 'train'?" in message
    for key in ("data", "model", "train", "mad", "mar", "seed"):
        assert f"'{key}'" in message


def test_unknown_nested_key_suggests_and_lists():
    with pytest.raises(ConfigError) as err:
        resolve_run_config({"train": {"lrr": 0.1}})
    message = str(err.value)
    assert "'train.lrr'" in message
    assert "did you mean 'lr'?" in message
    assert "'weight_decay'" in message and "'max_epochs'" in message
    assert "'channels'" not in message  # the keys of THIS section, not of another


def test_unknown_key_without_close_match_has_no_suggestion():
    with pytest.raises(ConfigError) as err:
        resolve_run_config({"mar": {"zzzzzz": 1}})
    assert "did you mean" not in str(err.value)
    assert "'warmup_epochs'" in str(err.value)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"train": {"lr": -0.1}}, "train.lr"),
        ({"train": {"optimizer": "adam"}}, "train.optimizer"),
        ({"data": {"batch_size": 0}}, "data.batch_size"),
        ({"mad": {"variant": "teacher"}}, "mad.variant"),
        ({"model": {"dropout": 1.0}}, "model.dropout"),
        ({"stage": "final"}, "stage"),
    ],
)
def test_bad_value_names_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        resolve_run_config(raw, source="my.yaml")
    assert f"{key}:" in str(err.value)
    assert "my.yaml" in str(err.value)


def test_unknown_method_lists_the_methods():
    with pytest.raises(ConfigError) as err:
        resolve_run_config({"method": "mmanett"})
    assert "'mmanett'" in str(err.value)
    assert str(sorted(method_presets())) in str(err.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_run_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="is empty"):  # issue 12: no longer silently the defaults
        load_run_config(write(tmp_path, ""))
    with pytest.raises(ConfigError, match="is a directory"):
        load_run_config(tmp_path)


# ----------------------------------------------------------------------------- overrides


def test_parse_overrides_dotted_keys_and_yaml_values():
    parsed = parse_overrides(
        [
            "train.lr=0.01",
            "train.max_epochs=3",
            "data.options.protocol=low_label",
            "data.options.modalities=[fou, mor]",
            "train.gradient_clip=null",
            "name=a=b",
            "seed=",
        ]
    )
    assert parsed == {
        "train": {"lr": 0.01, "max_epochs": 3, "gradient_clip": None},
        "data": {"options": {"protocol": "low_label", "modalities": ["fou", "mor"]}},
        "name": "a=b",
        "seed": None,
    }
    assert isinstance(parsed["train"]["max_epochs"], int)
    assert isinstance(parsed["train"]["lr"], float)


@pytest.mark.parametrize("bad", ["train.lr", "=1", "train..lr=1", ".lr=1"])
def test_parse_overrides_rejects_malformed_pairs(bad):
    with pytest.raises(ConfigError):
        parse_overrides([bad])


def test_override_into_a_non_section_is_an_error():
    with pytest.raises(ConfigError, match="not a section"):
        parse_overrides(["seed=1", "seed.x=2"])


def test_load_run_config_with_overrides(tmp_path):
    path = write(
        tmp_path, "method: hemis\ntrain:\n  lr: 0.5\n  max_epochs: 7\ndata:\n  options: {protocol: standard}\n"
    )
    overrides = ["train.lr=0.02", "data.options.labels_per_class=5", "dropout.mode=bernoulli", "dropout.p=[0.5, 0.6]"]
    config = load_run_config(path, overrides)
    assert config.train.lr == 0.02
    assert config.train.max_epochs == 7
    assert config.data.options == {"protocol": "standard", "labels_per_class": 5}
    assert config.dropout.p == [0.5, 0.6]
    assert config.model.fusion.type == "hemis"
    with pytest.raises(ConfigError, match="train.lrr"):
        load_run_config(path, ["train.lrr=1"])


def test_deep_merge_does_not_mutate_its_inputs():
    base = {"a": {"b": 1, "c": [1]}}
    update = {"a": {"b": 2}}
    merged = deep_merge(base, update)
    assert merged == {"a": {"b": 2, "c": [1]}}
    merged["a"]["c"].append(2)
    assert base == {"a": {"b": 1, "c": [1]}}


def test_dump_config_round_trips(tmp_path):
    original = resolve_run_config(
        {"method": "mmanet", "train": {"lr": 0.003}, "data": {"options": {"protocol": "low_label"}}}
    )
    original.model.fusion = "hemis"  # differs from the preset: the dumped value must win on reload
    path = tmp_path / "dumped.yaml"
    dump_config(original, path)
    assert load_run_config(path) == original


def test_fused_concat_distillation_is_an_error_unless_allowed():
    raw = {"method": "mmanet", "model": {"fusion": "concat"}, "mad": {"feature": "fused"}}
    with pytest.raises(ConfigError, match=r"mask overlap.*mad.allow_concat_fused: true"):
        resolve_run_config(raw)
    allowed = resolve_run_config({**raw, "mad": {"feature": "fused", "allow_concat_fused": True}})
    assert allowed.mad.feature == "fused"
    # not distilling (MAD off, or another fusion) is fine
    assert resolve_run_config({**raw, "method": "kd"}).mad.variant == "off"
    assert resolve_run_config({**raw, "model": {"fusion": "hemis"}}).model.fusion.type == "hemis"


def test_distillation_presets_and_batch_free_mad_defaults():
    kd = resolve_run_config({"method": "kd"})
    assert kd.stage == "mmanet" and kd.kd.gamma == 1.0 and kd.mad.variant == "off" and kd.mar.mode == "off"
    both = resolve_run_config({"method": "mmanet_kd"})
    assert both.kd.gamma == 1.0 and both.mad.variant == "paper" and both.mar.mode == "mined"
    plain = resolve_run_config({"method": "mmanet"})
    assert plain.kd.gamma == 0.0 and plain.mad.reduction == "mean" and not plain.kd_active
    assert plain.uses_unlabelled and not resolve_run_config({"method": "sf_md"}).uses_unlabelled
    with pytest.raises(ConfigError, match="kd.temperature"):
        resolve_run_config({"method": "kd", "kd": {"temperature": 0}})
    with pytest.raises(ConfigError, match="train.unlabelled"):
        resolve_run_config({"method": "kd", "train": {"unlabelled": "sometimes"}})


def test_a_typo_in_a_component_name_is_a_config_error_naming_the_key():
    for key, value, valid in (
        ("model.fusion", "hemiss", "'hemis'"),
        ("model.head.type", "clasification", "'classification'"),
        ("model.encoder.type", "resnt", "'resnet'"),
    ):
        with pytest.raises(ConfigError, match=f"{key}: unknown .*did you mean {valid}"):
            load_run_config("configs/mfeat/sf_md.yaml", [f"{key}={value}"])


def test_fusion_options_are_a_component_section():
    """``model.fusion`` takes options like ``model.encoder``/``model.head``; the plain name stays valid shorthand."""
    config = resolve_run_config({"method": "sf_md", "model": {"fusion": {"type": "dmrnet", "hard_warmup": 50}}})
    assert config.model.fusion.type == "dmrnet" and config.model.fusion.options() == {"hard_warmup": 50}
    # a section giving options only keeps the method's fusion (the presets are sections)
    assert resolve_run_config({"method": "lcr", "model": {"fusion": {"hidden": 6}}}).model.fusion.as_dict() == {
        "type": "lcr",
        "hidden": 6,
    }
    # overrides and benchmark entries in either form
    assert load_run_config("configs/mfeat/sf_md.yaml", ["model.fusion=shaspec"]).model.fusion.type == "shaspec"
    over = load_run_config("configs/mfeat/sf_md.yaml", ["model.fusion={type: lcr, reduction: 4}"])
    assert over.model.fusion.options() == {"reduction": 4}


def test_fusion_without_options_is_saved_as_its_name(tmp_path):
    """Saved configurations and checkpoints keep ``fusion: concat`` (their run directories and content hashes
    still match); with options the section is saved and read back whole."""
    plain = resolve_run_config({"method": "hemis"})
    assert plain.model_dump(mode="json")["model"]["fusion"] == "hemis"
    assert resolve_run_config(plain.model_dump(mode="json")) == plain
    with_options = resolve_run_config({"method": "dmrnet", "model": {"fusion": {"hard_warmup": 7}}})
    dumped = with_options.model_dump(mode="json")
    assert dumped["model"]["fusion"] == {"type": "dmrnet", "hard_warmup": 7}
    path = tmp_path / "dumped.yaml"
    dump_config(with_options, path)
    assert load_run_config(path) == with_options


def test_an_unknown_fusion_option_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model.fusion.hard_warmp: .*did you mean 'hard_warmup'.*valid: \["):
        resolve_run_config({"method": "dmrnet", "model": {"fusion": {"hard_warmp": 50}}})
    with pytest.raises(ConfigError, match="model.fusion.hidden: fusion 'concat' has no option 'hidden'; valid: none"):
        load_run_config("configs/mfeat/sf_md.yaml", ["model.fusion={type: concat, hidden: 8}"])
    entry = "  - {method: dmrnet, set: {model.fusion: {type: dmrnet, hard_warmup: 5, kl: 1}}}\n"
    text = BENCH.replace("  - method: sp\n", "  - method: sp\n" + entry)
    with pytest.raises(ConfigError, match="model.fusion.kl: fusion 'dmrnet' has no option 'kl'"):
        load_benchmark_config(write(tmp_path, text, "bench.yaml"))


def test_the_stage_follows_from_the_method():
    assert load_run_config("configs/mfeat/sf.yaml").stage == "customized"
    with pytest.raises(ConfigError, match="stage: 'mmanet' does not go with method 'sf_md'"):
        load_run_config("configs/mfeat/sf_md.yaml", ["stage=mmanet"])
    assert sorted(method_presets()) == sorted(METHODS)  # every method is listed once, in the registry


def test_options_for_a_component_named_by_a_plain_string_keep_its_type(tmp_path):
    both = load_run_config("configs/mfeat/sf_md.yaml", ["model.fusion=dmrnet", "model.fusion.hard_warmup=5"])
    assert (both.model.fusion.type, both.model.fusion.options()) == ("dmrnet", {"hard_warmup": 5})
    path = write(tmp_path, "method: sf_md\ndata: {name: mfeat}\nmodel: {fusion: dmrnet, encoders: {fou: mlp}}\n")
    config = load_run_config(path, ["model.fusion.hard_warmup=7", "model.encoders.fou.hidden=32"])
    assert (config.model.fusion.type, config.model.fusion.options()) == ("dmrnet", {"hard_warmup": 7})
    assert config.model.encoders["fou"].as_dict() == {"type": "mlp", "hidden": 32}
    assert deep_merge({"data": {"name": "mfeat"}}, {"data": {"name": "npz"}}) == {"data": {"name": "npz"}}
