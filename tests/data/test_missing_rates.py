"""data.missing_rates (mmanet.data.missing_rates): exact per-class counts, one modality always kept, the
seeded draw, val/test untouched, the lazy wrapper, the config errors and the record in results.json."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from fixtures_face import write_casia_surf
from mmanet.cli import app
from mmanet.config import ConfigError
from mmanet.data import load_dataset
from mmanet.data.base import ArrayMultimodalDataset, complete_part, unaugmented
from mmanet.data.missing_rates import MissingModalities, draw_keep, with_missing_rates
from mmanet.training.factory import load_bundle

RATES = {0: 0.1, 1: 0.3, 2: 0.7, 3: 0.9}  # PASSION's mr1379


def test_each_class_loses_each_modality_exactly_at_its_rate_and_keeps_one(tmp_path):
    strata = torch.arange(300) % 3  # three classes of 100
    present = torch.ones(300, 4, dtype=torch.bool)
    keep = draw_keep(present, strata, RATES, seed=0)
    assert bool(keep.any(dim=1).all())  # nobody is left with nothing
    for c in range(3):
        lost = (~keep[strata == c]).sum(dim=0).tolist()
        assert lost == [10, 30, 70, 90], (c, lost)
    assert torch.equal(keep, draw_keep(present, strata, RATES, seed=0))  # seeded
    assert not torch.equal(keep, draw_keep(present, strata, RATES, seed=1))


def test_modalities_are_removed_independently_of_each_other():
    n = 20_000
    one = torch.zeros(n, dtype=torch.long)
    keep = draw_keep(torch.ones(n, 3, dtype=torch.bool), one, {0: 0.2, 1: 0.3, 2: 0.4}, seed=0)
    lost = ~keep
    assert lost.sum(dim=0).tolist() == [4000, 6000, 8000] and bool(keep.any(dim=1).all())
    # pairs are lost together as often as independent draws would (0.2·0.3, 0.2·0.4, 0.3·0.4), less at most
    # the 0.2·0.3·0.4 = 2.4 % that lost all three and were given one back
    for (a, b), expected in {(0, 1): 0.06, (0, 2): 0.08, (1, 2): 0.12}.items():
        together = int((lost[:, a] & lost[:, b]).sum()) / n
        assert expected - 0.024 - 0.006 < together < expected + 0.006, (a, b, together)
    # two modalities at 0.3 and 0.5: the 15 % that lost both are repaired, so no sample lacks both
    keep = draw_keep(torch.ones(n, 2, dtype=torch.bool), one, {0: 0.3, 1: 0.5}, seed=0)
    assert int((~keep[:, 0] & ~keep[:, 1]).sum()) == 0
    assert (~keep).sum(dim=0).tolist() == [6000, 10000]


def test_data_that_is_already_missing_counts_and_is_never_given_back():
    present = torch.ones(100, 3, dtype=torch.bool)
    present[:40, 0] = False  # the data lacks modality 0 in 40 samples
    keep = draw_keep(present, torch.zeros(100, dtype=torch.long), {1: 0.5, 2: 0.5}, seed=3)
    assert not bool(keep[:40, 0].any())  # never invented
    assert bool(keep.any(dim=1).all())
    assert (~keep[:, 1]).sum() == 50 and (~keep[:, 2]).sum() == 50


def test_rates_that_cannot_keep_one_modality_are_an_error_naming_the_class():
    with pytest.raises(ValueError, match="class 0"):
        draw_keep(torch.ones(10, 2, dtype=torch.bool), torch.zeros(10, dtype=torch.long), {0: 0.6, 1: 0.6}, seed=0)


def test_mfeat_training_split_loses_the_modalities_and_val_and_test_are_unchanged():
    plain = load_dataset("mfeat")
    rates = {"fou": 0.1, "fac": 0.3, "kar": 0.5, "pix": 0.7, "zer": 0.9}
    masked, report = with_missing_rates(plain, rates, seed=0)
    assert isinstance(masked.train, ArrayMultimodalDataset)
    for name, rate in rates.items():
        i = plain.spec.index(name)
        lost = ~masked.train.present[:, i]
        assert abs(float(lost.float().mean()) - rate) < 0.02, name
        assert report.missing[name] == pytest.approx(float(lost.float().mean()), abs=1e-4)
        assert float(masked.train.arrays[name][lost].abs().sum()) == 0.0  # zeros, as genuinely missing data
        kept = ~lost
        assert torch.equal(masked.train.arrays[name][kept], plain.train.arrays[name][kept])
    assert report.missing["mor"] == 0.0
    assert sum(report.combinations.values()) == len(plain.train)
    assert masked.val is plain.val and masked.test is plain.test
    assert torch.equal(masked.train.targets, plain.train.targets)


def test_unknown_modalities_and_impossible_rates_are_config_errors(tiny_config):
    bundle = load_bundle(tiny_config("sf_md"))
    with pytest.raises(ConfigError, match="data.missing_rates names 'rgb', which is not a modality"):
        with_missing_rates(bundle, {"rgb": 0.5}, seed=0)
    every = {m: 0.9 for m in bundle.spec.names}  # 3 × 0.9 > 2: some sample would keep nothing
    with pytest.raises(ConfigError, match="cannot leave one modality in every training sample"):
        with_missing_rates(bundle, every, seed=0)


def test_a_lazy_classification_dataset_is_wrapped(tmp_path):
    write_casia_surf(tmp_path / "C")
    bundle = load_dataset("casia_surf", root=str(tmp_path / "C"), image_size=16)
    masked, report = with_missing_rates(bundle, {"depth": 0.5, "ir": 0.5}, seed=0)
    train = masked.train
    assert isinstance(train, MissingModalities) and len(train) == len(bundle.train)
    assert torch.equal(train.targets, bundle.train.targets)
    for k in range(len(train)):
        inputs, present, target = train[k]
        assert torch.equal(present, train.present[k])
        original = unaugmented(bundle.train)[k][0]
        for name in bundle.spec.names:
            if not present[bundle.spec.index(name)]:
                assert float(inputs[name].abs().sum()) == 0.0
        if not bool(present.all()):
            continue
        plain_inputs = unaugmented(train)[k][0]
        assert all(torch.equal(plain_inputs[m], original[m]) for m in bundle.spec.names)
    complete = complete_part(train)
    assert len(complete) == int(train.present.all(dim=1).sum()) and bool(complete.present.all())
    assert report.missing[bundle.spec.names[0]] == 0.0


def test_a_lazy_segmentation_dataset_keeps_its_label_maps():
    bundle = load_dataset("rooms", num_train=6, num_val=2, num_test=2, height=16, width=24)  # lazy, augmented
    masked, report = with_missing_rates(bundle, {"depth": 0.5}, seed=0)
    assert isinstance(masked.train, MissingModalities) and report.missing == {"rgb": 0.0, "depth": 0.5}
    maps = list(masked.train.label_maps())
    assert len(maps) == 6 and all(torch.equal(a, b) for a, b in zip(maps, bundle.train.label_maps(), strict=True))
    view = masked.train.subset(torch.tensor([4, 1]))
    plain = unaugmented(bundle.train)
    assert [torch.equal(m, plain[i][2]) for m, i in zip(view.label_maps(), (4, 1), strict=True)] == [True] * 2
    masked.train.set_epoch(3)  # reaches the augmenting dataset underneath
    assert [masked.train[i][1].tolist() for i in range(6)] == masked.train.present.tolist()


def test_the_cli_trains_with_missing_rates_and_records_what_it_drew(tmp_path):
    out = tmp_path / "run"
    rates = "{fou: 0.1, fac: 0.3, kar: 0.7, pix: 0.9}"
    args = ["train", "configs/mfeat/sf_md.yaml", "--out", str(out), "--set", f"data.missing_rates={rates}"]
    args += ["--set", "train.max_epochs=1", "--set", "train.progress_bar=false", "--set", "model.channels=8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    drawn = json.loads((out / "results.json").read_text())["missing_rates"]
    assert drawn["requested"] == {"fou": 0.1, "fac": 0.3, "kar": 0.7, "pix": 0.9}
    assert abs(drawn["train_missing"]["pix"] - 0.9) < 0.02 and drawn["train_missing"]["mor"] == 0.0
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["missing_rates"]["kar"] == 0.7
    assert len((out / "per_combination.csv").read_text().splitlines()) == 1 + 63 + 1  # every combination, Average
    bad = CliRunner().invoke(app, [*args[:3], str(tmp_path / "bad"), "--set", "data.missing_rates={rgb: 0.5}"])
    assert bad.exit_code == 2 and "data.missing_rates names 'rgb'" in bad.output, bad.output
    bad = CliRunner().invoke(app, [*args[:3], str(tmp_path / "bad"), "--set", "data.missing_rates={fou: 1.0}"])
    assert bad.exit_code == 2 and "data.missing_rates" in bad.output and "[0, 1)" in bad.output, bad.output
    assert not (tmp_path / "bad").exists()


def test_a_configuration_without_missing_rates_is_saved_as_before(tiny_config):
    dumped = tiny_config("sf_md").model_dump(mode="json")["data"]
    assert "missing_rates" not in dumped  # old run directories still match their configuration
